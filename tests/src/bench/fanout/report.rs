//! The fan-out report: one summary table with ratios, one ramp table per server.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use super::Kind;
use super::source::Source;
use crate::bench::machine::Machine;
use crate::grpcurl::find_executable;

/// Strata must carry at least this many times Janus's players per core.
pub const GOAL: f64 = 1.5;

/// One step of a ramp.
#[derive(Debug, Clone)]
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
            "{server}: {} players ({} failed) cpu {} client {} loss {:.2}% (seq {:.2}%) udp drops {} rss {} out {:.0} Mbit/s (setup {:.1}s)",
            self.players,
            self.failed,
            fmt_cores(self.cores),
            fmt_cores(self.client_cores),
            self.loss_rate * 100.0,
            self.loss_seq * 100.0,
            self.udp_drops,
            fmt_mib(self.rss),
            self.mbit_out,
            self.setup.as_secs_f64()
        )
    }
}

/// One server's ramp.
#[derive(Debug, Clone)]
pub struct ServerResult {
    /// Which server.
    pub kind: Kind,
    /// Steps in order; the last one failed unless the ramp ran out of steps.
    pub steps: Vec<StepResult>,
    /// CPU with the source flowing and no players.
    pub idle_cores: Option<f64>,
    /// Resident memory with the source flowing and no players.
    pub base_rss: Option<u64>,
    /// Players that failed to connect over the whole ramp.
    pub connect_failures: usize,
    /// Median time from the start of signalling to the first RTP packet.
    pub first_packet_p50: Option<Duration>,
    /// `perf report` of the server under the last step's load.
    pub perf: Option<String>,
}

impl ServerResult {
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
    pub window: Duration,
    pub max_loss: f64,
    pub pinned: Option<(usize, usize)>,
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

/// Per-player figures at `players`.
struct PerPlayer {
    cpu: Option<f64>,
    memory: Option<f64>,
}

fn per_player(r: &ServerResult, s: &StepResult) -> PerPlayer {
    let n = s.players.max(1) as f64;
    PerPlayer {
        cpu: s.cores.map(|c| c / n),
        memory: match (s.rss, r.base_rss) {
            (Some(rss), Some(base)) => Some((rss as f64 - base as f64) / n),
            _ => None,
        },
    }
}

type Summary = (Kind, Option<f64>, Option<f64>, Option<f64>);

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
    match c.pinned {
        Some((server, client)) => {
            let _ = writeln!(
                out,
                "Server pinned to CPU {server} (`taskset`), load client to CPU {client}. "
            );
        }
        None => {
            let _ = writeln!(out, "Nothing pinned. ");
        }
    }
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
    // its core (at saturation CPU ÷ players is only 1 ÷ players), else the largest passed.
    let common_where = |unsaturated: bool| {
        c.results
            .iter()
            .map(|r| {
                r.passing(c.max_loss)
                    .filter(|s| !unsaturated || s.cores.is_some_and(|x| x < 0.9))
                    .map(|s| s.target)
                    .collect::<std::collections::BTreeSet<_>>()
            })
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .and_then(|s| s.last().copied())
    };
    let common = common_where(true).or_else(|| common_where(false));

    let _ = writeln!(
        out,
        "| server | players per core (loss ≤ {:.0} %) | CPU per player (at N players) | memory per player | idle CPU (source only) | first packet p50 |",
        c.max_loss * 100.0,
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    // (server, players per core, CPU per player, memory per player)
    let mut summary: Vec<Summary> = Vec::new();
    let mut every_ramp_failed = true;
    for r in c.results {
        let (best, failed) = r.capacity(c.max_loss);
        every_ramp_failed &= failed;
        let cap = best.map(|s| s.players);
        let capped = match (cap, failed) {
            (Some(n), true) => n.to_string(),
            (Some(n), false) => format!("≥ {n} (ramp ended)"),
            (None, _) => "0".into(),
        };
        let client_bound = r
            .steps
            .last()
            .filter(|_| failed)
            .and_then(|s| s.client_cores)
            .is_some_and(|c| c > 0.9);
        // At the load every server carried, else at this server's own largest passing step.
        let at = common.and_then(|n| r.at(n, c.max_loss)).or(best);
        let pp = at.map(|s| per_player(r, s));
        let _ = writeln!(
            out,
            "| {} | {capped}{} | {} of a core{} | {} | {} cores | {} |",
            r.kind.name(),
            if client_bound { " (client-bound)" } else { "" },
            fmt_pct_core(pp.as_ref().and_then(|p| p.cpu)),
            at.map_or_else(String::new, |s| format!(" (N = {})", s.players)),
            fmt_kib(pp.as_ref().and_then(|p| p.memory)),
            fmt_cores(r.idle_cores),
            r.first_packet_p50.map_or_else(
                || "–".into(),
                |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)
            ),
        );
        summary.push((
            r.kind,
            cap.map(|n| n as f64),
            pp.as_ref().and_then(|p| p.cpu),
            pp.as_ref().and_then(|p| p.memory),
        ));
    }
    let strata = summary.iter().find(|s| s.0 == Kind::Strata);
    let janus = summary.iter().find(|s| s.0 == Kind::Janus);
    if let (Some(s), Some(j)) = (strata, janus) {
        let _ = writeln!(
            out,
            "| **Strata ÷ Janus** | **{}** | {} | {} | | |",
            ratio(s.1, j.1),
            ratio(s.2, j.2),
            ratio(s.3, j.3),
        );
        let verdict = match (s.1, j.1) {
            _ if !every_ramp_failed => "not decided (a ramp ended before loss exceeded the bound)",
            (Some(a), Some(b)) if b > 0.0 && a / b >= GOAL => "met",
            (Some(_), Some(_)) => "NOT met",
            _ => "not measured",
        };
        let _ = writeln!(
            out,
            "\nGoal Strata ≥ {GOAL}× Janus players per core: **{verdict}**."
        );
    }
    for r in c.results {
        let _ = writeln!(out, "\n#### {} ramp\n", r.kind.name());
        let _ = writeln!(
            out,
            "| players | failed | server CPU (cores) | CPU per player | RSS | loss (count) | loss (seq) | UDP buffer drops | client CPU | delivered |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for s in &r.steps {
            let pp = per_player(r, s);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.2} % | {:.2} % | {} | {} | {:.0} Mbit/s |",
                s.players,
                s.failed,
                fmt_cores(s.cores),
                fmt_pct_core(pp.cpu),
                fmt_mib(s.rss),
                s.loss_rate * 100.0,
                s.loss_seq * 100.0,
                s.udp_drops,
                fmt_cores(s.client_cores),
                s.mbit_out,
            );
        }
        if let Some(p) = &r.perf {
            let (at, body) = p.split_once('\n').unwrap_or((p.as_str(), ""));
            let _ = writeln!(
                out,
                "\n`perf` profile of the {} server (self time, top symbols), {at}:\n\n```\n{}\n```",
                r.kind.name(),
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
