//! The fan-out report: one summary table with ratios, one ramp table per server.

use std::fmt::Write as _;
use std::time::Duration;

mod figures;
mod perf;
mod simulcast;

pub use self::figures::{Latency, ServerResult, StepResult, label};
pub use self::perf::perf_profile;

use super::Kind;
use super::simulcast::Mode;
use super::source::Source;
use crate::bench::machine::Machine;

/// Strata must carry at least this many times Janus's players per core.
pub const GOAL: f64 = 2.0;
/// Strata's CPU per player below saturation must be at most this fraction of Janus's.
pub const GOAL_CPU: f64 = 0.5;
/// Strata's memory per player (RSS slope) must stay under this many bytes.
pub const GOAL_RSS_SLOPE: f64 = 64.0 * 1024.0;
/// Strata's first packet p50 (WHEP offer → first RTP) on loopback must stay under this.
pub const GOAL_FIRST_PACKET: Duration = Duration::from_millis(100);

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
    let mut out = render_preamble(c);
    let (summary, every_ramp_failed) = render_summary(&mut out, c);
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
        render_ramp(&mut out, r);
    }
    for n in c.notes {
        let _ = writeln!(out, "\nNote: {n}");
    }
    out
}

/// The heading and what was run where: machine, source, placement, loss rule.
fn render_preamble(c: &Context<'_>) -> String {
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
    out
}

/// Per-player figures at equal load: the largest step every server passed below 90 % of
/// its cores (at saturation CPU ÷ players is only cores ÷ players), else the largest passed.
fn common_load(c: &Context<'_>) -> Option<usize> {
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
    common_where(true).or_else(|| common_where(false))
}

/// The summary table, one row per ramp; returns each ramp's headline figures and whether
/// every ramp ended on a failed step.
fn render_summary(out: &mut String, c: &Context<'_>) -> (Vec<Summary>, bool) {
    let common = common_load(c);
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
        let (row, s, failed) = summary_row(r, c.max_loss, common);
        every_ramp_failed &= failed;
        let _ = writeln!(out, "{row}");
        summary.push(s);
    }
    (summary, every_ramp_failed)
}

/// One ramp's row of the summary table, its headline figures, and whether it ever failed.
fn summary_row(r: &ServerResult, max_loss: f64, common: Option<usize>) -> (String, Summary, bool) {
    let (best, failed) = r.capacity(max_loss);
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
    let at = common.and_then(|n| r.at(n, max_loss)).or(best);
    let pp = at.map(per_player);
    let slope = r.rss_slope(max_loss);
    let row = format!(
        "| {} | {capped}{} | {} of a core{} | {} | {} cores | {} |",
        r.label(),
        if client_bound { " (client-bound)" } else { "" },
        fmt_pct_core(pp.as_ref().and_then(|p| p.cpu)),
        at.map_or_else(String::new, |s| format!(" (N = {})", s.players)),
        fmt_kib(slope),
        fmt_cores(r.idle_cores),
        Latency::text(r.first_packet()),
    );
    let summary = Summary {
        label: r.label(),
        kind: r.kind,
        mode: r.mode,
        rtc_workers: r.rtc_workers,
        per_core: cap.map(|n| n as f64 / cores as f64),
        cpu: pp.as_ref().and_then(|p| p.cpu),
        memory: slope,
        first_packet: r.first_packet().map(|l| l.p50),
    };
    (row, summary, failed)
}

/// One ramp's table, step by step, and its `perf` profile if one was taken.
fn render_ramp(out: &mut String, r: &ServerResult) {
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
