//! The control-plane benchmark's report: two markdown tables and the conditions of the run.

use std::fmt::Write;

use anyhow::{Result, bail};

use super::Plan;
use super::target::Placement;
use crate::bench::machine::Machine;
use crate::bench::stats::{Sample, fmt_latency, fmt_rate, fmt_ratio, latency_ratio, ratio};

/// Resolve throughput ÷ ping throughput should be at least this.
const RESOLVE_TARGET: f64 = 0.9;
/// Claim latency ÷ raw transaction latency should be at most this.
const CLAIM_TARGET: f64 = 1.2;

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `DiagnosticsService/Ping`.
    Ping,
    /// `RoutingService/Resolve` answered from the cache.
    Resolve,
    /// `RoutingService/Publish` of a fresh stream.
    Claim,
    /// The claim's transaction straight to etcd.
    RawTxn,
}

impl Call {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Call::Ping => "Ping (floor)",
            Call::Resolve => "Resolve, from the cache",
            Call::Claim => "Claim (Publish: etcd txn)",
            Call::RawTxn => "Raw etcd txn (etcd-client)",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Row {
    /// The call.
    pub call: Call,
    /// What the callers saw.
    pub sample: Sample,
    /// CPU time per successful call, in microseconds, of the benchmark process, the control
    /// plane (when a separate process) and etcd.
    pub cpu_us: [Option<f64>; 3],
    /// Seconds per second the three processes' threads waited for a CPU.
    pub waiting: Option<f64>,
}

/// Everything measured in one run.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The measurements, in the order they ran.
    pub rows: Vec<Row>,
    /// etcd's version, as its status reports it.
    pub etcd_version: String,
    /// The store revision before and after the resolve runs (equal: nothing was written).
    pub resolve_revisions: (i64, i64),
    /// Keep-alives that failed during the run.
    pub keepalive_failures: u64,
}

/// The report of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The machine and build.
    pub machine: Machine,
    /// The options in effect.
    pub plan: Plan,
    /// The results.
    pub measured: Measured,
}

impl Report {
    fn sample(&self, call: Call, callers: usize) -> Option<&Sample> {
        self.measured
            .rows
            .iter()
            .find(|r| r.call == call && r.sample.callers == callers)
            .map(|r| &r.sample)
    }

    /// The report in markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "### Control plane: `strata-bench control`\n")?;
        self.write_calls(out)?;
        self.write_ratios(out)?;
        self.write_conditions(out)
    }

    /// The table of calls, one row per measurement.
    fn write_calls(&self, out: &mut String) -> std::fmt::Result {
        let (plan, m) = (&self.plan, &self.measured);
        let separate = matches!(plan.placement, Placement::Process(_));
        let cpu_head = if separate {
            "CPU µs/call: bench · control plane · etcd"
        } else {
            "CPU µs/call: bench+control plane · etcd"
        };
        writeln!(
            out,
            "| Call | Callers | Calls/s | p50 | p99 | p99.9 | {cpu_head} | Waiting for CPU | Calls | Errors |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for row in &m.rows {
            let s = &row.sample;
            let [bench, control, etcd] = row.cpu_us.map(fmt_cpu);
            let cpu = if separate {
                format!("{bench} · {control} · {etcd}")
            } else {
                format!("{bench} · {etcd}")
            };
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {cpu} | {} | {} | {} |",
                row.call.label(),
                s.callers,
                fmt_rate(s.throughput()),
                fmt_latency(s.p50()),
                fmt_latency(s.p99()),
                fmt_latency(s.p999()),
                row.waiting
                    .map_or_else(|| "–".into(), |w| format!("{w:.2} s/s")),
                s.calls(),
                s.errors
            )?;
        }
        writeln!(out)
    }

    /// The table of ratios against their targets.
    fn write_ratios(&self, out: &mut String) -> std::fmt::Result {
        let n = self.plan.concurrency;
        let tput = |call| self.sample(call, n).map_or(0.0, Sample::throughput);
        let (claim1, raw1) = (self.sample(Call::Claim, 1), self.sample(Call::RawTxn, 1));
        let lat = |f: fn(&Sample) -> Option<std::time::Duration>| {
            latency_ratio(claim1.and_then(f), raw1.and_then(f))
        };
        let ratios = [
            (
                format!("Resolve ÷ Ping, throughput, {n} callers"),
                ratio(tput(Call::Resolve), tput(Call::Ping)),
                Some(Target::AtLeast(RESOLVE_TARGET)),
            ),
            (
                "Claim ÷ raw txn, p50 latency, 1 caller".into(),
                lat(Sample::p50),
                Some(Target::AtMost(CLAIM_TARGET)),
            ),
            (
                "Claim ÷ raw txn, p99 latency, 1 caller".into(),
                lat(Sample::p99),
                Some(Target::AtMost(CLAIM_TARGET)),
            ),
            (
                format!("Claim ÷ raw txn, throughput, {n} callers"),
                ratio(tput(Call::Claim), tput(Call::RawTxn)),
                None,
            ),
            (
                "Resolve ÷ Ping, p50 latency, 1 caller".into(),
                latency_ratio(
                    self.sample(Call::Resolve, 1).and_then(Sample::p50),
                    self.sample(Call::Ping, 1).and_then(Sample::p50),
                ),
                None,
            ),
        ];
        writeln!(out, "| Ratio | Value | Target | Met |")?;
        writeln!(out, "|---|---:|---:|---|")?;
        for (name, value, target) in ratios {
            let (t, met) = match target {
                Some(t) => (t.to_string(), t.met(value)),
                None => ("–".into(), "(info)"),
            };
            writeln!(out, "| {name} | {} | {t} | {met} |", fmt_ratio(value))?;
        }
        writeln!(out)
    }

    /// The conditions of the run: machine, build, placement, etcd, load, side effects.
    fn write_conditions(&self, out: &mut String) -> std::fmt::Result {
        let (plan, m) = (&self.plan, &self.measured);
        let n = plan.concurrency;
        let build = if self.machine.release {
            "release (debug assertions off)"
        } else {
            "DEBUG (debug assertions on): numbers are not representative"
        };
        writeln!(out, "- Machine: {}", self.machine)?;
        writeln!(out, "- Build: {build}")?;
        match &plan.placement {
            Placement::Process(bin) => writeln!(
                out,
                "- Control plane: separate process `{}` (RUST_LOG=warn) on the same machine; \
                 its runtime, the benchmark's and etcd share the {} CPUs",
                bin.display(),
                self.machine.nproc
            )?,
            Placement::InProcess => writeln!(
                out,
                "- Control plane: IN THIS PROCESS: the server and the benchmark's callers share \
                 one tokio runtime ({} worker threads)",
                self.machine.nproc
            )?,
        }
        if let Some(note) = &plan.placement_note {
            writeln!(out, "  - note: {note}")?;
        }
        writeln!(
            out,
            "- etcd {}: one member on loopback, data dir under {}, default fsync",
            m.etcd_version,
            std::env::temp_dir().display()
        )?;
        writeln!(
            out,
            "- Load: closed loop; {n} callers over {} HTTP/2 connections (the raw txn: {} \
             etcd-client connections; the control plane itself uses one to etcd); {} warm-up \
             then {} measured per row",
            plan.connections,
            plan.connections,
            humanize(plan.warmup),
            humanize(plan.duration)
        )?;
        let (r0, r1) = m.resolve_revisions;
        let writes = if r0 == r1 {
            format!("none (etcd revision {r0} before and after)")
        } else {
            format!("YES: etcd revision went from {r0} to {r1}")
        };
        writeln!(out, "- Store writes during the resolve rows: {writes}")?;
        writeln!(out, "- Keep-alive failures: {}", m.keepalive_failures)?;
        writeln!(
            out,
            "- CPU µs/call: user+system CPU of each process during the row (/proc, 10 ms \
             ticks) divided by its calls; it includes background work (cache watch, \
             keep-alives, etcd's own housekeeping)"
        )?;
        writeln!(
            out,
            "- Waiting for CPU: time the threads of the three processes were runnable but not \
             running (/proc/PID/task/*/schedstat), per second of the row; well above 0 means \
             the machine was contended (by other load, or by the three processes themselves)"
        )?;
        Ok(())
    }

    /// An error when any call or keep-alive failed.
    pub fn check(&self) -> Result<()> {
        let m = &self.measured;
        let errors: u64 = m.rows.iter().map(|r| r.sample.errors).sum();
        if errors > 0 {
            let first = m
                .rows
                .iter()
                .find_map(|r| r.sample.first_error.clone())
                .unwrap_or_default();
            bail!("{errors} calls failed; the first: {first}");
        }
        if m.keepalive_failures > 0 {
            bail!("{} keep-alives failed", m.keepalive_failures);
        }
        Ok(())
    }
}

/// A target for a ratio.
#[derive(Debug, Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn met(self, value: Option<f64>) -> &'static str {
        match (self, value) {
            (_, None) => "–",
            (Target::AtLeast(t), Some(v)) if v >= t => "yes",
            (Target::AtMost(t), Some(v)) if v <= t => "yes",
            _ => "**no**",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtLeast(t) => write!(f, "≥ {t}"),
            Target::AtMost(t) => write!(f, "≤ {t}"),
        }
    }
}

fn fmt_cpu(us: Option<f64>) -> String {
    us.map_or_else(|| "–".into(), |us| format!("{us:.0}"))
}

fn humanize(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
