//! Glass-to-glass latency per ingest protocol, WHIP beside RTMP and SRT in one run.
//!
//! Each path: one node, N stamped publishers, one WHEP player each (the WAN bench's
//! [`ProbePlayer`]), in this process so stamp and arrival are read from one clock
//! (`crate::bench::stamp`). A sample runs from the moment a publisher hands a frame to its
//! socket (RTMP, SRT) or to its WebRTC stack (WHIP) to the moment the player's WebRTC stack
//! hands out the frame's last packet. Left out: capture and encoding (the publishers send
//! coded frames), and the player's jitter buffer, decoding and display.
//!
//! - `g2g-whip`: the WAN bench's [`StampedPublisher`] (VP8 + Opus clip; Opus packets carry the
//!   stamp, each one packet long).
//! - `g2g-rtmp`: the scripted RTMP client sending the H.264 + AAC fixture, SEI-stamped
//!   (`super::feed`); RTMP over TCP, remuxed to RTP by the node.
//! - `g2g-srt`, `g2g-srt-low`: the same video as MPEG-TS over SRT (`srt-tokio` caller), at
//!   the node's default SRT latency and at a low one. SRT holds every packet for its latency
//!   (TSBPD) before the node reads it, and the node's demuxer completes a video PES without a
//!   length (as ffmpeg writes them) only at the next one: one frame interval more.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::feed::{self, StampedFeed};
use super::{FIRST_PACKET_WITHIN, start_node};
use crate::bench::stats::{Sample, fmt_ratio, latency_ratio};
use crate::bench::wan::probe::{ProbePlayer, StampedPublisher};

/// The node's default `--srt-latency`.
pub const SRT_DEFAULT_LATENCY: Duration = Duration::from_millis(120);

/// One ingest path measured for glass-to-glass latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Path {
    /// WHIP (stamped Opus).
    Whip,
    /// RTMP (SEI-stamped H.264).
    Rtmp,
    /// SRT at the node's default latency.
    Srt,
    /// SRT at `--srt-low-latency`.
    SrtLow,
}

impl Path {
    /// The `--runs` name.
    pub fn name(self) -> &'static str {
        match self {
            Path::Whip => "g2g-whip",
            Path::Rtmp => "g2g-rtmp",
            Path::Srt => "g2g-srt",
            Path::SrtLow => "g2g-srt-low",
        }
    }

    /// Every path, WHIP first (the reference).
    pub fn all() -> [Path; 4] {
        [Path::Whip, Path::Rtmp, Path::Srt, Path::SrtLow]
    }

    /// The SRT latency this path runs at.
    fn srt_latency(self, low: Duration) -> Option<Duration> {
        match self {
            Path::Srt => Some(SRT_DEFAULT_LATENCY),
            Path::SrtLow => Some(low),
            _ => None,
        }
    }

    fn label(self, low: Duration) -> String {
        match (self, self.srt_latency(low)) {
            (Path::Whip, _) => "WHIP (Opus stamps)".into(),
            (Path::Rtmp, _) => "RTMP (H.264 SEI stamps)".into(),
            (_, Some(l)) => format!("SRT, latency {} ms (H.264 SEI stamps)", l.as_millis()),
            (_, None) => self.name().into(),
        }
    }
}

/// One path's samples.
#[derive(Debug, Clone, serde::Serialize)]
pub struct G2gResult {
    /// Which path.
    pub path: Path,
    /// For the report.
    pub label: String,
    /// Concurrent publishers (one player each).
    pub publishers: usize,
    /// SRT latency configured on both sides, ms.
    pub srt_latency_ms: Option<u64>,
    /// Samples in the window (all players).
    pub samples: usize,
    /// Players that got no sample.
    pub players_without_samples: usize,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
}

enum Publisher {
    Whip(#[allow(dead_code)] StampedPublisher),
    Encoder(StampedFeed),
}

/// Measures `path` with `publishers` publishers over `window` after `settle`.
pub async fn measure(
    path: Path,
    publishers: usize,
    settle: Duration,
    window: Duration,
    srt_low: Duration,
) -> Result<G2gResult> {
    let latency = path.srt_latency(srt_low);
    let extra: Vec<String> = match latency {
        Some(l) => vec!["--srt-latency".into(), format!("{}ms", l.as_millis())],
        None => Vec::new(),
    };
    let bench = start_node(publishers, &extra).await?;
    let http = bench.node.http.clone();
    let clip = crate::media::vp8_clip()?;
    let ip = Ipv4Addr::LOCALHOST.into();
    let mut feeds = Vec::new();
    for i in 0..publishers {
        let stream = format!("g2g-{i}");
        feeds.push(match (path, latency) {
            (Path::Whip, _) => Publisher::Whip(
                StampedPublisher::start(&http, &stream, Arc::clone(&clip), ip).await?,
            ),
            (Path::Rtmp, _) => Publisher::Encoder(feed::rtmp(&bench.rtmp, &stream).await?),
            (_, l) => Publisher::Encoder(
                feed::srt(&bench.srt, &stream, l.unwrap_or(SRT_DEFAULT_LATENCY)).await?,
            ),
        });
    }
    let mut players = Vec::new();
    for i in 0..publishers {
        let p = player(&http, &format!("g2g-{i}"))
            .await
            .with_context(|| format!("player {i}; node log:\n{}", bench.node.log_tail()))?;
        players.push(p);
    }
    tokio::time::sleep(settle).await;
    players.iter().for_each(|p| p.collect(true));
    tokio::time::sleep(window).await;
    players.iter().for_each(|p| p.collect(false));
    for f in &mut feeds {
        if let Publisher::Encoder(e) = f
            && e.stopped()
        {
            let why = e.reason().await;
            bail!(
                "a publisher stopped ({why}); node log:\n{}",
                bench.node.log_tail()
            );
        }
    }
    let mut all = Vec::new();
    let mut without = 0;
    for p in players {
        let l = p.latencies();
        without += usize::from(l.is_empty());
        all.extend(l.iter().map(|d| d.as_nanos() as u64));
        p.stop().await;
    }
    drop(feeds);
    let sample = Sample::new(all, 0, None, window, publishers);
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    Ok(G2gResult {
        path,
        label: path.label(srt_low),
        publishers,
        srt_latency_ms: latency.map(|l| l.as_millis() as u64),
        samples: sample.calls(),
        players_without_samples: without,
        p50_ms: ms(sample.p50()),
        p95_ms: ms(sample.percentile(0.95)),
        max_ms: ms(sample.percentile(1.0)),
    })
}

/// A probe player of `stream`, once it shows a first frame. An encoder's stream is live only
/// after its first keyframe: retry until then.
async fn player(http: &str, stream: &str) -> Result<ProbePlayer> {
    let deadline = tokio::time::Instant::now() + FIRST_PACKET_WITHIN;
    let ip = Ipv4Addr::LOCALHOST.into();
    let p = loop {
        match ProbePlayer::start("ingest-1", http, stream, ip).await {
            Ok(p) => break p,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    p.first_frame(FIRST_PACKET_WITHIN).await?;
    Ok(p)
}

impl G2gResult {
    /// One line for stderr while the bench runs.
    pub fn progress_line(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1} ms"));
        format!(
            "{}: {} samples, p50 {}, p95 {}, max {}",
            self.path.name(),
            self.samples,
            f(self.p50_ms),
            f(self.p95_ms),
            f(self.max_ms)
        )
    }
}

/// The glass-to-glass table, with ratios to the WHIP row when it was measured.
pub fn render(results: &[G2gResult]) -> String {
    let mut s = String::new();
    if results.is_empty() {
        return s;
    }
    let whip = results.iter().find(|r| r.path == Path::Whip);
    let dur = |v: Option<f64>| v.map(|ms| Duration::from_secs_f64(ms / 1e3));
    let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1} ms"));
    s.push_str(
        "\n### Glass-to-glass (publisher's socket → player's WebRTC stack)\n\n\
         | ingest | samples | p50 | p95 | max | p50 / WHIP | p95 / WHIP |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let ratio = |get: fn(&G2gResult) -> Option<f64>| {
            fmt_ratio(latency_ratio(dur(get(r)), whip.and_then(|w| dur(get(w)))))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.samples,
            f(r.p50_ms),
            f(r.p95_ms),
            f(r.max_ms),
            ratio(|r| r.p50_ms),
            ratio(|r| r.p95_ms),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(path: Path, p50: f64) -> G2gResult {
        G2gResult {
            path,
            label: path.label(Duration::from_millis(20)),
            publishers: 1,
            srt_latency_ms: None,
            samples: 10,
            players_without_samples: 0,
            p50_ms: Some(p50),
            p95_ms: Some(p50 * 2.0),
            max_ms: Some(p50 * 3.0),
        }
    }

    #[test]
    fn rows_carry_their_ratio_to_whip() {
        let text = render(&[result(Path::Whip, 2.0), result(Path::SrtLow, 50.0)]);
        assert!(
            text.contains("| WHIP (Opus stamps) | 10 | 2.0 ms |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| SRT, latency 20 ms (H.264 SEI stamps) | 10 | 50.0 ms | 100.0 ms | 150.0 ms | 25"
            ),
            "{text}"
        );
        assert!(render(&[]).is_empty());
    }
}
