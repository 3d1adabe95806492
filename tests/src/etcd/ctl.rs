//! `etcdctl`, for tests that read or change the store the way an operator would.

use std::path::PathBuf;
use std::process::{Output, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::timeout;

use super::{ETCDCTL_ENV, ETCDCTL_TIMEOUT, remove_env_prefixed, tool};

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

fn etcdctl_bin() -> Result<PathBuf> {
    tool(ETCDCTL_ENV, "etcdctl")
}
