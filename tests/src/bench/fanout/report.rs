//! The fan-out report: one summary table with ratios, one ramp table per server.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

mod simulcast;

use super::Kind;
use super::simulcast::Mode;
use super::source::Source;
use crate::bench::machine::Machine;
use crate::grpcurl::find_executable;

/// Strata must carry at least this many times Janus's players per core.
pub const GOAL: f64 = 2.0;
/// Strata's CPU per player below saturation must be at most this fraction of Janus's.
pub const GOAL_CPU: f64 = 0.5;
/// Strata's memory per player (RSS slope) must stay under this many bytes.
pub const GOAL_RSS_SLOPE: f64 = 64.0 * 1024.0;
/// Strata's first packet p50 (WHEP offer → first RTP) on loopback must stay under this.
pub const GOAL_FIRST_PACKET: Duration = Duration::from_millis(100);

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

    fn text(l: Option<&Latency>) -> String {
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
    fn passing(&self, max_loss: f64) -> impl Iterator<Item = &StepResult> {
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

    fn at(&self, players: usize, max_loss: f64) -> Option<&StepResult> {
        self.passing(max_loss).find(|s| s.target == players)
    }
}

/// What the report describes.
pub struct Context<'a> {
    pub machine: &'a Machine,
    pub source: &'a Source,
    /// The three-layer source of the simulcast ramps, if any ran.
    pub simulcast_source: Option<&'a Source>,
    pub window: Duration,
    pub max_loss: f64,
    pub placement: &'a str,
    pub server_cores: usize,
    pub janus_event_loops: usize,
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
    pub results: &'a [ServerResult],
    pub notes: &'a [String],
}

fn fmt_cores(c: Option<f64>) -> String {
    c.map_or_else(|| "–".into(), |c| format!("{c:.2}"))
}

fn fmt_mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "–".into(),
        |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    )
}

fn fmt_kib(b: Option<f64>) -> String {
    b.map_or_else(|| "–".into(), |b| format!("{:.0} KiB", b / 1024.0))
}

fn fmt_pct_core(c: Option<f64>) -> String {
    c.map_or_else(|| "–".into(), |c| format!("{:.3} %", c * 100.0))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// Per-player figures at one step.
struct PerPlayer {
    cpu: Option<f64>,
}

fn per_player(s: &StepResult) -> PerPlayer {
    PerPlayer {
        cpu: s.cores.map(|c| c / s.players.max(1) as f64),
    }
}

/// One server's headline figures.
struct Summary {
    label: String,
    kind: Kind,
    mode: Mode,
    rtc_workers: Option<usize>,
    /// Players per core at ≤ max loss.
    per_core: Option<f64>,
    /// CPU per player (cores) at the common load.
    cpu: Option<f64>,
    /// RSS slope, bytes per player.
    memory: Option<f64>,
    /// First packet p50 at the first step.
    first_packet: Option<Duration>,
}

/// The goals, one line per goal and Strata ramp: met, NOT met or not decided.
fn render_goals(summary: &[Summary], every_ramp_failed: bool) -> String {
    let mut out = String::new();
    let janus = summary.iter().find(|s| s.kind == Kind::Janus);
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    for s in summary.iter().filter(|s| s.kind == Kind::Strata) {
        if let Some(j) = janus {
            let players = match (s.per_core, j.per_core) {
                _ if !every_ramp_failed => {
                    "not decided (a ramp ended before loss exceeded the bound)"
                }
                (Some(a), Some(b)) => verdict(Some(b > 0.0 && a / b >= GOAL)),
                _ => verdict(None),
            };
            let _ = writeln!(
                out,
                "- {}: players per core ≥ {GOAL}× Janus: **{players}**",
                s.label
            );
            let cpu = match (s.cpu, j.cpu) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b <= GOAL_CPU),
                _ => None,
            };
            let _ = writeln!(
                out,
                "- {}: CPU per player ≤ {GOAL_CPU}× Janus: **{}**",
                s.label,
                verdict(cpu)
            );
        }
        let _ = writeln!(
            out,
            "- {}: memory per player (RSS slope) ≤ {:.0} KiB: **{}**",
            s.label,
            GOAL_RSS_SLOPE / 1024.0,
            verdict(s.memory.map(|m| m <= GOAL_RSS_SLOPE))
        );
        let _ = writeln!(
            out,
            "- {}: first packet p50 ≤ {} ms: **{}**",
            s.label,
            GOAL_FIRST_PACKET.as_millis(),
            verdict(s.first_packet.map(|d| d <= GOAL_FIRST_PACKET))
        );
    }
    out
}

/// The markdown report.
pub fn render(c: &Context<'_>) -> String {
    let mut out = String::new();
    let load = |l: Option<f64>| l.map_or_else(|| "?".into(), |l| format!("{l:.2}"));
    let _ = writeln!(
        out,
        "### WebRTC fan-out: Strata beside Janus\n\n\
         Machine: {}; {} build; load average {} before, {} after.  ",
        c.machine,
        c.machine.profile(),
        load(c.load_before),
        load(c.load_after)
    );
    let _ = writeln!(
        out,
        "Source (the same packets to both): {}.  ",
        c.source.label
    );
    if let Some(sim) = c.simulcast_source {
        let _ = writeln!(out, "Simulcast ramps (Strata only): {}.  ", sim.label);
    }
    let _ = writeln!(out, "{} ", c.placement);
    if c.results.iter().any(|r| r.kind == Kind::Janus) {
        let loops = match c.janus_event_loops {
            0 => "Janus's stock setting, a thread per handle".to_owned(),
            n => format!("`event_loops = {n}`"),
        };
        let _ = writeln!(out, "Janus: streaming plugin, HTTP transport, {loops}. ");
    }
    let _ = writeln!(
        out,
        "Loss over a {:.0} s window per step: packets received ÷ packets the source sent \
         (and sequence gaps; the larger counts); a step passes at ≤ {:.1} %.\n",
        c.window.as_secs_f64(),
        c.max_loss * 100.0
    );

    // Per-player figures at equal load: the largest step every server passed below 90 % of
    // its cores (at saturation CPU ÷ players is only cores ÷ players), else the largest passed.
    let common_where = |unsaturated: bool| {
        c.results
            .iter()
            .map(|r| {
                r.passing(c.max_loss)
                    .filter(|s| {
                        !unsaturated || s.cores.is_some_and(|x| x < 0.9 * r.server_cores as f64)
                    })
                    .map(|s| s.target)
                    .collect::<std::collections::BTreeSet<_>>()
            })
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .and_then(|s| s.last().copied())
    };
    let common = common_where(true).or_else(|| common_where(false));

    let per_core = match c.server_cores {
        1 => "players per core".to_owned(),
        n => format!("players on {n} cores (per core)"),
    };
    let _ = writeln!(
        out,
        "| server | {per_core} (loss ≤ {:.0} %) | CPU per player (at N players) | memory per player (RSS slope) | idle CPU (source only) | first packet p50 / p95 (first step) |",
        c.max_loss * 100.0,
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let mut summary: Vec<Summary> = Vec::new();
    let mut every_ramp_failed = true;
    for r in c.results {
        let (best, failed) = r.capacity(c.max_loss);
        every_ramp_failed &= failed;
        let cap = best.map(|s| s.players);
        let cores = r.server_cores.max(1);
        let capped = match (cap, cores) {
            (Some(n), 1) => n.to_string(),
            (Some(n), k) => format!("{n} ({:.0})", n as f64 / k as f64),
            (None, _) => "0".into(),
        };
        let capped = match (cap, failed) {
            (Some(_), false) => format!("≥ {capped} (ramp ended)"),
            _ => capped,
        };
        let client_bound = r
            .steps
            .last()
            .filter(|_| failed)
            .and_then(|s| s.client_cores)
            .is_some_and(|c| c > 0.9);
        // At the load every server carried, else at this server's own largest passing step.
        let at = common.and_then(|n| r.at(n, c.max_loss)).or(best);
        let pp = at.map(per_player);
        let slope = r.rss_slope(c.max_loss);
        let _ = writeln!(
            out,
            "| {} | {capped}{} | {} of a core{} | {} | {} cores | {} |",
            r.label(),
            if client_bound { " (client-bound)" } else { "" },
            fmt_pct_core(pp.as_ref().and_then(|p| p.cpu)),
            at.map_or_else(String::new, |s| format!(" (N = {})", s.players)),
            fmt_kib(slope),
            fmt_cores(r.idle_cores),
            Latency::text(r.first_packet()),
        );
        summary.push(Summary {
            label: r.label(),
            kind: r.kind,
            mode: r.mode,
            rtc_workers: r.rtc_workers,
            per_core: cap.map(|n| n as f64 / cores as f64),
            cpu: pp.as_ref().and_then(|p| p.cpu),
            memory: slope,
            first_packet: r.first_packet().map(|l| l.p50),
        });
    }
    let janus = summary.iter().find(|s| s.kind == Kind::Janus);
    for s in summary.iter().filter(|s| s.kind == Kind::Strata) {
        if let Some(j) = janus {
            let _ = writeln!(
                out,
                "| **{} ÷ Janus** | **{}** | {} | {} | | |",
                s.label,
                ratio(s.per_core, j.per_core),
                ratio(s.cpu, j.cpu),
                ratio(s.memory, j.memory),
            );
        }
    }
    let _ = write!(out, "{}", simulcast::ratio_rows(&summary));
    let mut goals = render_goals(&summary, every_ramp_failed);
    goals.push_str(&simulcast::goal_lines(&summary, every_ramp_failed));
    if !goals.is_empty() {
        let _ = writeln!(out, "\nGoals:\n{goals}");
    }
    for r in c.results {
        let _ = writeln!(out, "\n#### {} ramp\n", r.label());
        let _ = writeln!(
            out,
            "| players | failed | server CPU (cores) | CPU per player | RSS | loss (count) | loss (seq) | UDP buffer drops | client CPU | delivered | first packet p50 / p95 |"
        );
        let _ = writeln!(
            out,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for s in &r.steps {
            let pp = per_player(s);
            let client_bound = s.client_cores.is_some_and(|c| c > 0.9);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.2} % | {:.2} % | {} | {}{} | {:.0} Mbit/s | {} |",
                s.players,
                s.failed,
                fmt_cores(s.cores),
                fmt_pct_core(pp.cpu),
                fmt_mib(s.rss),
                s.loss_rate * 100.0,
                s.loss_seq * 100.0,
                s.udp_drops,
                fmt_cores(s.client_cores),
                if client_bound { " (client-bound)" } else { "" },
                s.mbit_out,
                Latency::text(s.first_packet.as_ref()),
            );
        }
        if let Some(p) = &r.perf {
            let (at, body) = p.split_once('\n').unwrap_or((p.as_str(), ""));
            let _ = writeln!(
                out,
                "\n`perf` profile of the {} server (self time, top symbols), {at}:\n\n```\n{}\n```",
                r.label(),
                body.trim_end()
            );
        }
    }
    for n in c.notes {
        let _ = writeln!(out, "\nNote: {n}");
    }
    out
}

/// Samples `pid` with `perf record -g` for 8 s and returns the top of `perf report`.
pub async fn perf_profile(pid: u32) -> Result<String> {
    let perf = find_executable("perf").context("perf is not installed")?;
    let dir = std::env::temp_dir().join(format!("strata-bench-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("perf.data");
    let rec = tokio::process::Command::new(&perf)
        .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", "8"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    ensure!(rec.success(), "perf record failed: {rec}");
    let report = |sort: &'static str, limit: &'static str, take: usize| {
        let perf = perf.clone();
        let data = data.clone();
        async move {
            let rep = tokio::process::Command::new(&perf)
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "-g",
                    "none",
                    "--sort",
                    sort,
                ])
                .args(["--percent-limit", limit, "-i"])
                .arg(&data)
                .output()
                .await?;
            ensure!(
                rep.status.success(),
                "perf report failed: {}",
                String::from_utf8_lossy(&rep.stderr).trim()
            );
            let text = String::from_utf8_lossy(&rep.stdout).into_owned();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(take)
                .map(|l| {
                    // Drop the empty IPC columns and cut long (generic) symbol names.
                    let l = l.trim_end().trim_end_matches(['-', ' ']);
                    l.chars().take(150).collect()
                })
                .collect();
            ensure!(
                !lines.is_empty(),
                "perf report is empty: {}",
                String::from_utf8_lossy(&rep.stderr).trim()
            );
            Ok::<_, anyhow::Error>(lines.join("\n"))
        }
    };
    let by_dso = report("dso", "0.5", 12).await;
    let by_symbol = report("dso,symbol", "0.7", 40).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "by binary:\n{}\n\nby symbol:\n{}",
        by_dso?, by_symbol?
    ))
}
