//! What `strata-bench ingest` measured: the markdown table and `ingest.json`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Kind;

/// One run: N publishers of one kind, one player each.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// Which ingest.
    pub kind: Kind,
    /// For the report.
    pub label: String,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Players that received nothing in the window.
    pub players_starved: usize,
    /// Node process CPU in the window (cores: CPU seconds per wall second).
    pub node_cores: f64,
    /// Media into the node, Mbit/s (all publishers).
    pub mbit_in: f64,
    /// Media out to the players (RTP below SRTP), Mbit/s.
    pub mbit_out: f64,
    /// RTP sequence gaps at the players over packets expected.
    pub loss: f64,
    /// Node resident memory after the window, bytes.
    pub node_rss: Option<u64>,
}

impl RunResult {
    /// Node CPU % (of one core) per ingest.
    pub fn cpu_pct_per_ingest(&self) -> f64 {
        self.node_cores * 100.0 / self.publishers.max(1) as f64
    }

    /// Node CPU % (of one core) per Mbit/s in.
    pub fn cpu_pct_per_mbit(&self) -> f64 {
        match self.mbit_in > 0.0 {
            true => self.node_cores * 100.0 / self.mbit_in,
            false => 0.0,
        }
    }

    /// One line for stderr while the bench runs.
    pub fn progress_line(&self) -> String {
        format!(
            "{}: node {:.1} % CPU, {:.2} Mbit/s in, {:.2} Mbit/s out, loss {:.2} %, {} starved",
            self.kind.name(),
            self.node_cores * 100.0,
            self.mbit_in,
            self.mbit_out,
            self.loss * 100.0,
            self.players_starved
        )
    }
}

/// A whole run of the bench.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestReport {
    /// `Machine`'s description.
    pub machine: String,
    /// Publishers per run.
    pub publishers: usize,
    /// Measured window, seconds.
    pub window_s: f64,
    /// 1-minute load average before and after.
    pub load_before: Option<f64>,
    /// See `load_before`.
    pub load_after: Option<f64>,
    /// One per kind measured.
    pub results: Vec<RunResult>,
    /// Glass-to-glass latency, one per path measured.
    pub g2g: Vec<super::g2g::G2gResult>,
    /// The markdown report.
    #[serde(skip)]
    pub text: String,
}

impl IngestReport {
    /// The run of `kind`, if measured.
    pub fn get(&self, kind: Kind) -> Option<&RunResult> {
        self.results.iter().find(|r| r.kind == kind)
    }
}

fn load(l: Option<f64>) -> String {
    l.map_or("?".to_owned(), |l| format!("{l:.2}"))
}

/// The markdown report.
pub fn render(r: &IngestReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## strata-bench ingest\n\n{}\n\n{} publisher(s) per run, one WHEP player each; \
         {:.0} s window; load average {} before, {} after. Node process CPU only \
         (ffmpeg's encoding is not counted), % of one core.\n",
        r.machine,
        r.publishers,
        r.window_s,
        load(r.load_before),
        load(r.load_after)
    );
    if r.results.is_empty() {
        s.push_str(&super::g2g::render(&r.g2g));
        return s;
    }
    s.push_str(
        "| ingest | node CPU | per ingest | Mbit/s in | per Mbit/s in | Mbit/s out | loss | starved |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for x in &r.results {
        let _ = writeln!(
            s,
            "| {} | {:.1} % | {:.1} % | {:.2} | {:.1} % | {:.2} | {:.2} % | {} |",
            x.label,
            x.node_cores * 100.0,
            x.cpu_pct_per_ingest(),
            x.mbit_in,
            x.cpu_pct_per_mbit(),
            x.mbit_out,
            x.loss * 100.0,
            x.players_starved
        );
    }
    if let (Some(a), Some(v)) = (r.get(Kind::Rtmp), r.get(Kind::RtmpVideoOnly)) {
        let diff = a.cpu_pct_per_ingest() - v.cpu_pct_per_ingest();
        let share = match a.cpu_pct_per_ingest() > 0.0 {
            true => diff / a.cpu_pct_per_ingest() * 100.0,
            false => 0.0,
        };
        let _ = writeln!(
            s,
            "\nAudio (AAC decode → Opus encode and its packets): {diff:.1} % of a core per \
             ingest, {share:.0} % of the RTMP ingest's CPU (RTMP minus RTMP -an)."
        );
    }
    s.push_str(&super::g2g::render(&r.g2g));
    s
}

/// Writes `ingest.json` into `dir` (default: a new directory under the temp dir).
pub fn write(r: &IngestReport, dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir()
            .join("strata-bench-results")
            .join(format!("ingest-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("ingest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: Kind, cores: f64, mbit_in: f64) -> RunResult {
        RunResult {
            kind,
            label: kind.label().to_owned(),
            publishers: 2,
            players_starved: 0,
            node_cores: cores,
            mbit_in,
            mbit_out: mbit_in,
            loss: 0.0,
            node_rss: None,
        }
    }

    #[test]
    fn per_ingest_per_mbit_and_the_transcode_share() {
        let a = run(Kind::Rtmp, 0.2, 2.0);
        assert!((a.cpu_pct_per_ingest() - 10.0).abs() < 1e-9);
        assert!((a.cpu_pct_per_mbit() - 10.0).abs() < 1e-9);
        assert_eq!(run(Kind::Whip, 0.1, 0.0).cpu_pct_per_mbit(), 0.0);
        let r = IngestReport {
            machine: "m".into(),
            publishers: 2,
            window_s: 1.0,
            load_before: None,
            load_after: Some(1.0),
            results: vec![a, run(Kind::RtmpVideoOnly, 0.05, 2.0)],
            g2g: Vec::new(),
            text: String::new(),
        };
        let text = render(&r);
        // 10 % − 2.5 % per ingest = 7.5 %, 75 % of the RTMP ingest.
        assert!(text.contains("7.5 % of a core per ingest, 75 %"), "{text}");
        assert!(
            text.contains("| RTMP, H.264 + AAC→Opus | 20.0 % | 10.0 % |"),
            "{text}"
        );
    }
}
