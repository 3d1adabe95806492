//! A cold subscriber over a long, lossy link always starts on a whole keyframe.
//!
//! The upstream carries a stream with big keyframes (40 packets) every 500 ms
//! and a full GOP cache. Subscribers connect through a 75 ms one-way, 1 %-loss
//! path (each on its own new connection, like a cold regional origin), at
//! different points of the GOP. The first group they get is the upstream's
//! GOP-cache replay, which the next live keyframe's group (higher priority)
//! overtakes; before the head gate, the receiver gave up on the first group
//! while its keyframe was half there and passed that half on: a player that
//! starts on it never sees a whole first frame. Every subscriber must get a
//! whole first keyframe (every packet of it, in order, nothing of another video
//! frame in between) within a bound.

#![allow(clippy::unwrap_used)] // test: failing fast is the point

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::lossy::LossyPath;
use common::*;
use strata_media::MediaPacket;
use strata_media::hub::Source;
use strata_relay::certs::DevCa;
use strata_relay::{RelayConfig, RelayTls, Subscription, SubscriptionEvent};
use tokio::time::{Instant, timeout};

const KEYFRAME_PACKETS: u16 = 40;
const DELTA_PACKETS: u16 = 4;
const FPS: u32 = 30;
const GOP_FRAMES: u32 = 15;
const SUBSCRIBERS: u64 = 8;
/// Handshake (two round trips, a lost Initial costs one PTO) plus up to a GOP
/// plus the keyframe's delivery: generous, yet far below "never".
const BOUND: Duration = Duration::from_secs(4);

/// An RTP packet of video frame `frame` (timestamp), packet `index` of `count`.
fn video(frame: u32, index: u16, count: u16, seq: u64) -> MediaPacket {
    let mut rtp = vec![0u8; 1100];
    rtp[0] = 0x80;
    rtp[1] = 96 | if index + 1 == count { 0x80 } else { 0 };
    rtp[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    rtp[4..8].copy_from_slice(&(frame * 3000).to_be_bytes());
    rtp[12..16].copy_from_slice(&frame.to_be_bytes());
    rtp[16..18].copy_from_slice(&index.to_be_bytes());
    rtp[18..20].copy_from_slice(&count.to_be_bytes());
    MediaPacket {
        track: VIDEO,
        keyframe: index == 0 && frame.is_multiple_of(GOP_FRAMES),
        ingest_us: seq,
        rtp: Bytes::from(rtp),
    }
}

fn audio(seq: u64) -> MediaPacket {
    let mut rtp = vec![0u8; 120];
    rtp[0] = 0x80;
    rtp[1] = 111;
    MediaPacket {
        track: AUDIO,
        keyframe: false,
        ingest_us: seq,
        rtp: Bytes::from(rtp),
    }
}

/// Publishes at 30 fps until `stop`, one audio packet per frame.
async fn publish(source: Source, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut seq = 0u64;
    for frame in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let count = if frame.is_multiple_of(GOP_FRAMES) {
            KEYFRAME_PACKETS
        } else {
            DELTA_PACKETS
        };
        for index in 0..count {
            source.push(video(frame, index, count, seq));
            seq += 1;
        }
        source.push(audio(seq));
        seq += 1;
        tokio::time::sleep_until(start + Duration::from_secs(1) * (frame + 1) / FPS).await;
    }
}

fn fields(p: &MediaPacket) -> (u32, u16, u16) {
    let r = &p.rtp;
    (
        u32::from_be_bytes([r[12], r[13], r[14], r[15]]),
        u16::from_be_bytes([r[16], r[17]]),
        u16::from_be_bytes([r[18], r[19]]),
    )
}

/// Reads until the first keyframe's last packet; fails on a partial keyframe.
async fn first_keyframe(sub: &mut Subscription) -> Result<u32, String> {
    let mut expected: Option<(u32, u16)> = None;
    loop {
        let p = match sub.recv().await {
            Some(SubscriptionEvent::Packet(p)) => p,
            Some(SubscriptionEvent::CatalogChanged(_)) => continue,
            other => return Err(format!("subscription ended: {other:?}")),
        };
        if p.track != VIDEO {
            continue;
        }
        let (frame, index, count) = fields(&p);
        match expected {
            None if !p.keyframe => return Err(format!("starts on frame {frame}, no keyframe")),
            None => expected = Some((frame, 0)),
            Some(_) => {}
        }
        let Some((kf, next)) = expected else {
            continue;
        };
        if (frame, index) != (kf, next) {
            return Err(format!(
                "keyframe {kf} cut at packet {next} of {KEYFRAME_PACKETS}: got frame {frame} packet {index}"
            ));
        }
        if index + 1 == count {
            return Ok(kf);
        }
        expected = Some((kf, next + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_subscribers_over_a_lossy_link_start_on_a_whole_keyframe() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(publish(source, stop.clone()));
    let path = LossyPath::start(up.addr, Duration::from_millis(75), 0.01, 17).await;
    // The GOP cache holds a whole group before anyone subscribes.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let mut tasks = Vec::new();
    for i in 0..SUBSCRIBERS {
        // Spread over the GOP: 8 start points 67 ms apart span 536 ms > 500 ms.
        tokio::time::sleep(Duration::from_millis(67)).await;
        let tls = RelayTls::Mutual(creds(&ca, &format!("node-{i}")));
        let addr = path.addr;
        tasks.push(tokio::spawn(async move {
            let (client, _) = client_with(&tls, RelayConfig::default());
            let started = Instant::now();
            let run = async {
                let mut sub = client
                    .subscribe(addr, "node-a", "cam", 1)
                    .await
                    .map_err(|e| format!("subscribe: {e}"))?;
                first_keyframe(&mut sub).await
            };
            let got = timeout(BOUND, run)
                .await
                .unwrap_or_else(|_| Err(format!("no whole keyframe within {BOUND:?}")));
            (i, got, started.elapsed())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        let (i, got, took) = t.await.unwrap();
        eprintln!("subscriber {i}: {got:?} after {took:?}");
        if let Err(e) = got {
            failures.push(format!("subscriber {i}: {e}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    let dropped = path.stats.dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "the path lost nothing: not the lossy case");
    assert!(failures.is_empty(), "{failures:#?}");
    up.stop().await;
}
