//! What a ramp measured: per step, per server, and the first-packet percentiles.

use std::time::Duration;

use super::{fmt_cores, fmt_mib};
use crate::bench::fanout::Kind;
use crate::bench::fanout::simulcast::Mode;

/// Percentiles of the time from a player's request to its first RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Players measured.
    pub n: usize,
}

impl Latency {
    /// The percentiles of `samples`, if there are any.
    pub fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some(Latency {
            p50: at(0.5),
            p95: at(0.95),
            n: samples.len(),
        })
    }

    pub(super) fn text(l: Option<&Latency>) -> String {
        l.map_or_else(
            || "–".into(),
            |l| {
                format!(
                    "{:.0} / {:.0} ms",
                    l.p50.as_secs_f64() * 1e3,
                    l.p95.as_secs_f64() * 1e3
                )
            },
        )
    }
}

/// The name of a ramp: the server, and Strata's RTC workers when set.
pub fn label(kind: Kind, rtc_workers: Option<usize>, mode: Mode) -> String {
    let workers = match rtc_workers {
        Some(1) => " (1 RTC worker)".to_owned(),
        Some(w) => format!(" ({w} RTC workers)"),
        None => String::new(),
    };
    format!("{}{}{workers}", kind.name(), mode.suffix())
}

/// One step of a ramp.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepResult {
    /// Players asked for.
    pub target: usize,
    /// Players connected.
    pub players: usize,
    /// Players that failed to connect or never received media.
    pub failed: usize,
    /// Connected players that received nothing in the window.
    pub starved: usize,
    /// Time to connect this step's new players.
    pub setup: Duration,
    /// Server CPU in the window, in cores.
    pub cores: Option<f64>,
    /// Load-client CPU in the window, in cores.
    pub client_cores: Option<f64>,
    /// Server resident memory after the window.
    pub rss: Option<u64>,
    /// Loss from sequence-number gaps.
    pub loss_seq: f64,
    /// Loss from packets received against packets the source sent in the window.
    pub loss_rate: f64,
    /// UDP datagrams the kernel dropped in the window for full socket buffers (receive and
    /// send), in the bench's namespace: server and client together.
    pub udp_drops: u64,
    /// RTP delivered to all players, Mbit/s.
    pub mbit_out: f64,
    /// Request → first RTP of the players this step added.
    #[serde(default)]
    pub first_packet: Option<Latency>,
}

impl StepResult {
    /// The loss that counts: the larger of the two measures (a server that skips packets and
    /// renumbers shows no sequence gaps, only a short count).
    pub fn loss(&self) -> f64 {
        self.loss_seq.max(self.loss_rate)
    }

    /// A progress line for stderr.
    pub fn progress_line(&self, server: &str) -> String {
        format!(
            "{server}: {} players ({} failed) cpu {} client {} loss {:.2}% (seq {:.2}%) udp drops {} rss {} out {:.0} Mbit/s first packet p50/p95 {} (setup {:.1}s)",
            self.players,
            self.failed,
            fmt_cores(self.cores),
            fmt_cores(self.client_cores),
            self.loss_rate * 100.0,
            self.loss_seq * 100.0,
            self.udp_drops,
            fmt_mib(self.rss),
            self.mbit_out,
            Latency::text(self.first_packet.as_ref()),
            self.setup.as_secs_f64()
        )
    }
}

/// One server's ramp.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerResult {
    /// Which server.
    pub kind: Kind,
    /// Strata's `--rtc-workers`, when set.
    #[serde(default)]
    pub rtc_workers: Option<usize>,
    /// Single-layer publisher, or simulcast and how the players chose layers.
    #[serde(default)]
    pub mode: Mode,
    /// CPUs the server was given.
    #[serde(default = "one")]
    pub server_cores: usize,
    /// Steps in order; the last one failed unless the ramp ran out of steps.
    pub steps: Vec<StepResult>,
    /// CPU with the source flowing and no players.
    pub idle_cores: Option<f64>,
    /// Resident memory with the source flowing and no players.
    pub base_rss: Option<u64>,
    /// Players that failed to connect over the whole ramp.
    pub connect_failures: usize,
    /// `perf report` of the server under the last step's load.
    pub perf: Option<String>,
}

fn one() -> usize {
    1
}

impl ServerResult {
    /// The ramp's name.
    pub fn label(&self) -> String {
        label(self.kind, self.rtc_workers, self.mode)
    }

    /// Request → first RTP at the first (lightest) step.
    pub fn first_packet(&self) -> Option<&Latency> {
        self.steps.first().and_then(|s| s.first_packet.as_ref())
    }

    /// Memory per player: least-squares slope of RSS against players over the passing steps
    /// (the idle baseline included), in bytes.
    pub fn rss_slope(&self, max_loss: f64) -> Option<f64> {
        let mut pts: Vec<(f64, f64)> = self
            .passing(max_loss)
            .filter_map(|s| Some((s.players as f64, s.rss? as f64)))
            .collect();
        if let Some(b) = self.base_rss {
            pts.push((0.0, b as f64));
        }
        let n = pts.len() as f64;
        if pts.len() < 2 {
            return None;
        }
        let (mx, my) = pts
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
        let sxx: f64 = pts.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
        let sxy: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        (sxx > 0.0).then(|| sxy / sxx)
    }
    pub(super) fn passing(&self, max_loss: f64) -> impl Iterator<Item = &StepResult> {
        self.steps
            .iter()
            .filter(move |s| s.loss() <= max_loss && s.failed * 50 <= s.target.max(1))
    }

    /// The largest step with loss within bounds, and whether the ramp ever failed.
    pub fn capacity(&self, max_loss: f64) -> (Option<&StepResult>, bool) {
        let best = self.passing(max_loss).max_by_key(|s| s.players);
        let failed = self.steps.len() > self.passing(max_loss).count();
        (best, failed)
    }

    pub(super) fn at(&self, players: usize, max_loss: f64) -> Option<&StepResult> {
        self.passing(max_loss).find(|s| s.target == players)
    }
}
