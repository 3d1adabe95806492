//! `strata-bench control`: what the control plane adds on top of gRPC and etcd.
//!
//! One run on loopback measures four calls against one etcd and one control plane:
//!
//! 1. `DiagnosticsService/Ping`, a no-op unary RPC on the same server: the floor;
//! 2. `RoutingService/Resolve` in steady state, answered from the cache without a store write;
//! 3. `RoutingService/Publish` of fresh streams: one create-if-absent etcd transaction each;
//! 4. that transaction sent to etcd directly with `etcd-client`.
//!
//! Each is run closed loop with `--concurrency` callers (throughput) and with one caller
//! (latency without queueing), after a warm-up. The report compares resolve with ping
//! throughput and the claim with the raw transaction's latency.

mod callers;
mod fixture;
mod report;
pub(crate) mod target;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use strata_control::config::parse_duration;
use strata_control::keys::{self, Keys, MainRecord};
use strata_proto::v1;
use tonic::transport::{Channel, Endpoint};

use crate::bench::cpu::Snapshot;
use crate::bench::load::{self, Caller};
use crate::bench::machine::Machine;
use crate::etcd::EtcdProcess;
use callers::{Claim, FreshNames, Ping, RawTxn, Resolve};
use fixture::{CLAIMER, Fixture, LIVE_STREAM};
use report::{Call, Measured, Report, Row};
use target::{Placement, Target};

/// Lease TTL of the benchmark's nodes; renewed every third of it.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// Prefix of the raw transactions' keys: not under the control plane's `/strata/`, so its
/// cache does not follow them.
const RAW_PREFIX: &str = "/strata-bench-raw/";

/// `strata-bench control` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// CI smoke run: about one second per measurement and few callers.
    #[arg(long, env = "STRATA_BENCH_QUICK")]
    pub quick: bool,
    /// Measured time of each measurement, e.g. "5s" [default: 5s; 800ms with --quick].
    #[arg(long, env = "STRATA_BENCH_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before each measurement [default: 1s; 200ms with --quick].
    #[arg(long, env = "STRATA_BENCH_WARMUP", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Concurrent callers of the throughput runs [default: 32; 4 with --quick].
    #[arg(long, env = "STRATA_BENCH_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// HTTP/2 connections the callers share [default: 4; 2 with --quick].
    #[arg(long, env = "STRATA_BENCH_CONNECTIONS")]
    pub connections: Option<usize>,
    /// Run the control plane as a separate `strata-control` process (the default when that
    /// binary is found next to this one).
    #[arg(
        long,
        env = "STRATA_BENCH_SEPARATE_PROCESS",
        conflicts_with = "in_process"
    )]
    pub separate_process: bool,
    /// Run the control plane inside this process, on the benchmark's own runtime.
    #[arg(long, env = "STRATA_BENCH_IN_PROCESS")]
    pub in_process: bool,
    /// The `strata-control` binary [default: next to this binary].
    #[arg(long, env = "STRATA_BENCH_CONTROL_BIN")]
    pub control_bin: Option<PathBuf>,
}

/// The options with defaults applied and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Measured time per measurement.
    pub duration: Duration,
    /// Warm-up per measurement.
    pub warmup: Duration,
    /// Callers of the throughput runs.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Where the control plane runs.
    pub placement: Placement,
    /// Why it runs there, for the report.
    pub placement_note: Option<String>,
}

impl Plan {
    fn new(args: &ControlArgs) -> Result<Self> {
        let q = args.quick;
        let duration = args.duration.unwrap_or(if q {
            Duration::from_millis(800)
        } else {
            Duration::from_secs(5)
        });
        let warmup = args.warmup.unwrap_or(if q {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        });
        let concurrency = args.concurrency.unwrap_or(if q { 4 } else { 32 });
        let connections = args
            .connections
            .unwrap_or(if q { 2 } else { 4 })
            .min(concurrency);
        ensure!(
            (1..=4096).contains(&concurrency),
            "--concurrency must be 1..=4096"
        );
        ensure!(connections >= 1, "--connections must be at least 1");
        ensure!(
            duration > Duration::ZERO && duration <= Duration::from_secs(600),
            "--duration must be more than 0 and at most 10m"
        );
        ensure!(
            warmup <= Duration::from_secs(600),
            "--warmup must be at most 10m"
        );
        let (placement, placement_note) = placement(args)?;
        Ok(Self {
            duration,
            warmup,
            concurrency,
            connections,
            placement,
            placement_note,
        })
    }
}

fn placement(args: &ControlArgs) -> Result<(Placement, Option<String>)> {
    placement_of(
        args.in_process,
        args.separate_process,
        args.control_bin.as_ref(),
    )
}

/// Where the control plane runs: in process when asked, else the `strata-control` binary given
/// or found next to this one (in process when there is none and no process was demanded).
pub(crate) fn placement_of(
    in_process: bool,
    separate_process: bool,
    control_bin: Option<&PathBuf>,
) -> Result<(Placement, Option<String>)> {
    if in_process {
        return Ok((Placement::InProcess, None));
    }
    let bin = match control_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("strata-control"),
    };
    if bin.is_file() {
        let note = stale_note(&bin);
        return Ok((Placement::Process(bin), note));
    }
    if separate_process || control_bin.is_some() {
        bail!(
            "no strata-control binary at {}: build it first (cargo build [--release] -p \
             strata-control) or pass --control-bin",
            bin.display()
        );
    }
    let note = format!(
        "{} not found, so in-process; build it (cargo build --release -p strata-control) to \
         run the control plane as a separate process",
        bin.display()
    );
    Ok((Placement::InProcess, Some(note)))
}

/// A warning when the control binary was built well before this one (one `cargo build` links
/// both within seconds): it may predate control-plane changes this binary was built with.
fn stale_note(bin: &std::path::Path) -> Option<String> {
    const SLACK: Duration = Duration::from_secs(120);
    let modified = |p: &std::path::Path| p.metadata().and_then(|m| m.modified()).ok();
    let this = modified(&std::env::current_exe().ok()?)?;
    let age = this.duration_since(modified(bin)?).ok()?;
    (age > SLACK).then(|| {
        format!(
            "{} was built {} min before this binary: rebuild it if the control plane changed",
            bin.display(),
            age.as_secs() / 60
        )
    })
}

/// Runs the benchmark and prints the report (markdown) on stdout. Fails after printing if any
/// call failed.
pub async fn run(args: ControlArgs) -> Result<()> {
    let plan = Plan::new(&args)?;
    let machine = Machine::detect();
    let etcd = EtcdProcess::start().await.context("starting etcd")?;
    let target = Target::start(&plan.placement, &etcd.endpoint(), LEASE_TTL)
        .await
        .context("starting the control plane")?;
    let measured = measure(&plan, &etcd, &target).await;
    let stopped = target.stop().await;
    let report = Report {
        machine,
        plan,
        measured: measured?,
    };
    println!("{}", report.markdown());
    stopped.context("stopping the control plane")?;
    report.check()
}

async fn measure(plan: &Plan, etcd: &EtcdProcess, target: &Target) -> Result<Measured> {
    let runner = Runner {
        plan,
        pids: [Some(std::process::id()), target.pid(), etcd.pid()],
    };
    let mut channels = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        channels.push(connect(&target.url()).await?);
    }
    let mut etcds = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        etcds.push(etcd_client::Client::connect([etcd.endpoint()], None).await?);
    }
    let mut etcd0 = etcds[0].clone();
    let etcd_version = etcd0.status().await?.version().to_owned();

    let mut fixture = Fixture::setup(channels[0].clone()).await?;
    let lease = etcd0
        .lease_grant(LEASE_TTL.as_secs() as i64, None)
        .await?
        .id();
    fixture.keep_etcd_lease_alive(etcd0.clone(), lease, LEASE_TTL / 3);

    let (n, ch) = (plan.concurrency, |i: usize| {
        channels[i % channels.len()].clone()
    });
    let mut rows = Vec::new();

    let ping = |i| Ping(v1::diagnostics_service_client::DiagnosticsServiceClient::new(ch(i)));
    rows.push(runner.row(Call::Ping, n, ping).await?);
    rows.push(runner.row(Call::Ping, 1, ping).await?);

    let resolve = |i: usize| {
        let (node, region) = fixture.resolvers[i % fixture.resolvers.len()].clone();
        Resolve {
            client: v1::routing_service_client::RoutingServiceClient::new(ch(i)),
            request: v1::ResolveRequest {
                stream: LIVE_STREAM.into(),
                region,
                node_id: node,
                unreachable: None,
            },
        }
    };
    let before = revision(&mut etcd0).await?;
    rows.push(runner.row(Call::Resolve, n, resolve).await?);
    rows.push(runner.row(Call::Resolve, 1, resolve).await?);
    let resolve_revisions = (before, revision(&mut etcd0).await?);

    rows.extend(claim_rows(&runner, &channels, &etcds, lease).await?);

    Ok(Measured {
        rows,
        etcd_version,
        resolve_revisions,
        keepalive_failures: fixture.keepalive_failures(),
    })
}

/// The claim and raw-transaction rows: one caller first (the latency comparison), then
/// `--concurrency` callers, alternating claim and raw transaction so that both see an etcd
/// of about the same size.
async fn claim_rows(
    runner: &Runner<'_>,
    channels: &[Channel],
    etcds: &[etcd_client::Client],
    lease: i64,
) -> Result<Vec<Row>> {
    let (n, ch) = (runner.plan.concurrency, |i: usize| {
        channels[i % channels.len()].clone()
    });
    let claim = |tag: &'static str| {
        move |i: usize| Claim {
            client: v1::routing_service_client::RoutingServiceClient::new(ch(i)),
            node_id: CLAIMER.into(),
            names: FreshNames::new(format!("{tag}{i}")),
        }
    };
    let value = keys::encode(&MainRecord {
        node_id: CLAIMER.into(),
        region: "eu".into(),
        relay_addr: "127.0.0.1:4433".into(),
        started_at_ms: 0,
    });
    let raw = |tag: &'static str| {
        let value = value.clone();
        move |i: usize| RawTxn {
            client: etcds[i % etcds.len()].clone(),
            keys: Keys::new(RAW_PREFIX),
            lease,
            value: value.clone(),
            names: FreshNames::new(format!("{tag}{i}")),
        }
    };
    Ok(vec![
        runner.row(Call::Claim, 1, claim("s")).await?,
        runner.row(Call::RawTxn, 1, raw("s")).await?,
        runner.row(Call::Claim, n, claim("c")).await?,
        runner.row(Call::RawTxn, n, raw("c")).await?,
    ])
}

/// Runs the rows of one benchmark run and measures the CPU its processes use.
struct Runner<'a> {
    plan: &'a Plan,
    /// The benchmark itself, the control plane (when a separate process), etcd.
    pids: [Option<u32>; 3],
}

impl Runner<'_> {
    /// Runs `callers` callers made by `make`: a warm-up, then the measurement.
    async fn row<C: Caller>(
        &self,
        call: Call,
        callers: usize,
        make: impl Fn(usize) -> C,
    ) -> Result<Row> {
        eprintln!(
            "strata-bench control: {}, {callers} caller(s)…",
            call.label()
        );
        let callers: Vec<C> = (0..callers).map(make).collect();
        let (_, callers) = load::run(callers, self.plan.warmup).await?;
        let before = Snapshot::take(&self.pids);
        let (sample, _) = load::run(callers, self.plan.duration).await?;
        let after = Snapshot::take(&self.pids);
        let cpu = after.per_call_since(&before, sample.calls());
        let waiting = after.waiting_since(&before, sample.elapsed);
        Ok(Row {
            call,
            sample,
            cpu_us: [cpu[0], cpu[1], cpu[2]],
            waiting,
        })
    }
}

async fn connect(url: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// The store's current revision.
async fn revision(client: &mut etcd_client::Client) -> Result<i64> {
    let resp = client.get("\0strata-bench-revision", None).await?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}
