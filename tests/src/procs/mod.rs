//! A cluster of real processes: etcd, control-plane replicas and nodes, each in its own OS
//! process on 127.0.0.1. For tests that must SIGKILL a component (failover, lease expiry) and
//! for the local dev cluster (`strata-dev`).
//!
//! The `strata-control` and `strata-node` binaries are looked up in the target directory of
//! the running executable (`target/<profile>/`, found by walking up from a test binary in
//! `target/<profile>/deps/`), or in `$STRATA_BIN_DIR`. `cargo test -p strata-tests` does not
//! build other packages' binaries: run `cargo build --bins` first (`scripts/test.sh` and
//! `scripts/dev.sh` do).
//!
//! Every process logs to its own file in the cluster's temp directory (`RUST_LOG` is passed
//! through; [`DEFAULT_RUST_LOG`] otherwise), quoted in error messages. Every process runs in
//! its own process group, so a Ctrl-C on the terminal reaches only the program that started
//! it, which then stops the cluster in order. Lifetime: dropping a [`ProcCluster`] (or a
//! [`Proc`]) SIGKILLs and reaps its processes; when `setpriv` is installed they also get a
//! parent-death SIGKILL, so nothing is left behind even if the owner is killed outright. That
//! signal follows the *thread* that spawned the process: start processes from a task of the
//! test's runtime, not from `spawn_blocking` or a short-lived thread.

use std::fs::{self};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use strata_proto::v1;
use strata_relay::certs::DevCa;
use tokio::time::{Instant, sleep};
use tonic::transport::{Channel, Endpoint};

use crate::control::Clients;
use crate::etcd::EtcdProcess;
use crate::ports::{free_tcp_port, free_udp_port};

/// Environment variable naming the directory holding `strata-control` and `strata-node`.
pub const BIN_DIR_ENV: &str = "STRATA_BIN_DIR";
/// `RUST_LOG` of the processes when the environment sets none: quiet WebRTC internals.
pub const DEFAULT_RUST_LOG: &str = "info,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error";

/// Interval between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);
/// How long a control plane may take to report SERVING after it was spawned.
const CONTROL_READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to register and serve HTTP after it was spawned (the node itself
/// gives up registering after 30 s).
const NODE_READY_WITHIN: Duration = Duration::from_secs(40);
/// Default SIGTERM grace of a control plane.
const CONTROL_STOP_GRACE: Duration = Duration::from_secs(10);
/// Default SIGTERM grace of a node: its default drain timeout (10 s) plus shutdown.
const NODE_STOP_GRACE: Duration = Duration::from_secs(20);
/// Times a start is retried on new free ports after losing a port race.
const START_ATTEMPTS: usize = 5;
/// Lines of a process log quoted in error messages.
const LOG_TAIL_LINES: usize = 40;

/// The accessors a cluster member (control plane or node) forwards to its `proc`
/// ([`Proc`]): written once for both.
macro_rules! proc_accessors {
    () => {
        /// The process.
        pub fn process(&mut self) -> &mut Proc {
            &mut self.proc
        }

        /// Process id (see [`Proc::pid`]).
        pub fn pid(&self) -> Option<u32> {
            self.proc.pid()
        }

        /// Whether the process is alive.
        pub fn is_running(&mut self) -> bool {
            self.proc.is_running()
        }
    };
}

mod binaries;
mod cluster_nodes;
mod control;
mod node;
mod process;

pub use binaries::*;
pub use control::*;
pub use node::*;
pub use process::*;

/// Hands out ports: free ones, or consecutive ones from a base.
#[derive(Debug)]
enum Ports {
    Free,
    From(u16),
}

impl Ports {
    fn tcp(&mut self) -> Result<u16> {
        match self {
            Ports::Free => free_tcp_port(),
            Ports::From(_) => self.next(),
        }
    }

    fn udp(&mut self) -> Result<u16> {
        match self {
            Ports::Free => free_udp_port(),
            Ports::From(_) => self.next(),
        }
    }

    fn next(&mut self) -> Result<u16> {
        let Ports::From(next) = self else {
            bail!("not a port range");
        };
        let port = *next;
        *next = next
            .checked_add(1)
            .context("--port-base: ran past port 65535")?;
        Ok(port)
    }

    /// Whether a start that lost a port race may be retried on other ports.
    fn retry_on_conflict(&self) -> bool {
        matches!(self, Ports::Free)
    }
}

/// etcd (or the memory store), control-plane replicas and nodes, each a process.
pub struct ProcCluster {
    // Dropped in this order after `Drop::drop`: nodes first, etcd last.
    nodes: Vec<NodeProc>,
    control_planes: Vec<ControlProc>,
    etcd: Option<EtcdProcess>,
    store: StoreInUse,
    bins: Binaries,
    ports: Ports,
    rust_log: String,
    node_args: Vec<String>,
    relay_ips: Vec<(String, Ipv4Addr)>,
    dir: PathBuf,
    certs_dir: PathBuf,
    ca: DevCa,
    keep_dir: bool,
}

impl ProcCluster {
    /// Starts the store, the control planes (waiting until each is SERVING), then the nodes
    /// (spawned together, then waited for until every one is ready).
    pub async fn start(opts: ProcOptions) -> Result<Self> {
        ensure!(
            opts.control_planes >= 1,
            "a cluster needs at least one control plane"
        );
        let bins = Binaries::locate()?;
        let rust_log = opts
            .rust_log
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_RUST_LOG.to_owned());
        let dir = crate::dirs::fresh_temp_dir("procs")?;
        let certs_dir = dir.join("certs");
        fs::create_dir(&certs_dir).with_context(|| format!("creating {}", certs_dir.display()))?;
        let ca = DevCa::generate()?;
        ca.write(&certs_dir)?;

        let mut cluster = Self {
            nodes: Vec::new(),
            control_planes: Vec::new(),
            etcd: None,
            store: StoreInUse::Memory,
            bins,
            ports: opts.port_base.map_or(Ports::Free, Ports::From),
            rust_log,
            node_args: opts.node_args.clone(),
            relay_ips: opts.relay_ips.clone(),
            dir,
            certs_dir,
            ca,
            keep_dir: opts.keep_dir,
        };
        match cluster.start_parts(&opts).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                // The error quotes log tails; keep the whole logs for a closer look.
                cluster.keep_dir = true;
                Err(e)
            }
        }
    }

    async fn start_parts(&mut self, opts: &ProcOptions) -> Result<()> {
        let use_etcd = match &opts.store {
            StoreMode::Etcd => true,
            StoreMode::EtcdOrMemory => etcd_installed(),
            StoreMode::Memory | StoreMode::External(_) => false,
        };
        if use_etcd {
            let etcd = EtcdProcess::start().await?;
            self.store = StoreInUse::Etcd(vec![etcd.endpoint()]);
            self.etcd = Some(etcd);
        } else if let StoreMode::External(endpoints) = &opts.store {
            ensure!(!endpoints.is_empty(), "no etcd endpoints given");
            self.store = StoreInUse::Etcd(endpoints.clone());
        } else {
            ensure!(
                opts.control_planes == 1,
                "the memory store serves one control plane only ({} asked for)",
                opts.control_planes
            );
            tracing::warn!("control plane on the memory store: single replica, not durable");
        }
        for i in 0..opts.control_planes {
            self.start_control_plane(i, opts).await?;
        }
        self.add_nodes(&opts.nodes).await
    }

    async fn start_control_plane(&mut self, i: usize, opts: &ProcOptions) -> Result<()> {
        for attempt in 1..=START_ATTEMPTS {
            let grpc = SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.tcp()?));
            let http = SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.tcp()?));
            let mut args = vec![
                "--listen".to_owned(),
                grpc.to_string(),
                "--http-listen".to_owned(),
                http.to_string(),
                "--lease-ttl".to_owned(),
                format!("{}ms", opts.lease_ttl.as_millis()),
            ];
            match &self.store {
                StoreInUse::Etcd(endpoints) => args.extend([
                    "--store".to_owned(),
                    "etcd".to_owned(),
                    "--etcd-endpoints".to_owned(),
                    endpoints.join(","),
                ]),
                StoreInUse::Memory => args.extend(["--store".to_owned(), "memory".to_owned()]),
            }
            args.extend(opts.control_args.iter().cloned());
            if !opts.control_args.iter().any(|a| a.starts_with("--tls-")) {
                args.push("--plaintext".to_owned());
            }
            let proc = Proc::new(
                &format!("control-{i}"),
                &self.bins.control,
                args,
                &self.rust_log,
                &self.dir,
            );
            let mut cp = ControlProc { grpc, http, proc };
            cp.proc.spawn()?;
            match cp.wait_ready().await {
                Ok(()) => {
                    self.control_planes.push(cp);
                    return Ok(());
                }
                Err(e) if self.ports.retry_on_conflict() && cp.proc.lost_port_race() => {
                    tracing::debug!(attempt, error = %e, "control plane lost a port race; retrying");
                    cp.proc.rotate_log(attempt);
                }
                Err(e) => return Err(e),
            }
        }
        bail!("control plane {i} lost the race for its ports {START_ATTEMPTS} times")
    }

    /// The nodes, in the order they were added.
    pub fn nodes(&self) -> &[NodeProc] {
        &self.nodes
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&NodeProc> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// A node by id, mutably.
    pub fn node_mut(&mut self, id: &str) -> Result<&mut NodeProc> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Every node: id, region, pid, HTTP URL, relay address.
    pub fn node_list(&self) -> Vec<NodeEntry> {
        self.nodes.iter().map(NodeProc::entry).collect()
    }

    /// The control-plane replicas.
    pub fn control_planes(&self) -> &[ControlProc] {
        &self.control_planes
    }

    /// Control-plane replica `i`, mutably.
    pub fn control_plane_mut(&mut self, i: usize) -> Result<&mut ControlProc> {
        let len = self.control_planes.len();
        self.control_planes
            .get_mut(i)
            .ok_or_else(|| anyhow!("no control plane {i} of {len}"))
    }

    /// The etcd process, when the cluster owns one.
    pub fn etcd(&self) -> Option<&EtcdProcess> {
        self.etcd.as_ref()
    }

    /// The etcd process, mutably, when the cluster owns one.
    pub fn etcd_mut(&mut self) -> Option<&mut EtcdProcess> {
        self.etcd.as_mut()
    }

    /// The store the control planes use.
    pub fn store(&self) -> &StoreInUse {
        &self.store
    }

    /// The temp directory: `<process>.log` files and `certs/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether dropping the cluster keeps its temp directory (see [`ProcOptions::keep_dir`]).
    pub fn set_keep_dir(&mut self, keep: bool) {
        self.keep_dir = keep;
    }

    /// Clients of the first control plane whose process runs.
    pub async fn clients(&mut self) -> Result<Clients> {
        for cp in &mut self.control_planes {
            if cp.is_running() {
                return cp.clients().await;
            }
        }
        bail!("no control plane is running")
    }

    /// Polls the control plane until `GetNode(id)` answers NOT_FOUND; returns how long it
    /// took, or fails after `within`.
    pub async fn wait_node_gone(&mut self, id: &str, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        let deadline = start + within;
        let mut clients = self.clients().await?;
        loop {
            let req = v1::GetNodeRequest {
                node_id: id.to_owned(),
            };
            let last = match clients.nodes.get_node(req).await {
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(start.elapsed()),
                Err(s) => format!("{s}"),
                Ok(_) => "still registered".to_owned(),
            };
            if Instant::now() >= deadline {
                bail!("node {id} not gone within {within:?} ({last})");
            }
            sleep(POLL).await;
        }
    }

    /// Stops everything gracefully: SIGTERM to every node (they drain and deregister) and
    /// waits, then the same for the control planes, then etcd. Processes still running after
    /// their grace are killed, and that is reported as an error once all are stopped.
    pub async fn stop(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        let nodes = self.nodes.iter_mut().map(|n| &mut n.proc).collect();
        stop_all(nodes, NODE_STOP_GRACE, &mut errors).await;
        let cps = self
            .control_planes
            .iter_mut()
            .map(|c| &mut c.proc)
            .collect();
        stop_all(cps, CONTROL_STOP_GRACE, &mut errors).await;
        if let Some(etcd) = self.etcd.as_mut()
            && let Err(e) = etcd.stop().await
        {
            errors.push(e);
        }
        match errors.len() {
            0 => Ok(()),
            _ => Err(anyhow!(
                "{}",
                errors
                    .iter()
                    .map(|e| format!("{e:#}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
        }
    }
}

/// SIGTERMs every running process, then waits for all of them (one shared deadline).
async fn stop_all(procs: Vec<&mut Proc>, grace: Duration, errors: &mut Vec<anyhow::Error>) {
    let mut running = Vec::new();
    for p in procs {
        if p.child.is_none() {
            continue;
        }
        match p.send_sigterm() {
            Ok(()) => running.push(p),
            Err(e) => errors.push(e),
        }
    }
    let deadline = Instant::now() + grace;
    for p in running {
        match p.wait_exit(deadline).await {
            Ok(status) if !status.success() => errors.push(anyhow!(
                "{} exited with {status} on SIGTERM; log {}:\n{}",
                p.name,
                p.log_path.display(),
                p.log_tail()
            )),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.proc.kill();
        }
        for c in &mut self.control_planes {
            let _ = c.proc.kill();
        }
        let keep = self.keep_dir
            || std::thread::panicking()
            || std::env::var_os("STRATA_KEEP_TEST_LOGS").is_some_and(|v| v == "1");
        if keep {
            eprintln!("strata processes: logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

async fn connect(url: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?)
}
