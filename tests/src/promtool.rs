//! `promtool check metrics`, the Prometheus project's own linter for the exposition format.
//!
//! Debian's `prometheus` package ships it (`scripts/setup.sh` installs it). Tests run every
//! `/metrics` endpoint's text through it, so a family with a non-base unit, a missing HELP or
//! TYPE line, or a malformed sample fails the suite, not a scrape in production.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Environment variable naming the promtool binary explicitly (default: `promtool` on `PATH`).
pub const PROMTOOL_ENV: &str = "STRATA_PROMTOOL";

/// Lints `text` with `promtool check metrics`; an error carries promtool's complaints.
pub async fn check_metrics(text: &str) -> Result<()> {
    let bin = std::env::var_os(PROMTOOL_ENV).unwrap_or_else(|| "promtool".into());
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {} (Debian's `prometheus` package; scripts/setup.sh installs it)",
                bin.to_string_lossy()
            )
        })?;
    let mut stdin = child.stdin.take().context("promtool stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("promtool did not finish within 30 s")??;
    // promtool writes lint findings to stderr and exits non-zero on any of them.
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !findings.trim().is_empty() {
        bail!(
            "promtool check metrics: {}\n{}",
            out.status,
            findings.trim()
        );
    }
    Ok(())
}
