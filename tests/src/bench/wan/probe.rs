//! The WAN bench's media ends: a WHIP publisher that stamps audio payloads with the send time,
//! and WHEP players that time their first frame and read the stamps back.
//!
//! Everything runs in this process, so the stamp and the arrival are read from one monotonic
//! clock: glass-to-glass here is "packet handed to the publisher's WebRTC stack" to "packet
//! out of the player's WebRTC stack" (no encoder, no jitter buffer, no decoder). The relay does
//! not look into Opus payloads, so an audio packet whose first 12 payload bytes are replaced by
//! a stamp travels the same path as any other. The stamp format, and the H.264 SEI stamps of
//! RTMP/SRT publishers (which the players here also read), are in [`crate::bench::stamp`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::{Bytes, BytesMut};
use strata_media::TrackKind;
use strata_rtc::Codec;
use strata_rtc::client::{ClientConfig, Player, PlayerOptions, Publisher};
use strata_rtc::fixture::{Clip, ClipPacer};
use tokio::task::JoinHandle;

use crate::bench::stamp::{self, anchor, depack::VideoStamps};
use crate::http;

/// Offset of the RTP payload (after CSRCs and the header extension).
fn payload_offset(rtp: &[u8]) -> Option<usize> {
    if rtp.len() < 12 {
        return None;
    }
    let mut off = 12 + 4 * usize::from(rtp[0] & 0x0f);
    if rtp[0] & 0x10 != 0 {
        let ext = rtp.get(off + 2..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (off <= rtp.len()).then_some(off)
}

/// `rtp` with the first payload bytes replaced by the stamp of `now`; unchanged if the payload
/// is shorter than a stamp.
fn stamp(rtp: &[u8], now: Instant) -> Bytes {
    let Some(off) = payload_offset(rtp).filter(|off| rtp.len() >= off + stamp::LEN) else {
        return Bytes::copy_from_slice(rtp);
    };
    let mut out = BytesMut::from(rtp);
    out[off..off + stamp::LEN].copy_from_slice(&stamp::encode(now));
    out.freeze()
}

/// A publisher looping a clip with stamped audio.
pub struct StampedPublisher {
    /// RTP bytes handed to the WebRTC stack (headers included).
    pub sent_bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl StampedPublisher {
    /// Publishes `clip` to `base_url/whip/stream` from `bind_ip`; returns once media flows.
    pub async fn start(
        base_url: &str,
        stream: &str,
        clip: Arc<Clip>,
        bind_ip: IpAddr,
    ) -> Result<Self> {
        anchor();
        let config = ClientConfig {
            bind_ip,
            ..ClientConfig::default()
        };
        let publisher = Publisher::new(clip.tracks(), &config).await?;
        let url = format!("{base_url}/whip/{stream}");
        let offer = publisher.offer().await?;
        let resp = http::post_sdp(&url, &offer).await?;
        if resp.status != 201 {
            bail!("WHIP POST {url}: {} {}", resp.status, resp.text());
        }
        publisher.set_answer(&resp.text()).await?;
        publisher.connected(Duration::from_secs(20)).await?;
        let publisher = Arc::new(publisher);
        {
            let publisher = Arc::clone(&publisher);
            tokio::spawn(async move { while publisher.keyframe_request().await.is_some() {} });
        }
        let audio: Vec<u8> = clip
            .tracks()
            .iter()
            .filter(|t| t.kind == TrackKind::Audio)
            .map(|t| t.id)
            .collect();
        let sent_bytes = Arc::new(AtomicU64::new(0));
        let sent = Arc::clone(&sent_bytes);
        let task = tokio::spawn(async move {
            let mut pacer = ClipPacer::new(clip, None);
            while let Some(p) = pacer.next().await {
                let rtp = match audio.contains(&p.track) {
                    true => stamp(&p.rtp, Instant::now()),
                    false => p.rtp,
                };
                if publisher.send_packet(p.track, &rtp).await.is_err() {
                    break;
                }
                sent.fetch_add(rtp.len() as u64, Ordering::Relaxed);
            }
        });
        Ok(Self { sent_bytes, task })
    }
}

impl Drop for StampedPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct ProbeState {
    /// First packet of a keyframe, and its RTP timestamp.
    keyframe_start: Option<(Instant, u32)>,
    /// Last packet (marker) of that first keyframe.
    first_frame: Option<Instant>,
    latencies: Vec<Duration>,
    /// Stamps in H.264 SEI (RTMP/SRT publishers).
    video: VideoStamps,
}

/// A WHEP player that measures.
pub struct ProbePlayer {
    /// Node it plays from.
    pub node: String,
    /// When the WHEP exchange began.
    pub requested_at: Instant,
    session_url: String,
    state: Arc<Mutex<ProbeState>>,
    collect: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl ProbePlayer {
    /// Plays `base_url/whep/stream` from `bind_ip`.
    pub async fn start(node: &str, base_url: &str, stream: &str, bind_ip: IpAddr) -> Result<Self> {
        let requested_at = Instant::now();
        let config = ClientConfig {
            bind_ip,
            ..ClientConfig::default()
        };
        let player = Player::new(&PlayerOptions::default(), &config).await?;
        let url = format!("{base_url}/whep/{stream}");
        let offer = player.offer().await?;
        let resp = http::post_sdp(&url, &offer).await?;
        if resp.status != 201 {
            bail!("WHEP POST {url}: {} {}", resp.status, resp.text());
        }
        player.set_answer(&resp.text()).await?;
        let session_url = resp.session_url()?;
        let state = Arc::new(Mutex::new(ProbeState::default()));
        let collect = Arc::new(AtomicBool::new(false));
        let (st, col) = (Arc::clone(&state), Arc::clone(&collect));
        let task = tokio::spawn(async move {
            let mut player = player;
            while let Some(p) = player.recv().await {
                let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                if p.codec == Some(Codec::H264) {
                    let (seq, ts) = (p.sequence_number, p.timestamp);
                    let sample = s.video.push(seq, ts, p.marker, &p.payload, p.arrival);
                    if let Some(d) = sample.filter(|_| col.load(Ordering::Relaxed)) {
                        s.latencies.push(d);
                    }
                }
                match p.kind {
                    TrackKind::Video if s.first_frame.is_none() => {
                        // A later keyframe replaces one whose end never came.
                        if p.is_keyframe()
                            && s.keyframe_start.is_none_or(|(_, ts)| ts != p.timestamp)
                        {
                            s.keyframe_start = Some((p.arrival, p.timestamp));
                        }
                        if let Some((_, ts)) = s.keyframe_start
                            && p.marker
                            && p.timestamp == ts
                        {
                            s.first_frame = Some(p.arrival);
                        }
                    }
                    TrackKind::Audio if col.load(Ordering::Relaxed) => {
                        if let Some(sent) = stamp::decode(&p.payload) {
                            let d = p.arrival.saturating_duration_since(sent);
                            s.latencies.push(d);
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Self {
            node: node.to_owned(),
            requested_at,
            session_url,
            state,
            collect,
            task,
        })
    }

    /// Waits for the first complete keyframe; returns the time since the WHEP exchange began.
    pub async fn first_frame(&self, within: Duration) -> Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first_frame
            {
                return Ok(at.saturating_duration_since(self.requested_at));
            }
            if Instant::now() >= deadline {
                bail!("no first frame on {} within {within:?}", self.node);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts (or stops) collecting glass-to-glass samples; starting clears earlier ones.
    pub fn collect(&self, on: bool) {
        if on {
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .latencies
                .clear();
        }
        self.collect.store(on, Ordering::Relaxed);
    }

    /// The samples collected.
    pub fn latencies(&self) -> Vec<Duration> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latencies
            .clone()
    }

    /// Ends the session (WHEP DELETE).
    pub async fn stop(self) {
        let _ = http::request("DELETE", &self.session_url, &[], &[]).await;
        self.task.abort();
    }
}

impl Drop for ProbePlayer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_the_payload() {
        let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        rtp.extend_from_slice(&[7u8; 40]);
        let now = anchor() + Duration::from_millis(1234);
        let stamped = stamp(&rtp, now);
        assert_eq!(stamped.len(), rtp.len());
        assert_eq!(&stamped[..12], &rtp[..12]);
        assert_eq!(stamp::decode(&stamped[12..]), Some(now));
        // Too short to carry a stamp: unchanged.
        let short = &rtp[..20];
        assert_eq!(&stamp(short, now)[..], short);
    }
}
