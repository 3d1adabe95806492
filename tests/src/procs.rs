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

use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use strata_proto::v1;
use strata_relay::certs::DevCa;
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::{Channel, Endpoint};

use crate::control::{Clients, HealthCheckRequest, ServingStatus, tonic_health_client};
use crate::etcd::{ETCD_ENV, EtcdProcess};
use crate::grpcurl::find_executable;
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

/// The two binaries a cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `strata-control`.
    pub control: PathBuf,
    /// `strata-node`.
    pub node: PathBuf,
}

impl Binaries {
    /// Finds both binaries in `$STRATA_BIN_DIR`, or in the closest ancestor directory of the
    /// running executable that holds them (`target/<profile>/`).
    pub fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            let dir = PathBuf::from(dir);
            return Self::in_dir(&dir).ok_or_else(|| {
                anyhow!(
                    "${BIN_DIR_ENV}={} holds no strata-control and strata-node",
                    dir.display()
                )
            });
        }
        let exe = std::env::current_exe().context("finding the running executable")?;
        exe.ancestors()
            .skip(1)
            .find_map(Self::in_dir)
            .ok_or_else(|| {
                anyhow!(
                    "strata-control and strata-node not found in any directory above {}: \
                     build them first with `cargo build --bins` (or set ${BIN_DIR_ENV})",
                    exe.display()
                )
            })
    }

    fn in_dir(dir: &Path) -> Option<Self> {
        let control = dir.join("strata-control");
        let node = dir.join("strata-node");
        (control.is_file() && node.is_file()).then_some(Self { control, node })
    }
}

/// Whether etcd can be started (`$STRATA_ETCD` is set, or `etcd` is on `PATH`).
pub fn etcd_installed() -> bool {
    std::env::var_os(ETCD_ENV).is_some() || find_executable("etcd").is_some()
}

/// Which store the control planes of a [`ProcCluster`] use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// A fresh etcd process owned by the cluster.
    Etcd,
    /// etcd when it is installed, otherwise the memory store (one control plane only).
    EtcdOrMemory,
    /// Each control plane's in-process memory store: one control plane only.
    Memory,
    /// An etcd the caller runs, at these client URLs.
    External(Vec<String>),
}

/// The store a running [`ProcCluster`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreInUse {
    /// etcd at these client URLs.
    Etcd(Vec<String>),
    /// The control plane's memory store.
    Memory,
}

/// What [`ProcCluster::start`] starts.
#[derive(Debug, Clone)]
pub struct ProcOptions {
    /// The store.
    pub store: StoreMode,
    /// Control-plane replicas (at least 1).
    pub control_planes: usize,
    /// Node lease TTL of the control planes (whole seconds with etcd).
    pub lease_ttl: Duration,
    /// Nodes started with the cluster, as (id, region).
    pub nodes: Vec<(String, String)>,
    /// When set, ports are taken consecutively from here (control planes first: gRPC then
    /// HTTP; then each node: HTTP, relay, RTC) instead of free ports. etcd still takes free
    /// ports.
    pub port_base: Option<u16>,
    /// `RUST_LOG` of the processes; default: the environment's, else [`DEFAULT_RUST_LOG`].
    pub rust_log: Option<String>,
    /// Extra arguments of every `strata-control`.
    pub control_args: Vec<String>,
    /// Extra arguments of every `strata-node` (e.g. `--drain-timeout 3s`).
    pub node_args: Vec<String>,
    /// Keep the temp directory (logs, certificates) when the cluster is dropped. It is kept
    /// anyway when the thread is panicking or `STRATA_KEEP_TEST_LOGS=1`.
    pub keep_dir: bool,
    /// Relay address per region, as (region, IP): the nodes of a listed region bind their
    /// relay server and client on this loopback address instead of 127.0.0.1, so that a test
    /// can cut regions apart by address inside its network namespace (all of 127.0.0.0/8 is
    /// on `lo`). HTTP and WebRTC stay on 127.0.0.1.
    pub relay_ips: Vec<(String, Ipv4Addr)>,
}

impl Default for ProcOptions {
    fn default() -> Self {
        Self {
            store: StoreMode::Etcd,
            control_planes: 1,
            lease_ttl: Duration::from_secs(3),
            nodes: Vec::new(),
            port_base: None,
            rust_log: None,
            control_args: Vec::new(),
            node_args: Vec::new(),
            keep_dir: false,
            relay_ips: Vec::new(),
        }
    }
}

/// One child process: its command line, log file, and the process while it runs.
#[derive(Debug)]
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    rust_log: String,
    log_path: PathBuf,
    child: Option<Child>,
    last_exit: Option<ExitStatus>,
}

impl Proc {
    fn new(name: &str, program: &Path, args: Vec<String>, rust_log: &str, dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            rust_log: rust_log.to_owned(),
            log_path: dir.join(format!("{name}.log")),
            child: None,
            last_exit: None,
        }
    }

    fn spawn(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut cmd = child_command(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log);
        // Every STRATA_* variable is a flag of these binaries: none may leak in from the
        // caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", &self.rust_log).env("NO_COLOR", "1");
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        self.last_exit = None;
        Ok(())
    }

    /// Name, used for the log file (`<name>.log`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id of the process last spawned, until it is killed or terminated (it may have
    /// exited on its own since: see [`is_running`](Self::is_running)).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The exit status, if the process exited (on its own, or by [`kill`](Self::kill) or
    /// [`terminate`](Self::terminate)).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => self.last_exit,
        }
    }

    /// The file stdout and stderr go to (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, LOG_TAIL_LINES)
    }

    /// The program and its arguments, for messages.
    pub fn command_line(&self) -> String {
        let mut line = self.program.display().to_string();
        for a in &self.args {
            line.push(' ');
            line.push_str(a);
        }
        line
    }

    /// SIGKILLs the process and reaps it. Does nothing if none was spawned.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        // Fails only if the process already exited; wait() then returns its status.
        let _ = child.kill();
        let status = child
            .wait()
            .with_context(|| format!("reaping {} (pid {pid})", self.name))?;
        self.last_exit = Some(status);
        Ok(())
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; returns its exit
    /// status. A process still running after `within` is SIGKILLed, and that is an error.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        self.send_sigterm()?;
        self.wait_exit(Instant::now() + within).await
    }

    fn send_sigterm(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return match self.last_exit {
                Some(_) => Ok(()),
                None => bail!("{} was never started", self.name),
            };
        };
        if child.try_wait()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
            // Not reaped yet, so the pid cannot have been reused.
            signal::kill(pid, Signal::SIGTERM)
                .with_context(|| format!("sending SIGTERM to {}", self.name))?;
        }
        Ok(())
    }

    async fn wait_exit(&mut self, deadline: Instant) -> Result<ExitStatus> {
        loop {
            let Some(child) = self.child.as_mut() else {
                return self
                    .last_exit
                    .ok_or_else(|| anyhow!("{} was never started", self.name));
            };
            let pid = child.id();
            if let Some(status) = child.try_wait()? {
                self.child = None;
                self.last_exit = Some(status);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "{} (pid {pid}) did not exit in time after SIGTERM and was killed; log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            sleep(POLL).await;
        }
    }

    /// An error saying the process exited, with its log tail.
    fn exited_error(&mut self, doing: &str) -> anyhow::Error {
        let status = self
            .exit_status()
            .map_or_else(|| "not running".to_owned(), |s| s.to_string());
        anyhow!(
            "{} exited ({status}) {doing}; log {}:\n{}",
            self.name,
            self.log_path.display(),
            self.log_tail()
        )
    }

    /// Whether the process exited because an address it was given was taken.
    fn lost_port_race(&mut self) -> bool {
        self.exit_status().is_some()
            && fs::read_to_string(&self.log_path).is_ok_and(|log| {
                log.contains("Address already in use") || log.contains("AddrInUse")
            })
    }

    /// Moves the log aside (`<name>.log.N`) before a retry on new ports.
    fn rotate_log(&self, attempt: usize) {
        let _ = fs::rename(
            &self.log_path,
            self.log_path.with_extension(format!("log.{attempt}")),
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Nothing useful can be done with a failure here.
        let _ = self.kill();
    }
}

/// A `Command` for `program` that runs in its own process group and, when `setpriv` is
/// installed, gets SIGKILL when the spawning thread of this process ends.
pub fn child_command(program: &Path) -> Command {
    let mut cmd = match pdeathsig_wrapper() {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    cmd.process_group(0);
    cmd
}

/// One control-plane replica process.
#[derive(Debug)]
pub struct ControlProc {
    grpc: SocketAddr,
    http: SocketAddr,
    proc: Proc,
}

impl ControlProc {
    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.grpc
    }

    /// `http://ADDR` of the gRPC service, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Base URL of the HTTP side (`/healthz`, `/metrics`).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

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

    /// SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()
    }

    /// SIGTERM, then waits up to 10 s for the exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.proc.terminate(CONTROL_STOP_GRACE).await
    }

    /// Stops the process if it runs (SIGTERM), starts it again with the same ports and
    /// arguments, and waits until it serves.
    pub async fn restart(&mut self) -> Result<()> {
        if self.proc.child.is_some() {
            self.terminate().await?;
        }
        self.proc.spawn()?;
        self.wait_ready().await
    }

    /// A channel to this replica.
    pub async fn channel(&self) -> Result<Channel> {
        connect(&self.url()).await
    }

    /// Typed clients of this replica.
    pub async fn clients(&self) -> Result<Clients> {
        Clients::new(self.channel().await?)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + CONTROL_READY_WITHIN;
        loop {
            if !self.proc.is_running() {
                return Err(self.proc.exited_error("before serving"));
            }
            let last = match self.health().await {
                Ok(ServingStatus::Serving) => return Ok(()),
                Ok(status) => format!("{status:?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} ({}) not SERVING within {CONTROL_READY_WITHIN:?} (last: {last}); log {}:\n{}",
                    self.proc.name,
                    self.grpc,
                    self.proc.log_path.display(),
                    self.proc.log_tail()
                );
            }
            sleep(POLL).await;
        }
    }

    async fn health(&self) -> Result<ServingStatus> {
        let mut client = tonic_health_client(self.channel().await?);
        let req = HealthCheckRequest {
            service: String::new(),
        };
        let status = client.check(req).await?.into_inner().status;
        Ok(if status == ServingStatus::Serving as i32 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

/// One node process.
#[derive(Debug)]
pub struct NodeProc {
    id: String,
    region: String,
    http_port: u16,
    relay_ip: Ipv4Addr,
    relay_port: u16,
    rtc_port: u16,
    control_plane: Vec<String>,
    proc: Proc,
}

/// A node as listed by [`ProcCluster::node_list`] (and in `strata-dev`'s JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Process id, while the process runs.
    pub pid: Option<u32>,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `IP:PORT` (QUIC, UDP): 127.0.0.1 unless [`ProcOptions::relay_ips`] says otherwise.
    pub relay: String,
}

impl NodeProc {
    /// Node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// `http://127.0.0.1:PORT`: WHIP, WHEP, pages, `/healthz`, `/metrics`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The relay's `IP:PORT` (QUIC over UDP); the IP is 127.0.0.1 unless
    /// [`ProcOptions::relay_ips`] names one for the node's region.
    pub fn relay_addr(&self) -> String {
        format!("{}:{}", self.relay_ip, self.relay_port)
    }

    /// The WebRTC `127.0.0.1:PORT` (UDP).
    pub fn rtc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rtc_port)
    }

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

    /// SIGKILL: no drain, no deregistration; the lease expires.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()
    }

    /// SIGTERM (the node drains and deregisters), then waits up to 20 s for the exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.proc.terminate(NODE_STOP_GRACE).await
    }

    /// Stops the process if it runs (SIGTERM), starts it again with the same ports and
    /// arguments, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        if self.proc.child.is_some() {
            self.terminate().await?;
        }
        self.proc.spawn()?;
        self.wait_ready().await
    }

    /// This node as a list entry.
    pub fn entry(&self) -> NodeEntry {
        NodeEntry {
            id: self.id.clone(),
            region: self.region.clone(),
            pid: self.pid(),
            http: self.http_url(),
            relay: self.relay_addr(),
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + NODE_READY_WITHIN;
        loop {
            match self.poll_ready().await? {
                true => return Ok(()),
                false if Instant::now() >= deadline => {
                    bail!(
                        "node {} not ready within {NODE_READY_WITHIN:?}; log {}:\n{}",
                        self.id,
                        self.proc.log_path.display(),
                        self.proc.log_tail()
                    )
                }
                false => sleep(POLL).await,
            }
        }
    }

    /// Ready: registered (a control plane's `GetNode` finds it) and `/healthz` answers 200.
    /// Fails if the process exited.
    async fn poll_ready(&mut self) -> Result<bool> {
        if !self.proc.is_running() {
            return Err(self.proc.exited_error("before it was ready"));
        }
        Ok(self.registered().await && self.healthy().await)
    }

    async fn registered(&self) -> bool {
        for url in &self.control_plane {
            let Ok(channel) = connect(url).await else {
                continue;
            };
            let mut nodes = v1::node_service_client::NodeServiceClient::new(channel);
            let req = v1::GetNodeRequest {
                node_id: self.id.clone(),
            };
            if let Ok(node) = nodes.get_node(req).await {
                return node
                    .into_inner()
                    .info
                    .is_some_and(|i| i.http_url == self.http_url());
            }
        }
        false
    }

    async fn healthy(&self) -> bool {
        let url = format!("{}/healthz", self.http_url());
        matches!(
            timeout(Duration::from_secs(2), crate::http::get(&url)).await,
            Ok(Ok(resp)) if resp.status == 200
        )
    }
}

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
        let dir = make_temp_dir()?;
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

    /// Starts a node and waits until it is ready (registered, `/healthz` 200).
    pub async fn add_node(&mut self, id: &str, region: &str) -> Result<&mut NodeProc> {
        self.add_nodes(&[(id.to_owned(), region.to_owned())])
            .await?;
        self.node_mut(id)
    }

    /// Starts nodes, given as (id, region), all at once, and waits until every one is ready.
    /// A node that loses a race for its free ports is started again on new ones.
    pub async fn add_nodes(&mut self, nodes: &[(String, String)]) -> Result<()> {
        let mut pending = Vec::with_capacity(nodes.len());
        for (id, region) in nodes {
            ensure!(
                self.node(id).is_none() && !pending.iter().any(|n: &NodeProc| n.id == *id),
                "node {id} already exists"
            );
            let ips = [Ipv4Addr::LOCALHOST.into(), self.relay_ip(region).into()];
            self.ca.issue(id, &ips)?.write(&self.certs_dir)?;
            let mut node = self.node_proc(id, region)?;
            node.proc.spawn()?;
            pending.push(node);
        }
        // (index in `nodes`, attempt, process)
        let mut pending: Vec<(usize, usize, NodeProc)> = pending
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i, 1, n))
            .collect();
        let mut ready = Vec::with_capacity(pending.len());
        let deadline = Instant::now() + NODE_READY_WITHIN;
        while !pending.is_empty() {
            let mut i = 0;
            while i < pending.len() {
                let (_, attempt, node) = &mut pending[i];
                match node.poll_ready().await {
                    Ok(true) => {
                        ready.push(pending.remove(i));
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let retry = self.ports.retry_on_conflict()
                            && node.proc.lost_port_race()
                            && *attempt < START_ATTEMPTS;
                        if !retry {
                            return Err(e);
                        }
                        tracing::debug!(node = %node.id, error = %e, "port race; retrying");
                        node.proc.rotate_log(*attempt);
                        *attempt += 1;
                        let (id, region) = (node.id.clone(), node.region.clone());
                        let mut fresh = self.node_proc(&id, &region)?;
                        fresh.proc.spawn()?;
                        pending[i].2 = fresh;
                    }
                }
                i += 1;
            }
            if let Some((_, _, late)) = pending.first()
                && Instant::now() >= deadline
            {
                bail!(
                    "node {} not ready within {NODE_READY_WITHIN:?}; log {}:\n{}",
                    late.id,
                    late.proc.log_path.display(),
                    late.proc.log_tail()
                );
            }
            if !pending.is_empty() {
                sleep(POLL).await;
            }
        }
        // In the order asked for, whatever the order they became ready in.
        ready.sort_by_key(|(i, _, _)| *i);
        self.nodes.extend(ready.into_iter().map(|(_, _, n)| n));
        Ok(())
    }

    /// The relay IP of the nodes of `region`.
    fn relay_ip(&self, region: &str) -> Ipv4Addr {
        self.relay_ips
            .iter()
            .find(|(r, _)| r == region)
            .map_or(Ipv4Addr::LOCALHOST, |(_, ip)| *ip)
    }

    /// A node process (not spawned) on new ports.
    fn node_proc(&mut self, id: &str, region: &str) -> Result<NodeProc> {
        let relay_ip = self.relay_ip(region);
        let http_port = self.ports.tcp()?;
        let relay_port = self.ports.udp()?;
        let rtc_port = self.ports.udp()?;
        let control_plane: Vec<String> = self.control_planes.iter().map(ControlProc::url).collect();
        let mut args = vec![
            "--id".to_owned(),
            id.to_owned(),
            "--region".to_owned(),
            region.to_owned(),
            "--http-listen".to_owned(),
            format!("127.0.0.1:{http_port}"),
            "--relay-listen".to_owned(),
            format!("{relay_ip}:{relay_port}"),
            "--rtc-listen".to_owned(),
            format!("127.0.0.1:{rtc_port}"),
            "--announce-ips".to_owned(),
            "127.0.0.1".to_owned(),
            "--control-plane".to_owned(),
            control_plane.join(","),
            "--certs-dir".to_owned(),
            self.certs_dir.display().to_string(),
        ];
        // A dev cluster takes anyone (explicitly: the binary's default is
        // `--auth required`) and puts no rate limit on 127.0.0.1, the address of
        // every local client; `node_args` may say otherwise.
        let given = |flag: &str| {
            self.node_args
                .iter()
                .any(|a| a.split('=').next() == Some(flag))
        };
        if !given("--auth") {
            args.extend(["--auth".to_owned(), "open".to_owned()]);
        }
        if !given("--post-rate-per-ip") {
            args.extend(["--post-rate-per-ip".to_owned(), "0".to_owned()]);
        }
        args.extend(self.node_args.iter().cloned());
        let proc = Proc::new(
            &format!("node-{id}"),
            &self.bins.node,
            args,
            &self.rust_log,
            &self.dir,
        );
        Ok(NodeProc {
            id: id.to_owned(),
            region: region.to_owned(),
            http_port,
            relay_ip,
            relay_port,
            rtc_port,
            control_plane,
            proc,
        })
    }

    /// Stops a node gracefully (SIGTERM: drain, deregister) and forgets it; returns its exit
    /// status.
    pub async fn remove_node(&mut self, id: &str) -> Result<ExitStatus> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let mut node = self.nodes.remove(i);
        node.terminate().await
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

/// A new, empty directory under the system temp dir, unique on this machine.
fn make_temp_dir() -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "strata-procs-{}-{seq}-{nanos:08x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "could not create a fresh directory under {}",
        base.display()
    )
}

/// `setpriv` if it supports `--pdeathsig` (util-linux 2.33 and later).
fn pdeathsig_wrapper() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = find_executable("setpriv")?;
            let help = Command::new(&path)
                .arg("--help")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&help.stdout)
                .contains("--pdeathsig")
                .then_some(path)
        })
        .as_deref()
}

fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(log) => {
            let all: Vec<&str> = log.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
