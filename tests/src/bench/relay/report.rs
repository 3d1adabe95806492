//! The markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use super::latency::{LatencyResult, PACKET_BYTES, PERIOD};
use super::throughput::Throughput;
use crate::bench::stats::fmt_latency;

/// p99 per hop must stay under this at the largest stream count.
const P99_TARGET: Duration = Duration::from_millis(1);
/// Relay throughput must reach this fraction of raw quinn.
const THROUGHPUT_TARGET: f64 = 0.7;

fn mbit_per_stream() -> f64 {
    PACKET_BYTES as f64 * 8.0 / PERIOD.as_secs_f64() / 1e6
}

/// The report: latency table, throughput table, targets.
pub fn render(
    context: &str,
    lat: &[LatencyResult],
    raw: &Throughput,
    others: &[Throughput],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {context}.\n");
    render_latency(&mut out, lat);
    render_throughput(&mut out, raw, others);
    render_targets(&mut out, lat, raw, others);
    out
}

/// The hop-latency table, a row per stream count.
fn render_latency(out: &mut String, lat: &[LatencyResult]) {
    let _ = writeln!(
        out,
        "### Hop latency: N streams × {:.1} Mbit/s ({PACKET_BYTES}-byte packets, a group per ~1 s)\n",
        mbit_per_stream()
    );
    let _ = writeln!(
        out,
        "| streams | delivered pkt/s | wire p50 | wire p99 | wire p99.9 | wire max \
         | e2e p50 | e2e p99 | e2e max | CPU (cores) | waiting for CPU | lost | groups skipped |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in lat {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} of {} | {} |",
            r.streams,
            r.delivered_rate,
            fmt_latency(r.wire.percentile(0.5)),
            fmt_latency(r.wire.percentile(0.99)),
            fmt_latency(r.wire.percentile(0.999)),
            fmt_latency(Some(r.wire.max())),
            fmt_latency(r.end_to_end.percentile(0.5)),
            fmt_latency(r.end_to_end.percentile(0.99)),
            fmt_latency(Some(r.end_to_end.max())),
            r.cores,
            r.waiting,
            r.lost,
            r.sent,
            r.groups_skipped,
        );
    }
    let _ = writeln!(
        out,
        "\nwire: frame `send_us` (origin, just before the QUIC write) → decoded at the edge. \
         e2e: hub push at the origin → `Subscription::recv` at the edge. CPU: process CPU \
         seconds per second; waiting for CPU: seconds per second its threads were runnable \
         but not running (other load on the machine).\n"
    );
}

/// The throughput table: raw quinn first, then the relay's paths.
fn render_throughput(out: &mut String, raw: &Throughput, others: &[Throughput]) {
    let _ = writeln!(out, "### Throughput\n");
    let _ = writeln!(
        out,
        "| path | MB/s | CPU (cores) | waiting for CPU | MB per CPU-second | × raw MB/s \
         | × raw MB per CPU-s | groups skipped | QUIC packets lost |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for t in std::iter::once(raw).chain(others) {
        let skipped = match t.quic_lost {
            Some(_) => "–".to_owned(),
            None => t.skipped.to_string(),
        };
        let lost = match t.quic_lost {
            Some((lost, sent)) => format!("{:.2} %", 100.0 * lost as f64 / sent.max(1) as f64),
            None => "n/a".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {skipped} | {lost} |",
            t.label,
            t.mb_per_s(),
            t.cores(),
            t.waiting(),
            t.mb_per_cpu_s(),
            t.mb_per_s() / raw.mb_per_s(),
            t.mb_per_cpu_s() / raw.mb_per_cpu_s(),
        );
    }
}

/// The targets and whether this run met them.
fn render_targets(
    out: &mut String,
    lat: &[LatencyResult],
    raw: &Throughput,
    others: &[Throughput],
) {
    let _ = writeln!(out, "\n### Targets\n");
    if let Some(r) = lat.iter().max_by_key(|r| r.streams) {
        let p99 = r.wire.percentile(0.99);
        let met = p99.is_some_and(|p| p < P99_TARGET);
        let _ = writeln!(
            out,
            "- p99 per hop < 1 ms at {} streams: wire p99 {} → {}; e2e p99 {}",
            r.streams,
            fmt_latency(p99),
            verdict(met),
            fmt_latency(r.end_to_end.percentile(0.99)),
        );
    }
    if let Some(one) = others.first() {
        let ratio = one.mb_per_s() / raw.mb_per_s();
        let per_core = one.mb_per_cpu_s() / raw.mb_per_cpu_s();
        let _ = writeln!(
            out,
            "- ≥ {THROUGHPUT_TARGET}× raw quinn: {} at {ratio:.2}× MB/s ({per_core:.2}× per CPU-second) → {}",
            one.label,
            verdict(ratio >= THROUGHPUT_TARGET),
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}
