//! `strata-dev`: a whole Strata cluster on this machine, every component its own process on
//! 127.0.0.1: etcd (or the memory store when etcd is not installed), one control plane, nodes
//! in several regions, and a test publisher looping the fixture clip into stream `demo`.
//!
//! Prints every address, writes them to a JSON file once the cluster is ready, and runs until
//! Ctrl-C or SIGTERM; then it stops the publisher, each node (SIGTERM: drain, deregister), the
//! control plane and etcd, in that order. Run it with `scripts/dev.sh`, which builds first.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use strata_common::names::{self, NameKind};
use strata_tests::etcd::EtcdProcess;
use strata_tests::media::{TestPublisher, vp8_clip};
use strata_tests::procs::{ProcCluster, ProcOptions, StoreMode, child_command, etcd_installed};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep, timeout};

#[path = "strata-dev/report.rs"]
mod report;

use report::{print_summary, write_json};

/// The stream the test publisher sends.
const STREAM: &str = "demo";
/// How long etcd may take to start.
const ETCD_START_WITHIN: Duration = Duration::from_secs(40);
/// How long etcd may take to stop.
const ETCD_STOP_WITHIN: Duration = Duration::from_secs(15);
/// How often the processes are checked while the cluster runs.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A local Strata cluster: etcd, a control plane, nodes in several regions and a test stream.
#[derive(Debug, Parser)]
#[command(name = "strata-dev", version)]
struct Args {
    /// Regions, comma separated; node ids are `<region>-<n>`.
    #[arg(long, value_delimiter = ',', default_value = "eu,us")]
    regions: Vec<String>,

    /// Nodes started in each region.
    #[arg(long, default_value_t = 3)]
    nodes_per_region: usize,

    /// Use consecutive ports from here instead of free ones: the control plane's gRPC and
    /// HTTP ports, then HTTP, relay (UDP), WebRTC (UDP), RTMP (TCP) and SRT (UDP) of each node. etcd always takes
    /// free ports.
    #[arg(long)]
    port_base: Option<u16>,

    /// Do not publish the test stream `demo`.
    #[arg(long)]
    no_publisher: bool,

    /// Where to write the cluster description (default: cluster.json in a fresh temp dir).
    #[arg(long)]
    json: Option<PathBuf>,

    /// Keep the process logs after a clean stop.
    #[arg(long)]
    keep_logs: bool,

    /// Internal: run etcd in this process's own process group (see `EtcdHolder`).
    #[arg(long, hide = true)]
    etcd_holder: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,webrtc=error,rtc=error,rtc_ice=error".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.etcd_holder {
        return runtime.block_on(etcd_holder());
    }
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    validate(&args)?;
    // Installed before anything starts, so that a signal during start-up is not lost.
    let mut stop = StopSignals::new()?;

    let (etcd_holder, store) = start_store().await?;
    let opts = cluster_options(&args, store);
    let store_name = match opts.store {
        StoreMode::Memory => "the memory store",
        _ => "etcd",
    };
    println!(
        "started {store_name}; starting a control plane and {} nodes…",
        opts.nodes.len()
    );
    let started = tokio::select! {
        r = ProcCluster::start(opts) => Some(r?),
        () = stop.recv() => None,
    };
    let Some(mut cluster) = started else {
        println!("stopped during start-up");
        if let Some(holder) = etcd_holder {
            holder.stop().await?;
        }
        return Ok(());
    };

    // Any failure from here on still stops the cluster in order.
    let mut publisher = None;
    let mut result = Ok(());
    if !args.no_publisher {
        tokio::select! {
            r = start_publisher(&cluster) => match r {
                Ok(p) => publisher = Some(p),
                Err(e) => result = Err(e),
            },
            () = stop.recv() => {}
        }
    }
    if result.is_ok() && (args.no_publisher || publisher.is_some()) {
        match write_json(&args, &cluster, publisher.is_some()) {
            Ok(json) => {
                print_summary(&cluster, etcd_holder.as_ref(), publisher.is_some(), &json);
                watch(&mut cluster, &mut stop).await;
            }
            Err(e) => result = Err(e),
        }
    }
    if let Err(e) = &result {
        eprintln!("strata-dev: {e:#}");
    }
    shutdown(&args, publisher, cluster, etcd_holder, result).await
}

/// etcd when installed (a private one, stopped with the cluster), else the memory store.
async fn start_store() -> Result<(Option<EtcdHolder>, StoreMode)> {
    if etcd_installed() {
        let holder = EtcdHolder::start().await?;
        let endpoint = holder.endpoint.clone();
        return Ok((Some(holder), StoreMode::External(vec![endpoint])));
    }
    eprintln!();
    eprintln!("!!! etcd is not installed: the control plane runs on its MEMORY store.");
    eprintln!("!!! Single replica, nothing survives a restart. Run scripts/setup.sh for etcd.");
    eprintln!();
    Ok((None, StoreMode::Memory))
}

/// The cluster: `--nodes-per-region` nodes in each of `--regions`, on `store`.
fn cluster_options(args: &Args, store: StoreMode) -> ProcOptions {
    let nodes: Vec<(String, String)> = args
        .regions
        .iter()
        .flat_map(|r| (1..=args.nodes_per_region).map(move |i| (format!("{r}-{i}"), r.clone())))
        .collect();
    ProcOptions {
        store,
        nodes,
        port_base: args.port_base,
        keep_dir: true,
        ..ProcOptions::default()
    }
}

/// Stops everything in order (publisher, cluster, etcd); `result` with any failure to stop
/// added. The cluster's directory is kept with `--keep-logs` or on failure.
async fn shutdown(
    args: &Args,
    publisher: Option<TestPublisher>,
    mut cluster: ProcCluster,
    etcd_holder: Option<EtcdHolder>,
    mut result: Result<()>,
) -> Result<()> {
    println!("stopping…");
    if let Some(p) = publisher
        && let Err(e) = timeout(Duration::from_secs(5), p.stop())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
    {
        eprintln!("stopping the test publisher: {e:#}");
    }
    if let Err(e) = cluster.stop().await {
        eprintln!("{e:#}");
        result = result.and(Err(e));
    }
    if let Some(holder) = etcd_holder
        && let Err(e) = holder.stop().await
    {
        eprintln!("{e:#}");
        result = result.and(Err(e));
    }
    // Dropping the cluster removes its directory unless told otherwise, and says so.
    cluster.set_keep_dir(args.keep_logs || result.is_err());
    drop(cluster);
    if result.is_ok() {
        println!("stopped; no process left");
    }
    result
}

async fn start_publisher(cluster: &ProcCluster) -> Result<TestPublisher> {
    let first = cluster
        .nodes()
        .iter()
        .find(|n| n.region() == "eu")
        .or_else(|| cluster.nodes().first())
        .context("no node")?;
    let http = first.http_url();
    let clip = vp8_clip()?;
    timeout(
        Duration::from_secs(30),
        TestPublisher::start(&http, STREAM, clip),
    )
    .await
    .context("the test publisher did not connect within 30 s")?
    .with_context(|| format!("publishing {STREAM} to {http}"))
}

fn validate(args: &Args) -> Result<()> {
    ensure!(!args.regions.is_empty(), "--regions: give at least one");
    ensure!(args.nodes_per_region >= 1, "--nodes-per-region: at least 1");
    for r in &args.regions {
        names::validate(NameKind::Region, r).map_err(|e| anyhow::anyhow!("--regions: {e}"))?;
    }
    let mut seen = std::collections::HashSet::new();
    for r in &args.regions {
        ensure!(seen.insert(r), "--regions: {r} given twice");
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM, telling the user when a process exits on its own.
async fn watch(cluster: &mut ProcCluster, stop: &mut StopSignals) {
    let mut reported = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = stop.recv() => return,
            () = sleep(WATCH_EVERY) => {}
        }
        let mut exited = Vec::new();
        for i in 0..cluster.control_planes().len() {
            if let Ok(cp) = cluster.control_plane_mut(i) {
                let log = cp.process().log_path().to_owned();
                if let Some(status) = cp.process().exit_status() {
                    exited.push((format!("control plane {i}"), status, log));
                }
            }
        }
        let ids: Vec<String> = cluster.nodes().iter().map(|n| n.id().to_owned()).collect();
        for id in ids {
            if let Ok(node) = cluster.node_mut(&id) {
                let log = node.process().log_path().to_owned();
                if let Some(status) = node.process().exit_status() {
                    exited.push((format!("node {id}"), status, log));
                }
            }
        }
        for (what, status, log) in exited {
            if reported.insert(what.clone()) {
                eprintln!("!!! {what} exited ({status}); log: {}", log.display());
            }
        }
    }
}

/// Ctrl-C, SIGTERM and SIGHUP.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// etcd, run by a child `strata-dev --etcd-holder` in its own process group.
///
/// A Ctrl-C on the terminal goes to the whole foreground process group. `EtcdProcess` spawns
/// etcd into its caller's group, so etcd started from here would stop on that Ctrl-C at once,
/// before the nodes could deregister. The holder runs in a group of its own (like every other
/// process of the cluster), so etcd stops only when told to, last.
struct EtcdHolder {
    child: Child,
    endpoint: String,
    pid: u32,
}

impl EtcdHolder {
    async fn start() -> Result<Self> {
        let exe = std::env::current_exe().context("finding strata-dev itself")?;
        let mut child = child_command(&exe)
            .arg("--etcd-holder")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the etcd holder")?;
        let stdout = child.stdout.take().context("no stdout")?;
        // The holder prints one line, "ENDPOINT PID", once etcd is healthy.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let holder_pid = child.id();
        let mut holder = Self {
            child,
            endpoint: String::new(),
            pid: 0,
        };
        let line = match timeout(ETCD_START_WITHIN, line).await {
            Ok(r) => r??,
            Err(_) => bail!("etcd did not start within {ETCD_START_WITHIN:?}"),
        };
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next().and_then(|p| p.parse().ok())) {
            (Some(endpoint), Some(pid)) => {
                holder.endpoint = endpoint.to_owned();
                holder.pid = pid;
                Ok(holder)
            }
            _ => bail!("etcd did not start (holder pid {holder_pid} said {line:?})"),
        }
    }

    /// SIGTERM to the holder, which stops etcd gracefully and exits.
    async fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(self.child.id())?);
            signal::kill(pid, Signal::SIGTERM)?;
        }
        let deadline = Instant::now() + ETCD_STOP_WITHIN;
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("etcd did not stop within {ETCD_STOP_WITHIN:?}; killed");
            }
            sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for EtcdHolder {
    fn drop(&mut self) {
        // An error path: SIGKILL the holder; its etcd gets the parent-death signal.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `strata-dev --etcd-holder`: starts etcd, prints "ENDPOINT PID", stops etcd on SIGTERM.
async fn etcd_holder() -> Result<()> {
    let mut stop = StopSignals::new()?;
    let mut etcd = EtcdProcess::start().await?;
    println!("{} {}", etcd.endpoint(), etcd.pid().unwrap_or_default());
    stop.recv().await;
    etcd.stop().await
}
