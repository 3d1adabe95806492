//! A `perf` profile of a server under load.

use anyhow::{Context as _, Result, ensure};

use crate::grpcurl::find_executable;

/// Samples `pid` with `perf record -g` for 8 s and returns the top of `perf report`.
pub async fn perf_profile(pid: u32) -> Result<String> {
    let perf = find_executable("perf").context("perf is not installed")?;
    let dir = std::env::temp_dir().join(format!("strata-bench-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("perf.data");
    let rec = tokio::process::Command::new(&perf)
        .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", "8"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    ensure!(rec.success(), "perf record failed: {rec}");
    let report = |sort: &'static str, limit: &'static str, take: usize| {
        let perf = perf.clone();
        let data = data.clone();
        async move {
            let rep = tokio::process::Command::new(&perf)
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "-g",
                    "none",
                    "--sort",
                    sort,
                ])
                .args(["--percent-limit", limit, "-i"])
                .arg(&data)
                .output()
                .await?;
            ensure!(
                rep.status.success(),
                "perf report failed: {}",
                String::from_utf8_lossy(&rep.stderr).trim()
            );
            let text = String::from_utf8_lossy(&rep.stdout).into_owned();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(take)
                .map(|l| {
                    // Drop the empty IPC columns and cut long (generic) symbol names.
                    let l = l.trim_end().trim_end_matches(['-', ' ']);
                    l.chars().take(150).collect()
                })
                .collect();
            ensure!(
                !lines.is_empty(),
                "perf report is empty: {}",
                String::from_utf8_lossy(&rep.stderr).trim()
            );
            Ok::<_, anyhow::Error>(lines.join("\n"))
        }
    };
    let by_dso = report("dso", "0.5", 12).await;
    let by_symbol = report("dso,symbol", "0.7", 40).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "by binary:\n{}\n\nby symbol:\n{}",
        by_dso?, by_symbol?
    ))
}
