//! `strata-bench fanout`: WebRTC fan-out of one stream to many players, Strata beside Janus.
//!
//! Both servers get the same VP8 + Opus source ([`source`]): Janus as plain RTP into a
//! streaming-plugin mountpoint, Strata over WHIP (one node, control plane in this process on
//! the memory store). The load client ([`client`]) opens receive-only peer connections to each
//! (WHEP for Strata; Janus's HTTP API, where Janus offers and the client answers) and counts
//! RTP below SRTP. The server runs pinned to one CPU and the load client to another.
//!
//! Players are added in steps; at each step, after a settle time, one window measures the
//! server's CPU (process CPU time ÷ wall time), its resident memory, and loss: packets the
//! players received against packets the source sent in the window (and sequence gaps). The
//! most players one core carries is the largest step with loss ≤ 1 %.
//!
//! Runs in a private network namespace: re-executes itself under `unshare -n` unless it is
//! already in one, and gives Janus an extra interface carrying 127.0.0.2 (Janus gathers no
//! candidates on `lo`).

pub(crate) mod client;
mod encode;
mod janus;
mod plot;
pub(crate) mod procstat;
mod report;
mod results;
pub mod simulcast;
pub(crate) mod source;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use strata_control::config::parse_duration;
use tokio::task::JoinHandle;

use self::client::{LoadPeer, RecvLoop, Tally};
use self::procstat::{CpuMark, rss_bytes};
use self::simulcast::Mode;
use self::source::{Fed, Source};
use crate::bench::machine::Machine;
use crate::bench::wan::launch::{ClusterDir, InProcessControl, NodeProcess, NodeSpec};
use crate::bench::wan::netns;

pub use report::{Latency, ServerResult, StepResult};

/// `strata-bench fanout` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// CI smoke run: 2 players per server, a 1 s window, the committed fixture clip.
    #[arg(long, env = "STRATA_BENCH_QUICK")]
    pub quick: bool,
    /// Servers to measure, of `strata` and `janus` [default: both; Janus only if installed].
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Player counts of the ramp [default: 25, 50, 100, 150, 200, then +10 % a step to 1000].
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<usize>,
    /// Measured window at each step [default: 10s; 1s with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<Duration>,
    /// Wait after the players of a step are connected before measuring [default: 3s].
    #[arg(long, value_parser = parse_duration)]
    pub settle: Option<Duration>,
    /// Loss above which a step fails.
    #[arg(long, default_value_t = 0.01)]
    pub max_loss: f64,
    /// CPU the server is pinned to.
    #[arg(long, default_value_t = 1)]
    pub server_cpu: usize,
    /// CPU the load client (this process) is pinned to.
    #[arg(long, default_value_t = 0)]
    pub client_cpu: usize,
    /// Do not pin anything.
    #[arg(long)]
    pub no_pin: bool,
    /// Record a `perf` profile of each server at the capacity found (needs `perf`).
    #[arg(long)]
    pub perf: bool,
    /// Janus `event_loops`: handles share N loop threads; 0 is Janus's stock setting (a thread
    /// per handle), which carries about a third of the players per core when pinned. 2 did a
    /// little better than 1 on one core.
    #[arg(long, default_value_t = 2)]
    pub janus_event_loops: usize,
    /// CPUs given to each server. 1: the server is pinned to `--server-cpu` and the load
    /// client to `--client-cpu`. N > 1: the server is pinned to CPUs 0 … N−1 and the load
    /// client is not pinned, so it shares those CPUs with the server.
    #[arg(long, default_value_t = 1)]
    pub server_cores: usize,
    /// Strata's `--rtc-workers` (event loops driving players); each value of a list such as
    /// `1,2` is one Strata ramp [default: the node's own, one per CPU it may run on].
    #[arg(long, value_delimiter = ',')]
    pub rtc_workers: Vec<usize>,
    /// Directory for this run's `fanout.json` and plot [default: a new directory under
    /// $TMPDIR/strata-bench-results].
    #[arg(long, env = "STRATA_BENCH_RESULTS")]
    pub results_dir: Option<PathBuf>,
    /// The SVG plot of server CPU and loss against players [default: RESULTS_DIR/fanout.svg].
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// An earlier run to draw as "before" curves beside this one: its `fanout.json`, or a CSV
    /// with a header line and rows `server,players,cpu_cores,loss_pct`.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Also ramp Strata with a three-layer simulcast publisher: players on `auto`, then a
    /// third each pinned to `low`, `mid` and `high` (ratios against the single-layer ramp).
    #[arg(long)]
    pub simulcast: bool,
}

impl FanoutArgs {
    /// The `--quick` run with every other option at its default.
    pub fn quick() -> Self {
        Self {
            quick: true,
            servers: Vec::new(),
            steps: Vec::new(),
            window: None,
            settle: None,
            max_loss: 0.01,
            server_cpu: 1,
            client_cpu: 0,
            no_pin: true,
            perf: false,
            janus_event_loops: 2,
            server_cores: 1,
            rtc_workers: Vec::new(),
            results_dir: None,
            svg: None,
            compare: None,
            simulcast: false,
        }
    }
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// A Strata node.
    Strata,
    /// Janus's streaming plugin.
    Janus,
}

impl Kind {
    /// The server's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Strata => "Strata",
            Kind::Janus => "Janus",
        }
    }
}

/// Runs the benchmark and prints the report.
pub async fn run(args: FanoutArgs) -> Result<()> {
    match netns::isolate("fanout")? {
        netns::Isolation::Ready => {}
        netns::Isolation::Done(code) => std::process::exit(code),
        netns::Isolation::Unavailable(why) => {
            eprintln!(
                "fanout: no private network namespace ({why}); running Strata on loopback only"
            );
        }
    }
    let report = measure(args).await?;
    println!("{}", report.text);
    for f in &report.files {
        eprintln!("fanout: wrote {}", f.display());
    }
    Ok(())
}

/// What a run measured, and its markdown report.
#[derive(Debug, Clone)]
pub struct FanoutReport {
    /// One ramp per server measured.
    pub results: Vec<ServerResult>,
    /// Servers skipped or failed, and why.
    pub notes: Vec<String>,
    /// The report.
    pub text: String,
    /// Files written: the results (`fanout.json`) and the plot.
    pub files: Vec<PathBuf>,
}

/// Runs the benchmark. Must run in a private network namespace
/// (or as non-root, Strata only) — [`run`] takes care of it.
pub async fn measure(args: FanoutArgs) -> Result<FanoutReport> {
    let quick = args.quick;
    // Read the earlier run first: a bad path should fail now, not after the ramp.
    let before = match &args.compare {
        Some(path) => results::load_compare(path)?,
        None => Vec::new(),
    };
    let machine = Machine::detect();
    let load_before = procstat::load_average();
    let mut targets = Vec::new();
    let want = |name: &str| args.servers.is_empty() || args.servers.iter().any(|s| s == name);
    if want("strata") {
        let workers: Vec<Option<usize>> = match args.rtc_workers.is_empty() {
            true => vec![None],
            false => args.rtc_workers.iter().map(|&w| Some(w)).collect(),
        };
        let modes: &[Mode] = match args.simulcast {
            true => &[Mode::Single, Mode::Auto, Mode::Mixed],
            false => &[Mode::Single],
        };
        for w in workers {
            targets.extend(modes.iter().map(|&m| (Kind::Strata, w, m)));
        }
    }
    let mut notes = Vec::new();
    if want("janus") {
        let reason = janus::unavailable().or_else(|| {
            (!netns::is_root()).then(|| "Janus needs root for its extra interface".to_owned())
        });
        match reason {
            None => targets.push((Kind::Janus, None, Mode::Single)),
            Some(why) if args.servers.is_empty() => notes.push(format!("Janus skipped: {why}")),
            Some(why) => bail!("cannot run Janus: {why}"),
        }
    }
    let steps = match args.steps.is_empty() {
        false => args.steps.clone(),
        true if quick => vec![2],
        true => vec![
            25, 50, 100, 150, 200, 220, 240, 260, 280, 300, 330, 360, 400, 440, 480, 530, 580, 640,
            700, 770, 850, 940, 1000,
        ],
    };
    let window = args.window.unwrap_or(if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    let settle = args.settle.unwrap_or(if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    });
    let source = source::load(quick).await?;
    let simulcast_source = match args.simulcast {
        true => Some(simulcast::load(quick).await?),
        false => None,
    };
    let pin = !args.no_pin && !quick && machine.nproc >= 2;
    let server_cores = args.server_cores.clamp(1, machine.nproc.max(1));
    let server_cpus = match server_cores {
        1 => args.server_cpu.to_string(),
        n => format!("0-{}", n - 1),
    };
    // With more than one core for the server, the client shares them (not pinned).
    let pin_client = pin && server_cores == 1;
    if pin_client {
        procstat::pin_self(args.client_cpu)?;
    }
    let cfg = RampConfig {
        steps,
        window,
        settle,
        max_loss: args.max_loss,
        server_cpus: pin.then(|| server_cpus.clone()),
        server_cores,
        perf: args.perf,
        janus_event_loops: args.janus_event_loops,
    };
    let mut results = Vec::new();
    for (kind, workers, mode) in targets {
        let label = report::label(kind, workers, mode);
        eprintln!("fanout: {label}");
        let src = match (mode.simulcast(), &simulcast_source) {
            (true, Some(s)) => s,
            _ => &source,
        };
        let r = measure_server(kind, workers, mode, src, &cfg).await;
        match r {
            Ok(r) => results.push(r),
            Err(e) if quick => return Err(e.context(format!("{label} fan-out"))),
            Err(e) => notes.push(format!("{label} failed: {e:#}")),
        }
    }
    if pin_client {
        procstat::unpin_self();
    }
    let placement = match (pin, server_cores) {
        (false, _) => "Nothing pinned.".to_owned(),
        (true, 1) => format!(
            "Server pinned to CPU {} (`taskset`), load client to CPU {}.",
            args.server_cpu, args.client_cpu
        ),
        (true, n) => format!(
            "Server pinned to CPUs {server_cpus} ({n} cores, `taskset`); the load client is \
             not pinned and shares them."
        ),
    };
    let text = report::render(&report::Context {
        machine: &machine,
        source: &source,
        simulcast_source: simulcast_source.as_ref(),
        window,
        max_loss: args.max_loss,
        placement: &placement,
        server_cores,
        janus_event_loops: args.janus_event_loops,
        load_before,
        load_after: procstat::load_average(),
        results: &results,
        notes: &notes,
    });
    let run = results::Run {
        machine: machine.to_string(),
        source: source.label.clone(),
        window_s: window.as_secs_f64(),
        max_loss: args.max_loss,
        server_cores,
        placement,
        results: results.clone(),
    };
    let (files, text) = match results::write(&run, &args, &before) {
        Ok(files) => {
            let list: Vec<String> = files.iter().map(|f| format!("`{}`", f.display())).collect();
            (files, format!("{text}\nFiles: {}.\n", list.join(", ")))
        }
        Err(e) => (
            Vec::new(),
            format!("{text}\nNote: results not written: {e:#}\n"),
        ),
    };
    Ok(FanoutReport {
        results,
        notes,
        text,
        files,
    })
}

struct RampConfig {
    steps: Vec<usize>,
    window: Duration,
    settle: Duration,
    max_loss: f64,
    /// `taskset -c` list for the server, when pinned.
    server_cpus: Option<String>,
    server_cores: usize,
    perf: bool,
    janus_event_loops: usize,
}

/// A server under test with its source running.
struct Server {
    kind: Kind,
    /// How players choose layers.
    mode: Mode,
    /// Per clip track, whether a player on each layer receives it: `[low, mid, high]`, or
    /// one entry (every track) for a single-layer source.
    received: Vec<Vec<bool>>,
    pid: u32,
    /// Signalling target: WHEP URL or Janus API URL.
    url: String,
    bind_ip: IpAddr,
    fed: Arc<Fed>,
    feeder: JoinHandle<Result<()>>,
    /// Receives every player's media.
    recv: RecvLoop,
    // Kept alive while the server runs.
    _parts: Parts,
}

enum Parts {
    Strata {
        _node: NodeProcess,
        _control: InProcessControl,
        _dir: ClusterDir,
    },
    Janus {
        _janus: janus::Janus,
        _iface: Option<netns::Veth>,
        _dir: ClusterDir,
    },
}

impl Drop for Server {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

async fn start_server(
    kind: Kind,
    rtc_workers: Option<usize>,
    mode: Mode,
    source: &Source,
    cfg: &RampConfig,
) -> Result<Server> {
    let cpus = cfg.server_cpus.clone();
    let fed = Arc::new(Fed::new(source.tracks.len()));
    let clip = Arc::clone(&source.clip);
    let received = match source.simulcast() {
        true => strata_media::Layer::ALL
            .iter()
            .map(|&l| source.received_by(Some(l)))
            .collect(),
        false => vec![source.received_by(None)],
    };
    match kind {
        Kind::Strata => {
            let dir = ClusterDir::new("fanout")?;
            let control =
                InProcessControl::start(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(3)).await?;
            let mut args = vec!["--capacity".to_owned(), "100000".to_owned()];
            if let Some(w) = rtc_workers {
                args.extend(["--rtc-workers".to_owned(), w.to_string()]);
            }
            let spec = NodeSpec {
                id: "fanout-1".into(),
                region: "bench".into(),
                ip: Ipv4Addr::LOCALHOST,
                netns: None,
                cpus,
                args,
            };
            let mut node = NodeProcess::spawn(&dir, &control.url(), &spec)?;
            node.wait_ready(Duration::from_secs(40)).await?;
            let whip = format!("{}/whip/fanout", node.http);
            let feeder = source::feed_source_whip(source, &whip, Arc::clone(&fed)).await?;
            Ok(Server {
                kind,
                mode,
                received,
                pid: node.pid(),
                url: format!("{}/whep/fanout", node.http),
                bind_ip: Ipv4Addr::LOCALHOST.into(),
                fed,
                feeder,
                recv: RecvLoop::start()?,
                _parts: Parts::Strata {
                    _node: node,
                    _control: control,
                    _dir: dir,
                },
            })
        }
        Kind::Janus => {
            let dir = ClusterDir::new("fanout-janus")?;
            let ice_ip = Ipv4Addr::new(127, 0, 0, 2);
            let iface = netns::Veth::loopback_alias(ice_ip)?;
            let janus = janus::Janus::start(
                dir.path(),
                &clip,
                iface.name(),
                ice_ip,
                cpus.as_deref(),
                cfg.janus_event_loops,
            )
            .await?;
            let feeder =
                source::feed_rtp(Arc::clone(&clip), janus.rtp_ports.clone(), Arc::clone(&fed));
            Ok(Server {
                kind,
                mode,
                received,
                pid: janus.pid(),
                url: janus.api.clone(),
                // libnice sends from its 127.0.0.2 socket out of that interface: a player on
                // 127.0.0.1 would never hear back, one on 127.0.0.2 is delivered locally.
                bind_ip: ice_ip.into(),
                fed,
                feeder,
                recv: RecvLoop::start()?,
                _parts: Parts::Janus {
                    _janus: janus,
                    _iface: Some(iface),
                    _dir: dir,
                },
            })
        }
    }
}

impl Server {
    /// Player `index` of the ramp (its index decides its layer in a mixed run).
    async fn new_peer(&self, index: usize) -> Result<LoadPeer> {
        match self.kind {
            Kind::Strata => {
                let url = match self.mode.pinned(index) {
                    Some(layer) => format!("{}?layer={}", self.url, layer.as_str()),
                    None => self.url.clone(),
                };
                LoadPeer::whep(&url, self.bind_ip, &self.recv.handle()).await
            }
            Kind::Janus => {
                LoadPeer::janus(
                    &self.url,
                    janus::MOUNTPOINT,
                    self.bind_ip,
                    &self.recv.handle(),
                )
                .await
            }
        }
    }

    /// Packets sent per clip track so far.
    fn fed(&self) -> Vec<u64> {
        self.fed.snapshot()
    }

    /// Of the packets sent between two [`fed`](Self::fed) snapshots, those player `index`
    /// should have received.
    fn expected(&self, index: usize, before: &[u64], after: &[u64]) -> u64 {
        let layer = self.mode.expected(index).map_or(0, |l| l.index());
        let Some(received) = self.received.get(layer).or(self.received.first()) else {
            return 0;
        };
        (after.iter().zip(before))
            .zip(received)
            .filter(|(_, r)| **r)
            .map(|((a, b), _)| a.saturating_sub(*b))
            .sum()
    }
}

/// Players connected at once while a step adds players.
const CONNECT_CONCURRENCY: usize = 16;
/// How long a new player may take to receive its first packet.
const FIRST_PACKET_WITHIN: Duration = Duration::from_secs(20);

async fn measure_server(
    kind: Kind,
    rtc_workers: Option<usize>,
    mode: Mode,
    source: &Source,
    cfg: &RampConfig,
) -> Result<ServerResult> {
    let server = start_server(kind, rtc_workers, mode, source, cfg).await?;
    let label = report::label(kind, rtc_workers, mode);
    // Idle with the source flowing: the baseline for memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_mark = CpuMark::take(server.pid);
    tokio::time::sleep(Duration::from_secs(2).min(cfg.window)).await;
    let idle_cores = CpuMark::take(server.pid).cores_since(&base_mark);
    let base_rss = rss_bytes(server.pid);
    let mut peers: Vec<LoadPeer> = Vec::new();
    let mut steps: Vec<StepResult> = Vec::new();
    let mut connect_failures = 0usize;
    // Up the steps until one fails. Never down again: a server that was overloaded may carry
    // backlog into the next window, so every measured step starts from a lighter one.
    let mut pass: Option<usize> = None;
    for &target in &cfg.steps {
        let t0 = Instant::now();
        let mut first_packet = Vec::new();
        let failed_now = set_players(&server, &mut peers, target, &mut first_packet).await;
        connect_failures += failed_now;
        let setup = t0.elapsed();
        tokio::time::sleep(cfg.settle).await;
        let mut step = measure_step(&server, &peers, target, failed_now, setup, cfg.window).await;
        step.first_packet = Latency::of(first_packet);
        eprintln!("  {}", step.progress_line(&label));
        let failed = step.loss() > cfg.max_loss || step.failed * 50 > target.max(1);
        steps.push(step);
        if failed {
            break;
        }
        pass = Some(target);
    }
    // Profiled back at the capacity found, players connected: where the time goes under load.
    let perf_report = match cfg.perf {
        true => {
            let at = pass.unwrap_or(1);
            set_players(&server, &mut peers, at, &mut Vec::new()).await;
            tokio::time::sleep(cfg.settle).await;
            match report::perf_profile(server.pid).await {
                Ok(p) => Some(format!("at {at} players\n{p}")),
                Err(e) => Some(format!("perf failed: {e:#}")),
            }
        }
        false => None,
    };
    for p in peers {
        tokio::spawn(p.close());
    }
    drop(server);
    Ok(ServerResult {
        kind,
        rtc_workers,
        mode,
        server_cores: cfg.server_cores,
        steps,
        idle_cores,
        base_rss,
        connect_failures,
        perf: perf_report,
    })
}

/// Adds or removes players until `target` are connected; returns how many failed to connect
/// or to receive media. New players' first-packet times go to `first_packet`.
async fn set_players(
    server: &Server,
    peers: &mut Vec<LoadPeer>,
    target: usize,
    first_packet: &mut Vec<Duration>,
) -> usize {
    while peers.len() > target {
        if let Some(p) = peers.pop() {
            // Closed in the background: ending sessions takes a while.
            tokio::spawn(p.close());
        }
    }
    let already = peers.len();
    let mut failed = 0;
    while peers.len() + failed < target {
        let batch = (target - peers.len() - failed).min(CONNECT_CONCURRENCY);
        let first = peers.len() + failed;
        let tasks: Vec<_> = (first..first + batch).map(|i| server.new_peer(i)).collect();
        for r in futures::future::join_all(tasks).await {
            match r {
                Ok(p) => peers.push(p),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %format!("{e:#}"), "player failed to connect");
                }
            }
        }
    }
    let waits: Vec<_> = peers[already..]
        .iter()
        .map(|p| p.first_packet(FIRST_PACKET_WITHIN))
        .collect();
    for r in futures::future::join_all(waits).await {
        match r {
            Ok(d) => first_packet.push(d),
            Err(_) => failed += 1,
        }
    }
    failed
}

/// One measurement window with `peers` connected.
async fn measure_step(
    server: &Server,
    peers: &[LoadPeer],
    target: usize,
    failed: usize,
    setup: Duration,
    window_len: Duration,
) -> StepResult {
    let before: Vec<Tally> = peers.iter().map(|p| p.counters().tally()).collect();
    let fed_before = server.fed();
    let udp_before = procstat::udp_drops();
    let server_mark = CpuMark::take(server.pid);
    let client_mark = CpuMark::take(std::process::id());
    tokio::time::sleep(window_len).await;
    let after: Vec<Tally> = peers.iter().map(|p| p.counters().tally()).collect();
    let fed_after = server.fed();
    let cores = CpuMark::take(server.pid).cores_since(&server_mark);
    let client_cores = CpuMark::take(std::process::id()).cores_since(&client_mark);
    let udp_drops = procstat::udp_drops().saturating_sub(udp_before);
    let rss = rss_bytes(server.pid);
    let mut window = Tally::default();
    let mut starved = 0;
    for (a, b) in after.iter().zip(&before) {
        let d = a.since(b);
        if d.received == 0 {
            starved += 1;
        }
        window.received += d.received;
        window.expected += d.expected;
        window.bytes += d.bytes;
    }
    let offered: u64 = (0..peers.len())
        .map(|i| server.expected(i, &fed_before, &fed_after))
        .sum();
    StepResult {
        target,
        players: peers.len(),
        failed,
        starved,
        setup,
        cores,
        client_cores,
        rss,
        loss_seq: loss(window.lost(), window.expected),
        loss_rate: loss(offered.saturating_sub(window.received), offered),
        udp_drops,
        mbit_out: window.bytes as f64 * 8.0 / window_len.as_secs_f64() / 1e6,
        first_packet: None,
    }
}

fn loss(lost: u64, of: u64) -> f64 {
    if of == 0 {
        return 0.0;
    }
    lost as f64 / of as f64
}
