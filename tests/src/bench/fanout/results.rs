//! The run's results as JSON (`fanout.json`) and its plot; an earlier run read back for
//! `--compare`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use super::plot::{self, Point, Series};
use super::report::ServerResult;
use super::{FanoutArgs, Kind};

/// Everything a run measured, as written to `fanout.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Run {
    /// The machine line of the report.
    pub machine: String,
    /// The source's description.
    pub source: String,
    /// Measured window per step, seconds.
    pub window_s: f64,
    /// Loss bound of a passing step (fraction).
    pub max_loss: f64,
    /// CPUs given to the server.
    pub server_cores: usize,
    /// Where the server and the client ran.
    pub placement: String,
    /// One ramp per server.
    pub results: Vec<ServerResult>,
}

fn series(results: &[ServerResult]) -> Vec<Series> {
    results
        .iter()
        .map(|r| Series {
            label: r.label(),
            kind: r.kind,
            points: r
                .steps
                .iter()
                .map(|s| Point {
                    players: s.players as f64,
                    cpu: s.cores,
                    loss: s.loss(),
                })
                .collect(),
        })
        .collect()
}

/// Reads an earlier run: a `fanout.json`, or a CSV with a header line and rows
/// `server,players,cpu_cores,loss_pct` (a server whose name contains "janus" is Janus).
pub fn load_compare(path: &Path) -> Result<Vec<Series>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        let run: Run = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fanout.json", path.display()))?;
        return Ok(series(&run.results));
    }
    let mut out: Vec<Series> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [server, players, cpu, loss] = f[..] else {
            bail!(
                "{}:{}: want server,players,cpu_cores,loss_pct",
                path.display(),
                i + 1
            );
        };
        let num = |v: &str| -> Result<f64> {
            v.parse()
                .with_context(|| format!("{}:{}: {v:?} is not a number", path.display(), i + 1))
        };
        let point = Point {
            players: num(players)?,
            cpu: match cpu {
                "" | "-" => None,
                c => Some(num(c)?),
            },
            loss: num(loss)? / 100.0,
        };
        match out.iter_mut().find(|s| s.label == server) {
            Some(s) => s.points.push(point),
            None => out.push(Series {
                label: server.to_owned(),
                kind: match server.to_ascii_lowercase().contains("janus") {
                    true => Kind::Janus,
                    false => Kind::Strata,
                },
                points: vec![point],
            }),
        }
    }
    if out.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(out)
}

/// A new directory under `$TMPDIR/strata-bench-results`, named by the time.
fn default_dir() -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::env::temp_dir()
        .join("strata-bench-results")
        .join(format!("fanout-{secs}"))
}

/// Writes `fanout.json` and the SVG plot (with `before` curves, if any); returns their paths.
pub fn write(run: &Run, args: &FanoutArgs, before: &[Series]) -> Result<Vec<PathBuf>> {
    let dir = args.results_dir.clone().unwrap_or_else(default_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("fanout.json");
    std::fs::write(&json, serde_json::to_vec_pretty(run)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = args.svg.clone().unwrap_or_else(|| dir.join("fanout.svg"));
    if let Some(parent) = svg.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let cores = match run.server_cores {
        1 => "one core".to_owned(),
        n => format!("{n} cores"),
    };
    let title = format!("WebRTC fan-out, server on {cores}: CPU and loss against players");
    std::fs::write(
        &svg,
        plot::render(&title, &series(&run.results), before, run.max_loss),
    )
    .with_context(|| format!("writing {}", svg.display()))?;
    Ok(vec![json, svg])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_csv_of_an_earlier_run() {
        let dir = std::env::temp_dir().join(format!("fanout-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("before.csv");
        std::fs::write(
            &path,
            "server,players,cpu_cores,loss_pct\nStrata,100,0.48,0\nJanus,100,0.35,0.29\n\
             Strata,400,1.00,1.15\n",
        )
        .expect("write");
        let s = load_compare(&path).expect("parse");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, Kind::Strata);
        assert_eq!(s[0].points.len(), 2);
        assert_eq!(s[1].kind, Kind::Janus);
        assert!((s[0].points[1].loss - 0.0115).abs() < 1e-9);
    }
}
