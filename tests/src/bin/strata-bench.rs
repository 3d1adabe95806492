//! `strata-bench`: Strata's benchmarks, one subcommand each, run on loopback.
//!
//! ```text
//! cargo build --release -p strata-control
//! cargo run --release -p strata-tests --bin strata-bench -- control
//! cargo run --release -p strata-tests --bin strata-bench -- relay
//! cargo run --release -p strata-tests --bin strata-bench -- fanout   # beside Janus
//! cargo run --release -p strata-tests --bin strata-bench -- wan      # root: namespaces
//! cargo run --release -p strata-tests --bin strata-bench -- scale    # simulated nodes
//! cargo run --release -p strata-tests --bin strata-bench -- ingest   # RTMP/SRT beside WHIP
//! bench/run.sh                                                       # all of them
//! ```

use clap::{Parser, Subcommand};
use strata_tests::bench::control::ControlArgs;
use strata_tests::bench::fanout::FanoutArgs;
use strata_tests::bench::ingest::IngestArgs;
use strata_tests::bench::relay::RelayArgs;
use strata_tests::bench::scale::ScaleArgs;
use strata_tests::bench::wan::WanArgs;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "strata-bench",
    version,
    about = "Strata benchmarks (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Control plane: ping floor, cached resolve, claim (etcd txn) and the raw etcd txn.
    Control(ControlArgs),
    /// Relay hop origin → edge over QUIC: latency per hop, throughput beside raw quinn.
    Relay(RelayArgs),
    /// WebRTC fan-out of one stream to many players, Strata beside Janus: players per core.
    Fanout(FanoutArgs),
    /// Three regions in network namespaces over emulated WAN links: first frame, latency, bytes.
    Wan(WanArgs),
    /// Thousands of simulated nodes against real replicas and etcd: writes, latency, memory.
    Scale(ScaleArgs),
    /// RTMP and SRT ingest beside WHIP: node CPU per ingest, glass-to-glass latency.
    Ingest(IngestArgs),
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr and stay quiet by default: stdout carries the report.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Control(args) => strata_tests::bench::control::run(args).await,
        Command::Relay(args) => strata_tests::bench::relay::run(args).await,
        Command::Fanout(args) => strata_tests::bench::fanout::run(args).await,
        Command::Wan(args) => strata_tests::bench::wan::run(args).await,
        Command::Scale(args) => strata_tests::bench::scale::run(args).await,
        Command::Ingest(args) => strata_tests::bench::ingest::run(args).await,
    }
}
