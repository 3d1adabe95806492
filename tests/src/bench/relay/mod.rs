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

use anyhow::{Result, ensure};
use strata_control::config::parse_duration;

/// `strata-bench relay` options.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Relay hop benchmark: latency per hop and throughput beside raw quinn")]
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
}

/// Run every measurement and print the report.
pub async fn run(args: RelayArgs) -> Result<()> {
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

    let machine = cpu::machine();
    eprintln!("relay bench on {machine}");
    let tls = fixture::Tls::generate()?;
    let mut lat = Vec::new();
    for &n in &streams {
        eprintln!("latency: {n} streams…");
        let r = latency::run(&tls, n, warmup, duration).await?;
        ensure!(r.wire.count() > 0, "latency, {n} streams: nothing delivered");
        lat.push(r);
    }
    eprintln!("throughput: raw quinn…");
    let raw = throughput::raw_quinn(&tls, 64 * 1024, "raw quinn, 64 KiB writes", warmup, duration)
        .await?;
    eprintln!("throughput: relay, 1 subscription…");
    let one = throughput::relay(&tls, 1, warmup, duration).await?;
    eprintln!("throughput: relay, {many} subscriptions…");
    let more = throughput::relay(&tls, many, warmup, duration).await?;
    eprintln!("throughput: raw quinn, frame-sized writes…");
    let small = throughput::raw_quinn(
        &tls,
        latency::PACKET_BYTES + strata_relay::framing::FRAME_HEADER_LEN,
        "raw quinn, 1220-byte writes",
        warmup,
        duration,
    )
    .await?;
    print!("{}", report::render(&machine, &lat, &raw, &[one, more, small]));
    Ok(())
}
