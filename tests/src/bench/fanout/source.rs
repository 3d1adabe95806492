//! The one media source both servers get: a VP8 + Opus RTP clip, paced from its RTP timestamps.
//!
//! With ffmpeg installed the bench encodes a 1280×720 30 fps VP8 stream at ~2 Mbit/s plus Opus
//! (ffmpeg's `testsrc2` with temporal noise so the encoder reaches its rate, and a sine), sent
//! by ffmpeg as RTP to two loopback sockets of this process and stored as a `.strm` clip in the
//! temp dir (reused by later runs). Without ffmpeg it falls back to the committed 640×360
//! ~600 kbit/s fixture, and the report says so. The same packets then go to Janus as plain RTP
//! ([`feed_rtp`]) and to Strata over WHIP ([`feed_whip`]); the pacer and the packets are the
//! same, only the transport into the server differs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_media::{Layer, TrackId, TrackInfo, TrackKind};
use strata_rtc::RtcError;
use strata_rtc::client::{ClientConfig, Publisher, SimulcastPublisher};
use strata_rtc::fixture::{Clip, ClipPacer, fixture_path};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::encode;
use crate::grpcurl::find_executable;
use crate::http;

/// Length of the generated clip (it loops seamlessly).
pub(super) const CLIP_SECONDS: u32 = 10;

/// The clip and a description of it for the report.
pub struct Source {
    /// The packets.
    pub clip: Arc<Clip>,
    /// The clip's tracks as published: with a simulcast source, its video tracks carry
    /// their layers and go out as the encodings of one section.
    pub tracks: Vec<TrackInfo>,
    /// e.g. "VP8 1280×720 30 fps + Opus, 2.08 Mbit/s (generated with ffmpeg)".
    pub label: String,
}

impl Source {
    /// A single-layer source: the clip's own tracks.
    pub(super) fn single(clip: Clip, label: String) -> Source {
        Source {
            tracks: clip.tracks().to_vec(),
            clip: Arc::new(clip),
            label,
        }
    }

    /// Whether the source sends simulcast layers.
    pub fn simulcast(&self) -> bool {
        self.tracks.iter().any(|t| t.layer.is_some())
    }

    /// The clip tracks a player on `layer` receives: every track without a layer, and the
    /// one of `layer` (all of them for a single-layer source or `None`).
    pub fn received_by(&self, layer: Option<Layer>) -> Vec<bool> {
        self.tracks
            .iter()
            .map(|t| t.layer.is_none() || layer.is_none() || t.layer == layer)
            .collect()
    }
}

/// Packets the feeder sent so far, per clip track: the expected side of loss.
#[derive(Debug, Default)]
pub struct Fed(Vec<AtomicU64>);

impl Fed {
    /// Counters for a clip of `tracks` tracks.
    pub fn new(tracks: usize) -> Fed {
        Fed((0..tracks).map(|_| AtomicU64::new(0)).collect())
    }

    fn add(&self, track: TrackId) {
        if let Some(c) = self.0.get(usize::from(track)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts now, per track.
    pub fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// Average RTP bit rate of a clip's tracks for which `of` is true.
pub(super) fn tracks_rate(clip: &Clip, of: impl Fn(usize) -> bool) -> f64 {
    let bytes: usize = clip
        .packets()
        .iter()
        .filter(|p| of(usize::from(p.track)))
        .map(|p| p.rtp.len())
        .sum();
    bytes as f64 * 8.0 / clip.duration().as_secs_f64()
}

/// Average RTP bit rate of a clip.
fn clip_rate(clip: &Clip) -> f64 {
    let bytes: usize = clip.packets().iter().map(|p| p.rtp.len()).sum();
    bytes as f64 * 8.0 / clip.duration().as_secs_f64()
}

/// The 2 Mbit/s 720p clip (generated once with ffmpeg), or the committed fixture.
pub async fn load(quick: bool) -> Result<Source> {
    if !quick && find_executable("ffmpeg").is_some() {
        let path =
            std::env::temp_dir().join(format!("strata-bench-vp8-720p-2M-{CLIP_SECONDS}s-v1.strm"));
        let clip = match Clip::load(&path) {
            Ok(clip) => clip,
            Err(_) => {
                eprintln!("encoding a {CLIP_SECONDS} s 720p VP8 clip with ffmpeg (once)...");
                let bytes = encode::encode(&[encode::SINGLE], CLIP_SECONDS).await?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &path)?;
                Clip::from_bytes(&bytes).context("reading the generated clip")?
            }
        };
        let rate = clip_rate(&clip);
        let label = format!(
            "VP8 1280×720 30 fps + Opus, {:.2} Mbit/s (ffmpeg testsrc2 + noise, {})",
            rate / 1e6,
            path.display()
        );
        return Ok(Source::single(clip, label));
    }
    let clip = Clip::load(fixture_path("clip-vp8.strm")).context("loading the VP8 fixture")?;
    let rate = clip_rate(&clip);
    let why = if quick {
        "--quick"
    } else {
        "ffmpeg not installed"
    };
    let label = format!(
        "VP8 640×360 30 fps + Opus, {:.2} Mbit/s (committed fixture clip-vp8.strm; {why})",
        rate / 1e6
    );
    Ok(Source::single(clip, label))
}

/// Sends the clip, looped, as plain RTP to `ports` (one per clip track, in clip order).
pub fn feed_rtp(
    clip: Arc<Clip>,
    ports: Vec<(TrackKind, u16)>,
    fed: Arc<Fed>,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let dests: Vec<SocketAddr> = ports
            .iter()
            .map(|(_, port)| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        let mut pacer = ClipPacer::new(clip, None);
        while let Some(p) = pacer.next().await {
            if let Some(dest) = dests.get(usize::from(p.track)) {
                // A full socket buffer drops the packet, as a network would.
                let _ = socket.send_to(&p.rtp, dest).await;
            }
            fed.add(p.track);
        }
        Ok(())
    })
}

/// Publishes the clip, looped, to `whip_url` over WHIP; returns once media flows.
pub async fn feed_whip(
    clip: Arc<Clip>,
    whip_url: &str,
    fed: Arc<AtomicU64>,
) -> Result<JoinHandle<Result<()>>> {
    let tracks = clip.tracks().to_vec();
    feed_whip_with(clip, &tracks, whip_url, move |_| {
        fed.fetch_add(1, Ordering::Relaxed);
    })
    .await
}

/// Publishes the source, looped, to `whip_url` over WHIP (simulcast when it has layers),
/// counting what it sent per track; returns once media flows.
pub async fn feed_source_whip(
    source: &Source,
    whip_url: &str,
    fed: Arc<Fed>,
) -> Result<JoinHandle<Result<()>>> {
    let clip = Arc::clone(&source.clip);
    feed_whip_with(clip, &source.tracks, whip_url, move |t| fed.add(t)).await
}

async fn feed_whip_with(
    clip: Arc<Clip>,
    tracks: &[TrackInfo],
    whip_url: &str,
    sent: impl Fn(TrackId) + Send + 'static,
) -> Result<JoinHandle<Result<()>>> {
    let config = ClientConfig::default();
    let publisher = match tracks.iter().any(|t| t.layer.is_some()) {
        false => Feeder::Single(Publisher::new(tracks, &config).await?),
        true => Feeder::Simulcast(SimulcastPublisher::new(tracks, &config).await?),
    };
    let offer = publisher.offer().await?;
    let resp = http::post_sdp(whip_url, &offer).await?;
    if resp.status != 201 {
        bail!("WHIP POST {whip_url}: {} {}", resp.status, resp.text());
    }
    publisher.set_answer(&resp.text()).await?;
    publisher.connected(Duration::from_secs(15)).await?;
    let publisher = Arc::new(publisher);
    // Keyframe requests are answered by the clip's own keyframes (every 2 s); drain them.
    {
        let publisher = Arc::clone(&publisher);
        tokio::spawn(async move { while publisher.keyframe_request().await.is_some() {} });
    }
    Ok(tokio::spawn(async move {
        let mut pacer = ClipPacer::new(clip, None);
        while let Some(p) = pacer.next().await {
            publisher.send_packet(p.track, &p.rtp).await?;
            sent(p.track);
        }
        Ok(())
    }))
}

/// The WHIP client of either kind.
enum Feeder {
    Single(Publisher),
    Simulcast(SimulcastPublisher),
}

impl Feeder {
    async fn offer(&self) -> Result<String, RtcError> {
        match self {
            Feeder::Single(p) => p.offer().await,
            Feeder::Simulcast(p) => p.offer().await,
        }
    }

    async fn set_answer(&self, sdp: &str) -> Result<(), RtcError> {
        match self {
            Feeder::Single(p) => p.set_answer(sdp).await,
            Feeder::Simulcast(p) => p.set_answer(sdp).await,
        }
    }

    async fn connected(&self, timeout: Duration) -> Result<(), RtcError> {
        match self {
            Feeder::Single(p) => p.connected(timeout).await,
            Feeder::Simulcast(p) => p.connected(timeout).await,
        }
    }

    async fn keyframe_request(&self) -> Option<TrackId> {
        match self {
            Feeder::Single(p) => p.keyframe_request().await,
            Feeder::Simulcast(p) => p.keyframe_request().await,
        }
    }

    async fn send_packet(&self, track: TrackId, rtp: &[u8]) -> Result<(), RtcError> {
        match self {
            Feeder::Single(p) => p.send_packet(track, rtp).await,
            Feeder::Simulcast(p) => p.send_packet(track, rtp).await,
        }
    }
}
