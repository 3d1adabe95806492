//! The simulcast rows of the fan-out report: each simulcast ramp against the single-layer
//! Strata ramp of the same run (same RTC workers), and the goal: players per core
//! within 10 % of the single-layer figure.

use std::fmt::Write as _;

use super::{Kind, Summary, ratio};
use crate::bench::fanout::simulcast::Mode;

/// Simulcast players per core at least this share of the single-layer figure.
pub const GOAL_SIMULCAST: f64 = 0.9;

/// The single-layer Strata ramp a simulcast ramp compares with.
fn single_for<'a>(summary: &'a [Summary], s: &Summary) -> Option<&'a Summary> {
    summary.iter().find(|o| {
        o.kind == Kind::Strata && o.mode == Mode::Single && o.rtc_workers == s.rtc_workers
    })
}

fn simulcast_ramps(summary: &[Summary]) -> impl Iterator<Item = &Summary> {
    summary
        .iter()
        .filter(|s| s.kind == Kind::Strata && s.mode.simulcast())
}

/// Table rows "simulcast ÷ single layer": players per core, CPU per player, memory.
pub(super) fn ratio_rows(summary: &[Summary]) -> String {
    let mut out = String::new();
    for s in simulcast_ramps(summary) {
        if let Some(single) = single_for(summary, s) {
            let _ = writeln!(
                out,
                "| **{} ÷ {}** | **{}** | {} | {} | | |",
                s.label,
                single.label,
                ratio(s.per_core, single.per_core),
                ratio(s.cpu, single.cpu),
                ratio(s.memory, single.memory),
            );
        }
    }
    out
}

/// Goal lines for the simulcast ramps.
pub(super) fn goal_lines(summary: &[Summary], every_ramp_failed: bool) -> String {
    let mut out = String::new();
    for s in simulcast_ramps(summary) {
        let Some(single) = single_for(summary, s) else {
            continue;
        };
        let verdict = match (s.per_core, single.per_core) {
            _ if !every_ramp_failed => "not decided (a ramp ended before loss exceeded the bound)",
            (Some(a), Some(b)) if b > 0.0 => match a / b >= GOAL_SIMULCAST {
                true => "met",
                false => "NOT met",
            },
            _ => "not measured",
        };
        let _ = writeln!(
            out,
            "- {}: players per core ≥ {GOAL_SIMULCAST}× the single-layer figure: **{verdict}**",
            s.label
        );
    }
    out
}
