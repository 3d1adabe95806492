//! `strata-bench ingest`: RTMP and SRT ingest beside WHIP ingest, node CPU per ingest (with
//! the AAC → Opus transcode) and glass-to-glass latency.
//!
//! Every run starts its own `strata-node` process (control plane in this process on the
//! memory store) with N concurrent publishers, each played by one WHEP player.
//!
//! CPU runs:
//! - `rtmp`: N ffmpeg processes publish H.264 baseline 640×360 25 fps 1 Mbit/s + AAC over
//!   RTMP; the node remuxes the video and transcodes the audio to Opus.
//! - `rtmp-an`: the same without audio (`-an`): the difference to `rtmp` is the transcode's
//!   share.
//! - `srt`: the `rtmp` encoder's output as MPEG-TS over SRT (`-f mpegts srt://…`).
//! - `whip`: N WHIP publishers of the committed VP8 + Opus fixture clip (the fan-out bench's
//!   publisher): no transcode, no remux.
//!
//! After a settle time, one window measures the node process's CPU (CPU time ÷ wall time from
//! `/proc`; ffmpeg's own encoding is not counted), the RTP bit rate into the node (its
//! `strata_node_publisher_bytes_in_total`) and out to the players.
//!
//! Glass-to-glass runs (`g2g-whip`, `g2g-rtmp`, `g2g-srt`, `g2g-srt-low`): stamped publishers
//! in this process, see [`g2g`].
//!
//! Runs in a private network namespace like the fan-out bench.

mod feed;
pub mod g2g;
mod report;
mod tsmux;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_control::config::parse_duration;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::bench::fanout::client::{LoadPeer, RecvLoop, Tally};
use crate::bench::fanout::procstat::{self, CpuMark};
use crate::bench::fanout::source;
use crate::bench::machine::Machine;
use crate::bench::wan::launch::{ClusterDir, InProcessControl, NodeProcess, NodeSpec};
use crate::bench::wan::netns;
use crate::ports::{free_tcp_port, free_udp_port};

pub use report::{IngestReport, RunResult};

/// `strata-bench ingest` options.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// CI smoke run: 1 publisher, a 2 s window.
    #[arg(long, env = "STRATA_BENCH_QUICK")]
    pub quick: bool,
    /// Concurrent publishers (each with one WHEP player) [default: 4; 1 with --quick].
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Runs, of `rtmp`, `rtmp-an`, `srt`, `whip` (CPU) and `g2g-whip`, `g2g-rtmp`, `g2g-srt`,
    /// `g2g-srt-low` (glass-to-glass latency) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub runs: Vec<String>,
    /// SRT latency of the `g2g-srt-low` run (node and caller).
    #[arg(long, value_parser = parse_duration, default_value = "20ms")]
    pub srt_low_latency: Duration,
    /// Measured window [default: 10s; 2s with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<Duration>,
    /// Wait after every player receives media before measuring [default: 3s; 1s with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub settle: Option<Duration>,
    /// Directory for this run's `ingest.json` [default: a new directory under
    /// $TMPDIR/strata-bench-results].
    #[arg(long, env = "STRATA_BENCH_RESULTS")]
    pub results_dir: Option<PathBuf>,
}

impl IngestArgs {
    /// The `--quick` run with every other option at its default.
    pub fn quick() -> Self {
        Self {
            quick: true,
            publishers: None,
            runs: Vec::new(),
            srt_low_latency: Duration::from_millis(20),
            window: None,
            settle: None,
            results_dir: None,
        }
    }
}

/// One kind of ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    /// ffmpeg over RTMP, H.264 + AAC (transcoded to Opus).
    Rtmp,
    /// ffmpeg over RTMP, H.264 only.
    RtmpVideoOnly,
    /// ffmpeg over SRT (MPEG-TS), H.264 + AAC (transcoded to Opus).
    Srt,
    /// The VP8 + Opus fixture over WHIP.
    Whip,
}

impl Kind {
    /// The `--runs` name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rtmp => "rtmp",
            Kind::RtmpVideoOnly => "rtmp-an",
            Kind::Srt => "srt",
            Kind::Whip => "whip",
        }
    }

    /// For the report.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Rtmp => "RTMP, H.264 + AAC→Opus",
            Kind::RtmpVideoOnly => "RTMP, H.264 only (-an)",
            Kind::Srt => "SRT, H.264 + AAC→Opus",
            Kind::Whip => "WHIP, VP8 + Opus",
        }
    }

    fn all() -> [Kind; 4] {
        [Kind::Rtmp, Kind::RtmpVideoOnly, Kind::Srt, Kind::Whip]
    }
}

/// Runs the benchmark and prints the report.
pub async fn run(args: IngestArgs) -> Result<()> {
    match netns::isolate("ingest")? {
        netns::Isolation::Ready => {}
        netns::Isolation::Done(code) => std::process::exit(code),
        netns::Isolation::Unavailable(why) => {
            eprintln!("ingest: no private network namespace ({why}); running on loopback only");
        }
    }
    let report = measure(args).await?;
    println!("{}", report.text);
    Ok(())
}

/// Runs the benchmark (in a private network namespace: [`run`] takes care of it).
pub async fn measure(args: IngestArgs) -> Result<IngestReport> {
    if crate::grpcurl::find_executable("ffmpeg").is_none() {
        bail!("ingest needs ffmpeg on PATH (the RTMP publishers)");
    }
    let quick = args.quick;
    let publishers = args.publishers.unwrap_or(if quick { 1 } else { 4 }).max(1);
    let window = args
        .window
        .unwrap_or(Duration::from_secs(if quick { 2 } else { 10 }));
    let settle = args
        .settle
        .unwrap_or(Duration::from_secs(if quick { 1 } else { 3 }));
    let mut kinds = Vec::new();
    for k in Kind::all() {
        if args.runs.is_empty() || args.runs.iter().any(|r| r == k.name()) {
            kinds.push(k);
        }
    }
    let wanted = |name: &str| args.runs.is_empty() || args.runs.iter().any(|r| r == name);
    let paths: Vec<g2g::Path> = g2g::Path::all()
        .into_iter()
        .filter(|p| wanted(p.name()))
        .collect();
    if kinds.is_empty() && paths.is_empty() {
        bail!("--runs: none of rtmp, rtmp-an, srt, whip, g2g-whip, g2g-rtmp, g2g-srt, g2g-srt-low");
    }
    let machine = Machine::detect();
    let load_before = procstat::load_average();
    let mut results = Vec::new();
    for kind in kinds {
        eprintln!("ingest: {} × {publishers}", kind.label());
        let r = measure_kind(kind, publishers, settle, window)
            .await
            .with_context(|| format!("{} ingest", kind.name()))?;
        eprintln!("  {}", r.progress_line());
        results.push(r);
    }
    let mut latencies = Vec::new();
    for path in paths {
        eprintln!("ingest: glass-to-glass {} × {publishers}", path.name());
        let r = g2g::measure(path, publishers, settle, window, args.srt_low_latency)
            .await
            .with_context(|| format!("{} run", path.name()))?;
        eprintln!("  {}", r.progress_line());
        latencies.push(r);
    }
    let mut out = IngestReport {
        machine: machine.to_string(),
        publishers,
        window_s: window.as_secs_f64(),
        load_before,
        load_after: procstat::load_average(),
        results,
        g2g: latencies,
        text: String::new(),
    };
    out.text = report::render(&out);
    match report::write(&out, args.results_dir.clone()) {
        Ok(path) => out
            .text
            .push_str(&format!("\nFile: `{}`.\n", path.display())),
        Err(e) => out
            .text
            .push_str(&format!("\nNote: results not written: {e:#}\n")),
    }
    Ok(out)
}

/// A publisher feeding the node.
enum Feed {
    Ffmpeg(Child),
    Whip(JoinHandle<Result<()>>),
}

impl Drop for Feed {
    fn drop(&mut self) {
        match self {
            Feed::Ffmpeg(child) => {
                let _ = child.start_kill();
            }
            Feed::Whip(task) => task.abort(),
        }
    }
}

/// How long a player may take to receive its first packet (ffmpeg starts, the node waits
/// for a keyframe).
const FIRST_PACKET_WITHIN: Duration = Duration::from_secs(20);

/// The node under test, and what it needs alive.
pub(crate) struct BenchNode {
    pub node: NodeProcess,
    /// RTMP listen address, `host:port`.
    pub rtmp: String,
    /// SRT listen address, `host:port`.
    pub srt: String,
    _control: InProcessControl,
    _dir: ClusterDir,
}

/// Starts a node taking RTMP and SRT from `publishers` callers on 127.0.0.1, with `extra`
/// arguments.
pub(crate) async fn start_node(publishers: usize, extra: &[String]) -> Result<BenchNode> {
    let dir = ClusterDir::new("ingest")?;
    let control =
        InProcessControl::start(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(3)).await?;
    let rtmp = format!("127.0.0.1:{}", free_tcp_port()?);
    let srt = format!("127.0.0.1:{}", free_udp_port()?);
    let per_ip = (publishers + 1).to_string();
    let total = (publishers + 1).max(64).to_string();
    let mut args: Vec<String> = [
        "--capacity",
        "100000",
        "--rtmp-listen",
        &rtmp,
        "--rtmp-max-connections-per-ip",
        &per_ip,
        "--rtmp-max-connections",
        &total,
        "--srt-listen",
        &srt,
        "--srt-max-connections-per-ip",
        &per_ip,
        "--srt-max-connections",
        &total,
    ]
    .map(String::from)
    .to_vec();
    args.extend_from_slice(extra);
    let spec = NodeSpec {
        id: "ingest-1".into(),
        region: "bench".into(),
        ip: Ipv4Addr::LOCALHOST,
        netns: None,
        cpus: None,
        args,
    };
    let mut node = NodeProcess::spawn(&dir, &control.url(), &spec)?;
    node.wait_ready(Duration::from_secs(40)).await?;
    Ok(BenchNode {
        node,
        rtmp,
        srt,
        _control: control,
        _dir: dir,
    })
}

async fn measure_kind(
    kind: Kind,
    publishers: usize,
    settle: Duration,
    window: Duration,
) -> Result<RunResult> {
    let bench = start_node(publishers, &[]).await?;
    let node = &bench.node;
    let fixture = source::load(true).await?;
    let mut feeds = Vec::new();
    for i in 0..publishers {
        let stream = format!("ingest-{i}");
        feeds.push(match kind {
            Kind::Whip => {
                let url = format!("{}/whip/{stream}", node.http);
                let fed = Arc::new(AtomicU64::new(0));
                Feed::Whip(source::feed_whip(Arc::clone(&fixture.clip), &url, fed).await?)
            }
            Kind::Rtmp | Kind::RtmpVideoOnly => {
                let url = format!("rtmp://{}/live/{stream}", bench.rtmp);
                Feed::Ffmpeg(ffmpeg_publish(&url, "flv", kind == Kind::Rtmp)?)
            }
            Kind::Srt => {
                let url = format!("srt://{}?streamid=#!::r={stream},m=publish", bench.srt);
                Feed::Ffmpeg(ffmpeg_publish(&url, "mpegts", true)?)
            }
        });
    }
    let recv = RecvLoop::start()?;
    let players = connect_players(kind, node, publishers, &recv)
        .await
        .with_context(|| format!("players; node log:\n{}", node.log_tail()))?;
    tokio::time::sleep(settle).await;
    let in_before = bytes_in(node).await?;
    let before: Vec<Tally> = players.iter().map(|p| p.counters().tally()).collect();
    let mark = CpuMark::take(node.pid());
    tokio::time::sleep(window).await;
    let cores = CpuMark::take(node.pid()).cores_since(&mark);
    let in_after = bytes_in(node).await?;
    let mut out = Tally::default();
    let mut starved = 0;
    for (p, b) in players.iter().zip(&before) {
        let d = p.counters().tally().since(b);
        starved += usize::from(d.received == 0);
        out.received += d.received;
        out.expected += d.expected;
        out.bytes += d.bytes;
    }
    let secs = window.as_secs_f64();
    let mbit_in = in_after.saturating_sub(in_before) as f64 * 8.0 / secs / 1e6;
    let rss = procstat::rss_bytes(node.pid());
    for p in players {
        p.close().await;
    }
    drop(feeds);
    Ok(RunResult {
        kind,
        label: kind.label().to_owned(),
        publishers,
        players_starved: starved,
        node_cores: cores.context("node CPU time unreadable")?,
        mbit_in,
        mbit_out: out.bytes as f64 * 8.0 / secs / 1e6,
        loss: match out.expected {
            0 => 0.0,
            n => out.lost() as f64 / n as f64,
        },
        node_rss: rss,
    })
}

/// One WHEP player per stream, each connected and receiving media.
async fn connect_players(
    kind: Kind,
    node: &NodeProcess,
    publishers: usize,
    recv: &RecvLoop,
) -> Result<Vec<LoadPeer>> {
    let mut players = Vec::new();
    for i in 0..publishers {
        let url = format!("{}/whep/ingest-{i}", node.http);
        let ip = Ipv4Addr::LOCALHOST.into();
        // An RTMP stream is live once ffmpeg has connected and sent a keyframe: retry until
        // the node has it, within the first-packet budget.
        let deadline = tokio::time::Instant::now() + FIRST_PACKET_WITHIN;
        let player = loop {
            let r = match kind {
                Kind::Whip => LoadPeer::whep(&url, ip, &recv.handle()).await,
                _ => LoadPeer::whep_h264(&url, ip, &recv.handle()).await,
            };
            match r {
                Ok(p) => break p,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e.context(format!("player of ingest-{i}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        player
            .first_packet(FIRST_PACKET_WITHIN)
            .await
            .with_context(|| format!("player of ingest-{i}: no media"))?;
        players.push(player);
    }
    Ok(players)
}

/// ffmpeg publishing a 640×360 25 fps H.264 baseline 1 Mbit/s test pattern (and with `audio`,
/// a 440 Hz AAC sine) to `url` as `format` (`flv` for RTMP, `mpegts` for SRT) in real time.
fn ffmpeg_publish(url: &str, format: &str, audio: bool) -> Result<Child> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"]);
    if audio {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    }
    cmd.args([
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-preset",
        "veryfast",
    ])
    .args([
        "-tune",
        "zerolatency",
        "-g",
        "50",
        "-b:v",
        "1M",
        "-pix_fmt",
        "yuv420p",
    ]);
    match audio {
        true => cmd.args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"]),
        false => cmd.arg("-an"),
    };
    cmd.args(["-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().context("starting ffmpeg")
}

/// `strata_node_publisher_bytes_in_total`: RTP bytes the node took from its publishers (for
/// RTMP, after conversion: H.264 packetized, Opus). ffmpeg's own byte count is not readable
/// from `/proc` (`wchar` misses `send`).
async fn bytes_in(node: &NodeProcess) -> Result<u64> {
    let metrics = node.metrics().await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_node_publisher_bytes_in_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no strata_node_publisher_bytes_in_total in /metrics")
}
