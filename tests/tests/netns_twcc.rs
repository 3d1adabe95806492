//! The node's own bandwidth estimate from transport-cc feedback, with real WebRTC: a
//! three-layer simulcast stream (synthetic packets at 150 kbit/s, 400 kbit/s and 1.2 Mbit/s)
//! played by two client players (the `webrtc` stack, which sends transport-cc feedback and no
//! REMB): one on a clean path, one behind a 600 kbit/s policer (`shaper.rs`). The limited
//! one's estimate settles near the limit and it moves to a lower layer; the clean one stays
//! on top; lifted, the limited one climbs back. Every climb waits for a padding probe: under
//! the limit the probes fail and the player stays where it is (no move up and back), lifted
//! they pass; the padding is seen on the wire (the proxy counts RTP packets with the padding
//! bit). Loopback-only namespace (scripts/test.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_media::hub::{Hub, HubConfig, StreamHandle};
use strata_media::{Catalog, Layer, MediaPacket, TrackInfo, TrackKind};
use strata_rtc::client::{ClientConfig, Player, PlayerOptions};
use strata_rtc::{EgressPlayer, RtcConfig, RtcEngine};
use strata_tests::ports::require_netns;
use strata_tests::shaper::{ShapedLink, answer_address};

const RATES: [u64; 3] = [150_000, 400_000, 1_200_000];
const PAYLOAD: usize = 1_000;

fn catalog() -> Catalog {
    Catalog {
        tracks: Layer::ALL
            .iter()
            .enumerate()
            .map(|(i, layer)| TrackInfo {
                id: i as u8,
                kind: TrackKind::Video,
                mime: "video/VP8".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
                payload_type: 96,
                layer: Some(*layer),
            })
            .collect(),
    }
}

fn rtp(layer: usize, seq: u16, ts: u32, keyframe: bool) -> Bytes {
    let mut p = vec![0x80, 0x80 | 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&(0x1000 + layer as u32).to_be_bytes());
    // VP8 payload descriptor (start of partition), then a key or delta frame header.
    p.extend_from_slice(&[0x10, if keyframe { 0x00 } else { 0x01 }]);
    p.resize(12 + PAYLOAD, 0);
    Bytes::from(p)
}

/// A simulcast source: each layer at its rate, a keyframe every second and when asked.
fn publish(hub: &Hub) -> StreamHandle {
    let mut source = hub.attach_source("s", catalog()).expect("attach");
    let stream = source.stream();
    tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = [0u64; 3];
        let mut seq = [0u16; 3];
        let mut want_key = [true; 3];
        let mut last_key = started;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(track) = source.keyframe_request() => {
                    if let Some(w) = want_key.get_mut(usize::from(track)) {
                        *w = true;
                    }
                    continue;
                }
            }
            if last_key.elapsed() >= Duration::from_secs(1) {
                last_key = Instant::now();
                want_key = [true; 3];
            }
            let elapsed = started.elapsed();
            let ts = (elapsed.as_micros() * 9 / 100) as u32;
            for layer in 0..3 {
                let due = (RATES[layer] as f64 * elapsed.as_secs_f64() / 8.0) as u64;
                while sent[layer] + PAYLOAD as u64 <= due {
                    sent[layer] += PAYLOAD as u64;
                    let keyframe = std::mem::take(&mut want_key[layer]);
                    seq[layer] = seq[layer].wrapping_add(1);
                    source.push(MediaPacket {
                        track: layer as u8,
                        keyframe,
                        ingest_us: 0,
                        rtp: rtp(layer, seq[layer], ts, keyframe),
                    });
                }
            }
        }
    });
    stream
}

/// A client player of the stream, behind a policer at `limit` bit/s when given; its packets
/// are drained (and counted) in the background.
async fn play(
    engine: &RtcEngine,
    stream: &StreamHandle,
    limit: Option<u64>,
) -> (EgressPlayer, Option<ShapedLink>, Arc<AtomicU64>) {
    let player = Player::new(&PlayerOptions::default(), &ClientConfig::default())
        .await
        .expect("player");
    let offer = player.offer().await.expect("offer");
    let (session, mut answer) = engine
        .egress()
        .accept(&offer, stream)
        .await
        .expect("accept");
    assert!(answer.contains("transport-cc"), "{answer}");
    let link = match limit {
        Some(bps) => {
            let link = ShapedLink::start(answer_address(&answer).unwrap(), bps)
                .await
                .unwrap();
            answer = link.rewrite_answer(&answer);
            Some(link)
        }
        None => None,
    };
    player.set_answer(&answer).await.expect("answer");
    player
        .connected(Duration::from_secs(10))
        .await
        .expect("connects");
    let packets = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&packets);
    tokio::spawn(async move {
        let mut player = player;
        while player.recv().await.is_some() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    (session, link, packets)
}

fn kbps(p: &EgressPlayer) -> u64 {
    p.info().estimate_bps().unwrap_or(0) / 1_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_transport_cc_estimate_follows_a_rate_limit() {
    require_netns("netns_transport_cc_estimate_follows_a_rate_limit");
    strata_tests::init_test_tracing("warn,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error");
    let engine = RtcEngine::bind(RtcConfig::default()).await.expect("bind");
    let hub = Hub::new(HubConfig::default());
    let stream = publish(&hub);
    let (clean, _, clean_packets) = play(&engine, &stream, None).await;
    let (limited, link, _) = play(&engine, &stream, Some(600_000)).await;
    let link = link.expect("link");
    let counters = engine.egress().counters();

    // The limited player: an estimate near 600 kbit/s and a lower layer within 5 s.
    let started = Instant::now();
    let mut history = Vec::new();
    let settled = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (layer, estimate) = (limited.info().layer(), kbps(&limited));
        history.push((started.elapsed().as_millis(), layer, estimate));
        if layer.is_some_and(|l| l < Layer::High) && (300..=900).contains(&estimate) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "limited player: {history:?}; dropped {}",
            link.stats().dropped.load(Ordering::Relaxed)
        );
    };
    eprintln!(
        "600 kbit/s: on {:?} with {} kbit/s after {settled:?}; clean player on {:?} with {} kbit/s",
        limited.info().layer(),
        kbps(&limited),
        clean.info().layer(),
        kbps(&clean)
    );
    assert_eq!(clean.info().layer(), Some(Layer::High));
    // The top layer fits the clean player's estimate: at least 85 % of its rate (what one
    // back-off on a busy machine's delay variation leaves).
    assert!(kbps(&clean) >= 1_020, "clean estimate {}", kbps(&clean));
    assert_eq!(limited.info().estimate_from(), Some("transport-cc"));

    // It stays below the top layer and near the limit while the limit holds (mid, at
    // 400 kbit/s, fits); its tries to climb to the top are probes that fail, so it never
    // moves there (and back down).
    let switches = counters.layer_switches.get();
    let hold = Instant::now();
    let failed = || counters.probes_failed.get() > 0;
    while hold.elapsed() < Duration::from_secs(3) || !failed() {
        assert!(
            hold.elapsed() < Duration::from_secs(20),
            "no probe for the top layer failed: {} probes",
            counters.probes.get()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let estimate = kbps(&limited);
        assert!(
            (250..=1_000).contains(&estimate),
            "estimate {estimate} kbit/s under a 600 kbit/s limit"
        );
        assert!(
            limited.info().layer() < Some(Layer::High),
            "moved to the top under the limit"
        );
    }
    eprintln!(
        "under the limit for {:?}: {} probes, {} passed, {} failed, {} B of padding, {} padded packets on the wire, switches {} -> {}",
        hold.elapsed(),
        counters.probes.get(),
        counters.probes_passed.get(),
        counters.probes_failed.get(),
        counters.probe_padding_bytes.get(),
        link.stats().padding.load(Ordering::Relaxed),
        switches,
        counters.layer_switches.get()
    );
    assert!(
        link.stats().padding.load(Ordering::Relaxed) > 0,
        "padding on the wire"
    );

    // Two players' feedback, about ten packets a second each.
    assert!(counters.transport_feedback.get() > 40);
    assert_eq!(counters.transport_feedback_refused.get(), 0);
    assert!(clean_packets.load(Ordering::Relaxed) > 100);

    // Lifted: back to the top layer (climbing a layer at a time, each a probe).
    link.set_limit(0);
    let lifted = Instant::now();
    while limited.info().layer() != Some(Layer::High) {
        assert!(
            lifted.elapsed() < Duration::from_secs(30),
            "still on {:?} with {} kbit/s",
            limited.info().layer(),
            kbps(&limited)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "limit lifted: top layer after {:?}, estimate {} kbit/s, probes {} ({} passed, {} failed)",
        lifted.elapsed(),
        kbps(&limited),
        counters.probes.get(),
        counters.probes_passed.get(),
        counters.probes_failed.get()
    );
    assert!(
        counters.probes_passed.get() >= 1,
        "the climb followed a probe"
    );
    // And it stays there, its estimate following what the path now delivers.
    let hold = Instant::now() + Duration::from_secs(3);
    let mut trace = Vec::new();
    while Instant::now() < hold {
        tokio::time::sleep(Duration::from_millis(250)).await;
        trace.push((limited.info().layer(), kbps(&limited)));
    }
    assert!(
        trace.iter().all(|(l, _)| *l == Some(Layer::High)),
        "{trace:?}"
    );
    assert!(trace.last().is_some_and(|(_, e)| *e >= 1_200), "{trace:?}");
    assert_eq!(clean.info().layer(), Some(Layer::High));
}

/// A transport-cc feedback packet for `media_ssrc`: base, count, reference time, then
/// `body` (chunks and deltas), padded to a word.
fn feedback(media_ssrc: u32, base: u16, count: u16, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x8f, 205, 0, 0, 0, 0, 0, 1];
    p.extend_from_slice(&media_ssrc.to_be_bytes());
    p.extend_from_slice(&base.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    p.extend_from_slice(&[0x80, 0, 0, 0]);
    p.extend_from_slice(body);
    while p.len() % 4 != 0 {
        p.push(0);
    }
    let words = (p.len() / 4 - 1) as u16;
    p[2..4].copy_from_slice(&words.to_be_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_hostile_transport_feedback_is_refused_and_costs_nothing() {
    require_netns("netns_hostile_transport_feedback_is_refused_and_costs_nothing");
    strata_tests::init_test_tracing("warn,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error");
    let engine = RtcEngine::bind(RtcConfig::default()).await.expect("bind");
    let hub = Hub::new(HubConfig::default());
    let stream = publish(&hub);
    let (honest, _, honest_packets) = play(&engine, &stream, None).await;

    // The hostile player: the client stack, sending feedback of its own making.
    let hostile = Player::new(&PlayerOptions::default(), &ClientConfig::default())
        .await
        .expect("player");
    let offer = hostile.offer().await.expect("offer");
    let (session, answer) = engine
        .egress()
        .accept(&offer, &stream)
        .await
        .expect("accept");
    hostile.set_answer(&answer).await.expect("answer");
    hostile
        .connected(Duration::from_secs(10))
        .await
        .expect("connects");
    // Its media is not read: the client drops what overflows its queue.
    let counters = engine.egress().counters();
    let refused_before = counters.transport_feedback_refused.get();
    let before = honest_packets.load(Ordering::Relaxed);

    // Wait until the hostile player has an SSRC to name (its first packet arrived).
    let deadline = Instant::now() + Duration::from_secs(10);
    while hostile
        .send_raw_rtcp(TrackKind::Video, |ssrc| feedback(ssrc, 0, 1, &[0x20, 1, 4]))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no media for the hostile player");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two seconds of 500 packets a second: malformed ones (65,535 statuses claimed with one
    // chunk given, the reserved symbol, deltas missing) and well-formed ones claiming huge
    // runs, extreme deltas and sequence numbers never sent.
    let started = Instant::now();
    let mut malformed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut round = 0u16;
    while started.elapsed() < Duration::from_secs(2) {
        tick.tick().await;
        for i in 0..5u16 {
            round = round.wrapping_add(1);
            let bad = i % 2 == 0;
            let body: Vec<u8> = match i {
                0 => vec![0x20, 1, 9],
                2 => vec![0x60, 1, 9],
                4 => vec![0x40, 0x20, 1],
                1 => [0x1f, 0xff].repeat(9),
                _ => {
                    let mut b = vec![0x40, 64];
                    b.extend_from_slice(&[0x80, 0x00].repeat(64));
                    b
                }
            };
            let count = match i {
                0 => u16::MAX,
                1 => u16::MAX,
                2 => 1,
                4 => 32,
                _ => 64,
            };
            let sent = hostile
                .send_raw_rtcp(TrackKind::Video, |ssrc| {
                    feedback(ssrc, round.wrapping_mul(977), count, &body)
                })
                .await;
            if sent.is_ok() && bad {
                malformed += 1;
            }
        }
    }
    // Every malformed one is refused and counted (they arrive within a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.transport_feedback_refused.get() - refused_before < malformed * 9 / 10 {
        assert!(
            Instant::now() < deadline,
            "refused {} of {malformed}",
            counters.transport_feedback_refused.get() - refused_before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = counters.transport_feedback_refused.get() - refused_before;
    eprintln!("hostile feedback: {malformed} malformed sent, {refused} refused");
    assert!(refused <= malformed);
    // Both sessions live on, the honest player's media flowing throughout, and its estimate
    // untouched by the other's feedback.
    assert_eq!(session.state(), strata_rtc::SessionState::Connected);
    assert!(honest_packets.load(Ordering::Relaxed) > before + 100);
    assert!(kbps(&honest) >= 1_020, "honest estimate {}", kbps(&honest));
}
