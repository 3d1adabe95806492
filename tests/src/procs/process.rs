//! One child process: spawning, signals, exit, logs.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

use crate::child::log_tail;
pub use crate::child::pdeathsig_wrapper;

use super::*;

/// One child process: its command line, log file, and the process while it runs.
#[derive(Debug)]
pub struct Proc {
    pub(super) name: String,
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
    pub(super) rust_log: String,
    pub(super) log_path: PathBuf,
    pub(super) child: Option<Child>,
    pub(super) last_exit: Option<ExitStatus>,
}

impl Proc {
    pub(super) fn new(
        name: &str,
        program: &Path,
        args: Vec<String>,
        rust_log: &str,
        dir: &Path,
    ) -> Self {
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

    pub(super) fn spawn(&mut self) -> Result<()> {
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

    /// Stops the process if it runs (SIGTERM, then up to `grace` for the exit) and starts
    /// it again with the same command line: the first half of a restart, whose caller
    /// then waits for its own kind of readiness.
    pub(super) async fn respawn(&mut self, grace: Duration) -> Result<()> {
        if self.child.is_some() {
            self.terminate(grace).await?;
        }
        self.spawn()
    }

    pub(super) fn send_sigterm(&mut self) -> Result<()> {
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

    pub(super) async fn wait_exit(&mut self, deadline: Instant) -> Result<ExitStatus> {
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
    pub(super) fn exited_error(&mut self, doing: &str) -> anyhow::Error {
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
    pub(super) fn lost_port_race(&mut self) -> bool {
        self.exit_status().is_some()
            && fs::read_to_string(&self.log_path).is_ok_and(|log| {
                log.contains("Address already in use") || log.contains("AddrInUse")
            })
    }

    /// Moves the log aside (`<name>.log.N`) before a retry on new ports.
    pub(super) fn rotate_log(&self, attempt: usize) {
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
