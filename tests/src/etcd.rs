//! Real etcd servers for tests: one process ([`EtcdProcess`]) or a cluster ([`EtcdCluster`]).
//!
//! Uses Debian's etcd 3.4 (`/usr/bin/etcd`, package `etcd-server`; `etcdctl` from `etcd-client`),
//! installed by `scripts/setup.sh`. Every member listens on free ports of 127.0.0.1 only, keeps
//! its data and its log in a fresh directory under the system temp dir, and runs with fast raft
//! timings (`--heartbeat-interval=10 --election-timeout=100`), so it is healthy about 0.1 s after
//! start.
//!
//! Lifetime: dropping the value kills the process (SIGKILL) and reaps it; the temp directory is
//! removed, except the log when the thread is panicking or `STRATA_KEEP_TEST_LOGS=1` is set.
//! When `setpriv` (util-linux) is available, etcd is also started with a parent-death signal, so
//! it dies even if the test process is killed outright and no destructor runs. That signal
//! follows the *thread* that spawned etcd: start and restart etcd from the test's own task, not
//! from `spawn_blocking` or a short-lived thread.

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::grpcurl::find_executable;
use crate::ports::free_tcp_ports;

/// Environment variable naming the etcd binary explicitly (default: `etcd` on `PATH`).
pub const ETCD_ENV: &str = "STRATA_ETCD";
/// Environment variable naming the etcdctl binary explicitly (default: `etcdctl` on `PATH`).
pub const ETCDCTL_ENV: &str = "STRATA_ETCDCTL";

/// How long a member may take to report healthy after it was spawned.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Interval between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);
/// Times a start is retried with new ports after losing a port race with another process.
const START_ATTEMPTS: usize = 5;
/// How long one etcdctl call may take.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the etcd log quoted in error messages.
const LOG_TAIL_LINES: usize = 40;

/// One etcd server process; also a member of an [`EtcdCluster`].
#[derive(Debug)]
pub struct EtcdProcess {
    name: String,
    /// Temp directory owned by this value: holds `data/` and `etcd.log`.
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster`: `name=peer-url` for every member.
    initial_cluster: String,
    cluster_token: String,
    child: Option<Child>,
}

impl EtcdProcess {
    /// Starts a single-member etcd on free loopback ports and waits until it is healthy.
    ///
    /// If etcd loses a race for its ports with another process, new ports are chosen and the
    /// start is retried a few times.
    pub async fn start() -> Result<Self> {
        let etcd = etcd_bin()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let ports = free_tcp_ports(2)?;
            let dir = crate::dirs::fresh_temp_dir("etcd")?;
            let name = "strata0".to_owned();
            let initial_cluster = format!("{name}={}", peer_url(ports[1]));
            let token = cluster_token(&dir);
            let mut etcd_proc = Self::new(name, dir, ports[0], ports[1], initial_cluster, token);
            etcd_proc.spawn(&etcd)?;
            match wait_all_healthy(std::slice::from_mut(&mut etcd_proc)).await {
                Ok(()) => return Ok(etcd_proc),
                Err(e) if etcd_proc.lost_port_race() => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("etcd did not start"))).context(format!(
            "etcd lost the race for its ports {START_ATTEMPTS} times"
        ))
    }

    fn new(
        name: String,
        dir: PathBuf,
        client_port: u16,
        peer_port: u16,
        initial_cluster: String,
        cluster_token: String,
    ) -> Self {
        Self {
            data_dir: dir.join("data"),
            log_path: dir.join("etcd.log"),
            name,
            dir,
            client_port,
            peer_port,
            initial_cluster,
            cluster_token,
            child: None,
        }
    }

    /// Client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Peer URL, `http://127.0.0.1:PORT`.
    pub fn peer_url(&self) -> String {
        peer_url(self.peer_port)
    }

    /// Member name (`--name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `--data-dir`, kept across [`kill`](Self::kill) and [`restart`](Self::restart).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file etcd's stdout and stderr go to (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the etcd log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, LOG_TAIL_LINES)
    }

    /// Process id, while a process was spawned and not yet killed or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (spawned and not exited).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// Kills the process with SIGKILL and reaps it. Data dir and ports are kept for
    /// [`restart`](Self::restart). Does nothing if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child
            .kill()
            .with_context(|| format!("killing etcd {} (pid {})", self.name, child.id()))?;
        child
            .wait()
            .with_context(|| format!("reaping etcd {} (pid {})", self.name, child.id()))?;
        Ok(())
    }

    /// Stops the process gracefully (SIGTERM), falling back to SIGKILL after 10 s.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
            // The child is not reaped yet, so its pid cannot have been reused.
            signal::kill(pid, Signal::SIGTERM)
                .with_context(|| format!("sending SIGTERM to etcd {}", self.name))?;
            let deadline = Instant::now() + STOP_GRACE;
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                sleep(POLL).await;
            }
        }
        self.kill()
    }

    /// Restarts the process with the same ports and data dir, and waits until it is healthy.
    /// A running process is stopped first.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn(&etcd_bin()?)?;
        wait_all_healthy(std::slice::from_mut(self)).await
    }

    /// Runs `etcdctl` (v3 API) against this member; returns stdout, or an error on failure.
    pub async fn ctl(&self, args: &[&str]) -> Result<String> {
        etcdctl_ok(&[self.endpoint()], args).await
    }

    fn spawn(&mut self, etcd: &Path) -> Result<()> {
        if self.child.is_some() {
            bail!("etcd {} is already running", self.name);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = self.peer_url();
        let mut cmd = match crate::procs::pdeathsig_wrapper() {
            Some(setpriv) => {
                let mut cmd = Command::new(setpriv);
                cmd.args(["--pdeathsig", "KILL", "--"]).arg(etcd);
                cmd
            }
            None => Command::new(etcd),
        };
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.cluster_token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log);
        // etcd reads every flag from ETCD_* too; a stray one (say ETCD_LISTEN_METRICS_URLS)
        // must not add listeners or change the cluster.
        remove_env_prefixed(&mut cmd, "ETCD_");
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", etcd.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether etcd exited because one of its ports was taken since it was chosen.
    fn lost_port_race(&mut self) -> bool {
        // The log is the only place etcd says why it exited.
        self.exit_status().is_some()
            && fs::read_to_string(&self.log_path)
                .is_ok_and(|log| log.contains("address already in use"))
    }

    async fn is_healthy(&self) -> bool {
        health_ok(self.client_port).await
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing useful can be done with a failure here; the child is ours to reap.
            let _ = child.kill();
            let _ = child.wait();
        }
        let keep_log = std::thread::panicking()
            || std::env::var_os("STRATA_KEEP_TEST_LOGS").is_some_and(|v| v == "1");
        if keep_log {
            let _ = fs::remove_dir_all(&self.data_dir);
            eprintln!(
                "etcd {} ({}): log kept at {}",
                self.name,
                self.endpoint(),
                self.log_path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A multi-member etcd cluster on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until every member is healthy.
    ///
    /// If a member loses a race for its ports, the whole cluster is started afresh on new
    /// ports, a few times at most.
    pub async fn start(size: usize) -> Result<Self> {
        if size == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        let etcd = etcd_bin()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let ports = free_tcp_ports(2 * size)?;
            let (client_ports, peer_ports) = ports.split_at(size);
            let names: Vec<String> = (0..size).map(|i| format!("strata{i}")).collect();
            let initial_cluster = names
                .iter()
                .zip(peer_ports)
                .map(|(name, &port)| format!("{name}={}", peer_url(port)))
                .collect::<Vec<_>>()
                .join(",");
            let mut members: Vec<EtcdProcess> = Vec::with_capacity(size);
            let mut token = None;
            for (i, name) in names.into_iter().enumerate() {
                let dir = crate::dirs::fresh_temp_dir("etcd")?;
                // The first member's directory names the cluster.
                let token = token.get_or_insert_with(|| cluster_token(&dir)).clone();
                members.push(EtcdProcess::new(
                    name,
                    dir,
                    client_ports[i],
                    peer_ports[i],
                    initial_cluster.clone(),
                    token,
                ));
            }
            for member in &mut members {
                member.spawn(&etcd)?;
            }
            match wait_all_healthy(&mut members).await {
                Ok(()) => return Ok(Self { members }),
                Err(e) if members.iter_mut().any(EtcdProcess::lost_port_race) => {
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("etcd cluster did not start"))).context(format!(
            "etcd lost the race for its ports {START_ATTEMPTS} times"
        ))
    }

    /// Client URLs of all members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::endpoint).collect()
    }

    /// Client URLs of the members whose process is alive.
    pub fn live_endpoints(&mut self) -> Vec<String> {
        self.members
            .iter_mut()
            .filter_map(|m| m.is_running().then(|| m.endpoint()))
            .collect()
    }

    /// All members, in order.
    pub fn members(&self) -> &[EtcdProcess] {
        &self.members
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> Result<&EtcdProcess> {
        let len = self.members.len();
        self.members
            .get(i)
            .ok_or_else(|| anyhow!("no etcd member {i} in a cluster of {len}"))
    }

    /// Member `i`, mutably.
    pub fn member_mut(&mut self, i: usize) -> Result<&mut EtcdProcess> {
        let len = self.members.len();
        self.members
            .get_mut(i)
            .ok_or_else(|| anyhow!("no etcd member {i} in a cluster of {len}"))
    }

    /// Kills member `i` with SIGKILL; its data dir and ports are kept.
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.kill()
    }

    /// Restarts member `i` with its ports and data dir, and waits until it is healthy
    /// (which needs a quorum of the cluster to be up).
    pub async fn restart_member(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.restart().await
    }

    /// Runs `etcdctl` (v3 API) against the live members; returns stdout, or an error.
    pub async fn ctl(&mut self, args: &[&str]) -> Result<String> {
        let endpoints = self.live_endpoints();
        if endpoints.is_empty() {
            bail!("no etcd member is running");
        }
        etcdctl_ok(&endpoints, args).await
    }
}

/// Runs `etcdctl` with the v3 API against `endpoints`, returning its output whatever its exit
/// status. Fails only if etcdctl is missing, cannot start, or runs longer than 30 s.
pub async fn etcdctl(endpoints: &[String], args: &[&str]) -> Result<Output> {
    let bin = etcdctl_bin()?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    remove_env_prefixed(cmd.as_std_mut(), "ETCDCTL_");
    cmd.env("ETCDCTL_API", "3");
    timeout(ETCDCTL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("etcdctl {args:?} did not finish within {ETCDCTL_TIMEOUT:?}"))?
        .with_context(|| format!("running {}", bin.display()))
}

/// Like [`etcdctl`], but returns stdout and turns a non-zero exit into an error with stderr.
pub async fn etcdctl_ok(endpoints: &[String], args: &[&str]) -> Result<String> {
    let out = etcdctl(endpoints, args).await?;
    if !out.status.success() {
        bail!(
            "etcdctl {args:?} against {endpoints:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("etcdctl printed non-UTF-8 output")
}

/// Polls until every member answers `/health` with `{"health":"true"}`; fails early with the
/// member's log tail if one exits, and after [`HEALTHY_WITHIN`] if one is still unhealthy.
async fn wait_all_healthy(members: &mut [EtcdProcess]) -> Result<()> {
    let deadline = Instant::now() + HEALTHY_WITHIN;
    let mut healthy = vec![false; members.len()];
    loop {
        for (member, ok) in members.iter_mut().zip(healthy.iter_mut()) {
            if *ok {
                continue;
            }
            if let Some(status) = member.exit_status() {
                bail!(
                    "etcd {} exited ({status}) before becoming healthy; log {}:\n{}",
                    member.name,
                    member.log_path.display(),
                    member.log_tail()
                );
            }
            if member.child.is_none() {
                bail!("etcd {} is not running", member.name);
            }
            // Healthy, and still our process: if etcd exited after losing its port, another
            // process may be answering on that port.
            *ok = member.is_healthy().await && member.exit_status().is_none();
        }
        if healthy.iter().all(|&ok| ok) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let (member, _) = members
                .iter()
                .zip(&healthy)
                .find(|(_, ok)| !**ok)
                .ok_or_else(|| anyhow!("no unhealthy member"))?;
            bail!(
                "etcd {} ({}) not healthy within {HEALTHY_WITHIN:?}; log {}:\n{}",
                member.name,
                member.endpoint(),
                member.log_path.display(),
                member.log_tail()
            );
        }
        sleep(POLL).await;
    }
}

/// `GET /health` on the client port with a minimal HTTP/1.1 request.
async fn health_ok(port: u16) -> bool {
    let request = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        let req =
            format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match timeout(Duration::from_secs(2), request).await {
        Ok(Ok(response)) => {
            let text = String::from_utf8_lossy(&response);
            text.starts_with("HTTP/1.1 200") && text.contains(r#""health":"true""#)
        }
        _ => false,
    }
}

/// A cluster token unique on this machine, made from a fresh temp directory's name: a member
/// restarted on a port that another test's cluster has since taken cannot join that cluster.
fn cluster_token(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.to_string_lossy().into_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn peer_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn etcd_bin() -> Result<PathBuf> {
    tool(ETCD_ENV, "etcd")
}

fn etcdctl_bin() -> Result<PathBuf> {
    tool(ETCDCTL_ENV, "etcdctl")
}

fn tool(env: &str, name: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    find_executable(name).ok_or_else(|| {
        anyhow!(
            "`{name}` is not installed (not on PATH, and ${env} is not set): run \
             scripts/setup.sh, which installs Debian's etcd-server and etcd-client"
        )
    })
}

fn remove_env_prefixed(cmd: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(key);
        }
    }
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
