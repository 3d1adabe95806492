//! The control plane under test: in this process, or a separate `strata-control` process.
//!
//! A separate process is the fairer setup: the benchmark's callers and the server then run on
//! different tokio runtimes, as they would in production. In-process, they share one runtime
//! and its worker threads.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Endpoint;

use crate::control::{ControlPlane, HealthCheckRequest, ServingStatus, Store, tonic_health_client};
use crate::ports::free_tcp_port;

/// How long a control plane may take to report SERVING.
const SERVING_WITHIN: Duration = Duration::from_secs(20);
/// Starts retried with a new port after the process exited early (it may have lost its port).
const START_ATTEMPTS: usize = 3;
/// How long `stop` waits after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Poll interval while waiting for a condition.
const POLL: Duration = Duration::from_millis(25);

/// Where the control plane runs.
#[derive(Debug, Clone)]
pub enum Placement {
    /// In this process, on the benchmark's runtime.
    InProcess,
    /// A `strata-control` process started from this binary.
    Process(PathBuf),
}

/// A running control plane.
pub enum Target {
    /// In this process.
    InProcess(ControlPlane),
    /// A child process.
    Process(ControlProcess),
}

impl Target {
    /// Starts a control plane over the etcd at `endpoint`.
    pub async fn start(placement: &Placement, endpoint: &str, lease_ttl: Duration) -> Result<Self> {
        Self::start_on(placement, &[endpoint.to_owned()], lease_ttl, &[]).await
    }

    /// Starts a control plane over the etcd members at `endpoints`; a separate process also
    /// gets `extra_args` (an in-process one runs with the defaults).
    pub async fn start_on(
        placement: &Placement,
        endpoints: &[String],
        lease_ttl: Duration,
        extra_args: &[String],
    ) -> Result<Self> {
        Ok(match placement {
            Placement::InProcess => Target::InProcess(
                ControlPlane::start(&Store::Etcd(endpoints.to_vec()), lease_ttl).await?,
            ),
            Placement::Process(bin) => Target::Process(
                ControlProcess::start_with(bin, &endpoints.join(","), lease_ttl, extra_args)
                    .await?,
            ),
        })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        match self {
            Target::InProcess(cp) => cp.url(),
            Target::Process(p) => format!("http://{}", p.addr),
        }
    }

    /// The process id of a separate control plane; `None` in-process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Target::InProcess(_) => None,
            Target::Process(p) => p.child.id(),
        }
    }

    /// Stops the control plane.
    pub async fn stop(self) -> Result<()> {
        match self {
            Target::InProcess(cp) => cp.stop().await,
            Target::Process(p) => p.stop().await,
        }
    }
}

/// A `strata-control` child process on a free loopback port, logging to a temp directory.
pub struct ControlProcess {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl ControlProcess {
    /// Starts `bin` with `extra_args` against etcd at `endpoint` (comma-separated members)
    /// and waits until it reports SERVING.
    pub async fn start_with(
        bin: &Path,
        endpoint: &str,
        lease_ttl: Duration,
        extra_args: &[String],
    ) -> Result<Self> {
        let mut last_error = None;
        for attempt in 0..START_ATTEMPTS {
            // A directory per attempt: a failed attempt's value removes its own on drop.
            let dir = crate::dirs::fresh_temp_dir("bench")?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()?));
            let log_path = dir.join(format!("strata-control-{attempt}.log"));
            let child = match spawn(bin, addr, endpoint, lease_ttl, extra_args, &log_path) {
                Ok(child) => child,
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e);
                }
            };
            let mut process = Self { child, addr, dir };
            match process.wait_serving().await {
                Ok(()) => return Ok(process),
                // It exited: most likely another process took the port in between; retry.
                Err(e) if process.child.try_wait()?.is_some() => {
                    last_error = Some(e.context(log_tail(&log_path)));
                }
                Err(e) => return Err(e.context(log_tail(&log_path))),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("strata-control did not start"))).context(format!(
            "strata-control exited early {START_ATTEMPTS} times"
        ))
    }

    async fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + SERVING_WITHIN;
        let url = format!("http://{}", self.addr);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("strata-control exited ({status}) before serving");
            }
            let check = async {
                let ch = Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_secs(1))
                    .connect()
                    .await?;
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                let status = tonic_health_client(ch)
                    .check(req)
                    .await?
                    .into_inner()
                    .status;
                anyhow::Ok(status == ServingStatus::Serving as i32)
            };
            if let Ok(Ok(true)) = timeout(Duration::from_secs(2), check).await {
                return Ok(());
            }
            sleep(POLL).await;
        }
        bail!(
            "strata-control on {} not SERVING within {SERVING_WITHIN:?}",
            self.addr
        )
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_none()
            && let Some(pid) = self.child.id()
        {
            let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
            // Not reaped yet, so the pid is still this child's.
            signal::kill(pid, Signal::SIGTERM).context("sending SIGTERM to strata-control")?;
            if timeout(STOP_GRACE, self.child.wait()).await.is_err() {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        // `kill_on_drop` reaps the child; only the logs are left to remove.
        let _ = self.child.start_kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn spawn(
    bin: &Path,
    addr: SocketAddr,
    endpoint: &str,
    lease_ttl: Duration,
    extra_args: &[String],
    log_path: &Path,
) -> Result<Child> {
    let log = File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // With a parent-death signal the child dies with the benchmark even when no destructor
    // runs (Ctrl-C); it follows the spawning thread, a runtime worker that lives as long.
    let mut cmd = match crate::procs::pdeathsig_wrapper() {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.arg("--listen")
        .arg(addr.to_string())
        .args(["--store", "etcd", "--etcd-endpoints", endpoint])
        .args(["--prefix", "/strata/"])
        .arg("--plaintext")
        .arg("--lease-ttl")
        .arg(format!("{}s", lease_ttl.as_secs().max(1)))
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file handle")?)
        .stderr(log)
        .kill_on_drop(true);
    // Every flag is also read from STRATA_*: a stray one must not change what is measured.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRATA_") {
            cmd.env_remove(key);
        }
    }
    // Per-call info logs (one per publish) are not what is measured.
    cmd.env("RUST_LOG", "warn");
    cmd.spawn()
        .with_context(|| format!("spawning {}", bin.display()))
}

fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("strata-control log {}:\n{tail}", path.display())
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
