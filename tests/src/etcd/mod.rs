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
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::child::{log_tail, pdeathsig_wrapper};
use crate::grpcurl::find_executable;
use crate::ports::free_tcp_ports;

mod cluster;
mod ctl;

pub use cluster::EtcdCluster;
use cluster::wait_all_healthy;
pub use ctl::{etcdctl, etcdctl_ok};

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
        let mut cmd = match pdeathsig_wrapper() {
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
