//! Test publishers and players over real WHIP/WHEP and WebRTC (the `webrtc`
//! crate's stack, the same one the node uses, as an independent endpoint).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_media::TrackKind;
use strata_rtc::client::{ClientConfig, Player, PlayerOptions, Publisher, ReceivedPacket};
use strata_rtc::fixture::{Clip, ClipPacer, fixture_path};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::holes::SeqHoles;
use crate::http;
use crate::shaper::{ShapedLink, answer_address};

/// The committed VP8 + Opus test clip.
pub fn vp8_clip() -> Result<Arc<Clip>> {
    Ok(Arc::new(
        Clip::load(fixture_path("clip-vp8.strm")).context("loading the VP8 fixture")?,
    ))
}

/// A publisher looping a clip into a node over WHIP.
pub struct TestPublisher {
    /// Absolute URL of the WHIP session.
    pub session_url: String,
    /// Node that served the publish.
    pub node: String,
    /// Keyframe requests (PLI/FIR) the node sent to this publisher.
    pub keyframe_requests: Arc<std::sync::atomic::AtomicU64>,
    /// While set, the clip plays on but no packet is sent (the connection stays up).
    silent: Arc<std::sync::atomic::AtomicBool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A publisher with its offer made but not yet sent: tests that race POSTs
/// prepare several, then post them at once.
pub struct PreparedPublisher {
    publisher: Publisher,
    offer: String,
    clip: Arc<Clip>,
}

impl PreparedPublisher {
    /// Makes the offer for `clip`.
    pub async fn new(clip: Arc<Clip>) -> Result<PreparedPublisher> {
        let publisher = Publisher::new(clip.tracks(), &ClientConfig::default()).await?;
        let offer = publisher.offer().await?;
        Ok(PreparedPublisher {
            publisher,
            offer,
            clip,
        })
    }

    /// POSTs the offer to `base_url/whip/stream` (following one 307); on a
    /// 201 publishes the clip (looped forever), on any other answer returns
    /// that answer.
    pub async fn post(
        self,
        base_url: &str,
        stream: &str,
    ) -> Result<std::result::Result<TestPublisher, http::Response>> {
        let url = format!("{base_url}/whip/{stream}");
        let resp = http::post_sdp(&url, &self.offer).await?;
        if resp.status != 201 {
            return Ok(Err(resp));
        }
        TestPublisher::answered(self.publisher, resp, self.clip)
            .await
            .map(Ok)
    }
}

impl TestPublisher {
    /// Publishes `clip` (looped forever) to `base_url/whip/stream`.
    pub async fn start(base_url: &str, stream: &str, clip: Arc<Clip>) -> Result<TestPublisher> {
        match PreparedPublisher::new(clip)
            .await?
            .post(base_url, stream)
            .await?
        {
            Ok(p) => Ok(p),
            Err(resp) => bail!(
                "WHIP POST {base_url}/whip/{stream}: {} {}",
                resp.status,
                resp.text()
            ),
        }
    }

    /// Completes a publish the node answered with a 201.
    async fn answered(
        publisher: Publisher,
        resp: http::Response,
        clip: Arc<Clip>,
    ) -> Result<TestPublisher> {
        publisher.set_answer(&resp.text()).await?;
        let location = resp.header("location").context("no Location")?.to_owned();
        let node = resp.header("x-strata-node").unwrap_or_default().to_owned();
        publisher.connected(Duration::from_secs(15)).await?;
        let (stop, mut stop_rx) = watch::channel(false);
        let keyframe_requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let kf = keyframe_requests.clone();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quiet = silent.clone();
        let publisher = Arc::new(publisher);
        // Counted in a task of its own: a `select!` over both would cancel the
        // pacer's pending sleep and lose the packet it had already taken.
        let counter = {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                while publisher.keyframe_request().await.is_some() {
                    kf.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let task = tokio::spawn(async move {
            let mut pacer = ClipPacer::new(clip, None);
            loop {
                tokio::select! {
                    p = pacer.next() => match p {
                        Some(_) if quiet.load(std::sync::atomic::Ordering::Relaxed) => {}
                        Some(p) => {
                            if publisher.send_packet(p.track, &p.rtp).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = stop_rx.changed() => break,
                }
            }
            counter.abort();
            publisher.close().await;
        });
        let (authority, _) = http::split_url(&resp.url)?;
        Ok(TestPublisher {
            session_url: format!("http://{authority}{location}"),
            node,
            keyframe_requests,
            silent,
            stop,
            task,
        })
    }

    /// Stops (true) or resumes (false) sending media, keeping the connection: an encoder whose
    /// input went dark.
    pub fn set_silent(&self, silent: bool) {
        self.silent
            .store(silent, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ends the publish with a WHIP DELETE.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        let resp = http::request("DELETE", &self.session_url, &[], &[]).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        anyhow::ensure!(resp.status == 200, "DELETE: {}", resp.status);
        Ok(())
    }

    /// Stops sending without telling the node (as if the publisher vanished).
    pub async fn vanish(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// What a test player has received so far.
#[derive(Debug, Clone, Default)]
pub struct PlayStats {
    /// Video packets received.
    pub video_packets: u64,
    /// Audio packets received.
    pub audio_packets: u64,
    /// Whether the first video packet started a keyframe.
    pub first_video_is_keyframe: Option<bool>,
    /// Video keyframes received.
    pub keyframes: u64,
    /// Sequence-number discontinuities (per SSRC), i.e. what the player sees as loss.
    pub seq_gaps: u64,
    /// SSRC changes within one kind.
    pub ssrc_changes: u64,
    /// When the first video packet arrived.
    pub first_video: Option<Instant>,
    /// When the last video packet arrived.
    pub last_video: Option<Instant>,
    /// Longest gap between two video packets.
    pub longest_video_gap: Duration,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// The first few discontinuities: (kind, previous sequence number, this one, packet index).
    pub gap_log: Vec<(TrackKind, u16, u16, u64)>,
    /// Video sequence numbers (of the current SSRC) that never arrived; retransmissions fill
    /// their holes.
    pub video_holes: SeqHoles,
}

impl PlayStats {
    /// Counts packet `p`; `last_seq` holds the last (SSRC, sequence number) per kind.
    fn on_packet(&mut self, p: &ReceivedPacket, last_seq: &mut HashMap<TrackKind, (u32, u16)>) {
        let st = self;
        st.bytes += p.payload.len() as u64;
        if let Some((ssrc, seq)) = last_seq.get(&p.kind) {
            if *ssrc != p.ssrc {
                st.ssrc_changes += 1;
                if p.kind == TrackKind::Video {
                    st.video_holes = SeqHoles::default();
                }
            } else if p.sequence_number != seq.wrapping_add(1) {
                st.seq_gaps += 1;
                if st.gap_log.len() < 8 {
                    let n = st.video_packets + st.audio_packets;
                    st.gap_log.push((p.kind, *seq, p.sequence_number, n));
                }
            }
        }
        last_seq.insert(p.kind, (p.ssrc, p.sequence_number));
        match p.kind {
            TrackKind::Video => {
                st.video_packets += 1;
                st.video_holes.on_packet(p.sequence_number);
                if st.first_video_is_keyframe.is_none() {
                    st.first_video_is_keyframe = Some(p.is_keyframe());
                    st.first_video = Some(p.arrival);
                }
                if p.is_keyframe() {
                    st.keyframes += 1;
                }
                if let Some(last) = st.last_video {
                    let gap = p.arrival.saturating_duration_since(last);
                    st.longest_video_gap = st.longest_video_gap.max(gap);
                }
                st.last_video = Some(p.arrival);
            }
            TrackKind::Audio => st.audio_packets += 1,
        }
    }
}

/// A test player's receive loop: counts every packet into `stats`, asks for a keyframe on
/// each message of `keyframes`, ends with the connection.
async fn play(
    mut player: Player,
    stats: Arc<Mutex<PlayStats>>,
    mut keyframes: tokio::sync::mpsc::Receiver<()>,
) {
    let mut last_seq: HashMap<TrackKind, (u32, u16)> = HashMap::new();
    loop {
        let p = tokio::select! {
            p = player.recv() => p,
            Some(()) = keyframes.recv() => {
                let _ = player.request_keyframe(TrackKind::Video).await;
                continue;
            }
        };
        let Some(p) = p else { break };
        let mut st = stats.lock().unwrap_or_else(|e| e.into_inner());
        st.on_packet(&p, &mut last_seq);
    }
}

/// A player receiving a stream over WHEP.
pub struct TestPlayer {
    /// Absolute URL of the WHEP session.
    pub session_url: String,
    /// The node that served the player.
    pub node: String,
    /// When the WHEP POST was sent.
    pub requested_at: Instant,
    stats: Arc<Mutex<PlayStats>>,
    keyframes: tokio::sync::mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl TestPlayer {
    /// Plays `base_url/whep/stream`.
    pub async fn start(base_url: &str, stream: &str) -> Result<TestPlayer> {
        Ok(Self::start_with(base_url, stream, "", None).await?.0)
    }

    /// Plays `base_url/whep/stream?query` (e.g. `layer=low`); with `limit_bps`, over a
    /// [`ShapedLink`] limiting what the node sends to that many bit/s (0: no limit yet).
    pub async fn start_with(
        base_url: &str,
        stream: &str,
        query: &str,
        limit_bps: Option<u64>,
    ) -> Result<(TestPlayer, Option<ShapedLink>)> {
        let requested_at = Instant::now();
        let player = Player::new(&PlayerOptions::default(), &ClientConfig::default()).await?;
        let url = if query.is_empty() {
            format!("{base_url}/whep/{stream}")
        } else {
            format!("{base_url}/whep/{stream}?{query}")
        };
        let offer = player.offer().await?;
        let resp = http::post_sdp(&url, &offer).await?;
        if resp.status != 201 {
            bail!("WHEP POST {url}: {} {}", resp.status, resp.text());
        }
        let mut answer = resp.text();
        let link = match limit_bps {
            Some(bps) => {
                let link = ShapedLink::start(answer_address(&answer)?, bps).await?;
                answer = link.rewrite_answer(&answer);
                Some(link)
            }
            None => None,
        };
        player.set_answer(&answer).await?;
        let session_url = resp.session_url()?;
        let node = resp.header("x-strata-node").unwrap_or_default().to_owned();
        let stats = Arc::new(Mutex::new(PlayStats::default()));
        let s = stats.clone();
        let (keyframes, kf_rx) = tokio::sync::mpsc::channel::<()>(8);
        let task = tokio::spawn(play(player, s, kf_rx));
        let player = TestPlayer {
            session_url,
            node,
            requested_at,
            stats,
            keyframes,
            task,
        };
        Ok((player, link))
    }

    /// Sends a PLI for the video track, as a decoder that lost a frame would.
    pub async fn request_keyframe(&self) {
        let _ = self.keyframes.send(()).await;
    }

    /// A snapshot of the stats.
    pub fn stats(&self) -> PlayStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resets the longest-gap measure (e.g. after warm-up).
    pub fn reset_gap(&self) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .longest_video_gap = Duration::ZERO;
    }

    /// Waits until `cond` holds on the stats, or fails after `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&PlayStats) -> bool,
    ) -> Result<PlayStats> {
        let deadline = Instant::now() + within;
        loop {
            let st = self.stats();
            if cond(&st) {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!(
                    "player on {}: timed out waiting for {what}; stats {st:?}",
                    self.node
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the session with a WHEP DELETE.
    pub async fn stop(self) -> Result<()> {
        let resp = http::request("DELETE", &self.session_url, &[], &[]).await;
        self.task.abort();
        let resp = resp?;
        anyhow::ensure!(resp.status == 200, "DELETE: {}", resp.status);
        Ok(())
    }
}

impl Drop for TestPlayer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
