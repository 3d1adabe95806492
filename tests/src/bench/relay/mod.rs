//! `strata-bench relay`: one relay hop, origin → edge over QUIC on loopback.
//!
//! In one process, on 127.0.0.1 with mutual TLS from a fresh development CA:
//! a `RelayServer` serving a hub, and a `RelayClient` subscribed to its
//! streams.
//!
//! 1. **Latency** at N = 1, 50, 200 streams of 2 Mbit/s each: p50/p99/max of
//!    the frame's `send_us` to its decoding at the edge (exact samples at 1 µs
//!    resolution through the relay's hop observer hook), and of hub push to
//!    `Subscription::recv`.
//! 2. **Throughput** as fast as the edge takes packets, through one
//!    subscription and through many, in MB/s and MB per CPU-second of the
//!    whole process (`/proc/self/stat`), beside raw quinn bulk transfer on one
//!    stream with the relay's QUIC settings, measured in the same run.
//!
//! The report is markdown on stdout; progress goes to stderr.

mod cpu;
mod fixture;
mod histogram;
mod latency;
mod report;
mod throughput;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use strata_control::config::parse_duration;

use crate::bench::machine::Machine;

pub use latency::LatencyResult;

/// What a relay bench run measured, and its markdown report.
#[derive(Debug)]
pub struct RelayReport {
    /// One latency run per stream count, in the order asked for.
    pub latency: Vec<LatencyResult>,
    /// The report printed by `strata-bench relay`.
    pub text: String,
}

/// `strata-bench relay` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// CI smoke run: about a second per measurement, few streams.
    #[arg(long, env = "STRATA_BENCH_QUICK")]
    pub quick: bool,
    /// Stream counts of the latency runs [default: 1,50,200; 1,20 with --quick].
    #[arg(long, env = "STRATA_BENCH_STREAMS", value_delimiter = ',')]
    pub streams: Vec<usize>,
    /// Measured time of each run [default: 10s; 1s with --quick].
    #[arg(long, env = "STRATA_BENCH_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before each measurement [default: 2s; 300ms with --quick].
    #[arg(long, env = "STRATA_BENCH_WARMUP", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Subscriptions of the "many" throughput run [default: 50; 8 with --quick].
    #[arg(long, env = "STRATA_BENCH_MANY")]
    pub many: Option<usize>,
    /// Throughput rounds; each measures every path once, in turn, and the
    /// report sums them, so that drift in the machine's load hits all paths
    /// alike [default: 3; 1 with --quick].
    #[arg(long, env = "STRATA_BENCH_ROUNDS")]
    pub rounds: Option<usize>,
}

/// Run every measurement and print the report.
pub async fn run(args: RelayArgs) -> Result<()> {
    let report = measure(args).await?;
    print!("{}", report.text);
    Ok(())
}

/// Run every measurement; the caller prints (or checks) the result.
pub async fn measure(args: RelayArgs) -> Result<RelayReport> {
    let quick = args.quick;
    let streams = match args.streams.is_empty() {
        false => args.streams,
        true if quick => vec![1, 20],
        true => vec![1, 50, 200],
    };
    let duration = args.duration.unwrap_or(if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    let warmup = args.warmup.unwrap_or(if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    });
    let many = args.many.unwrap_or(if quick { 8 } else { 50 });
    ensure!(
        streams.iter().all(|&n| (1..=256).contains(&n)) && (1..=256).contains(&many),
        "stream counts must be 1..=256 (one connection's subscription limit)"
    );

    let machine = Machine::detect();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("relay bench on {machine} ({} build)", machine.profile());
    let tls = fixture::Tls::generate()?;
    let mut lat = Vec::new();
    for &n in &streams {
        eprintln!("latency: {n} streams…");
        let r = latency::run(&tls, n, warmup, duration).await?;
        ensure!(
            r.wire.count() > 0,
            "latency, {n} streams: nothing delivered"
        );
        lat.push(r);
    }
    let rounds = args.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let paths = throughput_rounds(&tls, rounds, many, warmup, duration).await?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (raw, others) = paths.split_first().context("no throughput measured")?;
    let load_before = load_before.split_whitespace().next().unwrap_or("?");
    let load_after = load.split_whitespace().next().unwrap_or("?");
    let context = format!(
        "{machine}; {} build; 1-min load average {load_before} before, {load_after} after",
        machine.profile()
    );
    let text = report::render(&context, &lat, raw, others);
    Ok(RelayReport { latency: lat, text })
}

/// The throughput paths (raw quinn, relay ×1, relay ×`many`, raw quinn in frame-sized
/// writes), each summed over `rounds` rounds.
async fn throughput_rounds(
    tls: &fixture::Tls,
    rounds: usize,
    many: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Vec<throughput::Throughput>> {
    let frame_write = latency::PACKET_BYTES + strata_relay::framing::FRAME_HEADER_LEN;
    let mut paths: Vec<throughput::Throughput> = Vec::new();
    for round in 1..=rounds {
        eprintln!(
            "throughput round {round}/{rounds}: raw quinn, relay ×1, relay ×{many}, raw quinn small writes…"
        );
        let measured = [
            throughput::raw_quinn(tls, 64 * 1024, "raw quinn, 64 KiB writes", warmup, duration)
                .await?,
            throughput::relay(tls, 1, warmup, duration).await?,
            throughput::relay(tls, many, warmup, duration).await?,
            throughput::raw_quinn(
                tls,
                frame_write,
                "raw quinn, 1220-byte writes",
                warmup,
                duration,
            )
            .await?,
        ];
        if paths.is_empty() {
            paths = measured.to_vec();
        } else {
            for (sum, m) in paths.iter_mut().zip(&measured) {
                sum.add(m);
            }
        }
    }
    Ok(paths)
}
