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
mod ramp;
mod report;
mod results;
mod server;
pub mod simulcast;
pub(crate) mod source;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use strata_control::config::parse_duration;

use self::client::NodeFeedback;
use self::simulcast::Mode;
use crate::bench::machine::Machine;
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
    /// Strata's players offer transport-cc and send transport feedback every 100 ms, as
    /// browsers do, so the node runs its bandwidth estimate (Janus's players do not)
    /// [default: off].
    #[arg(long)]
    pub transport_cc: bool,
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
            transport_cc: false,
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
    /// With `--transport-cc`, each Strata ramp's transport feedback.
    pub transport_feedback: Vec<NodeFeedback>,
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
    let (targets, mut notes) = targets(&args)?;
    let source = source::load(quick).await?;
    let simulcast_source = match args.simulcast {
        true => Some(simulcast::load(quick).await?),
        false => None,
    };
    let placement = Placement::new(&args, &machine);
    if placement.pin_client {
        procstat::pin_self(args.client_cpu)?;
    }
    let cfg = ramp_config(&args, &placement);
    let mut results = Vec::new();
    let mut feedback = Vec::new();
    for (kind, workers, mode) in targets {
        let label = report::label(kind, workers, mode);
        eprintln!("fanout: {label}");
        let src = match (mode.simulcast(), &simulcast_source) {
            (true, Some(s)) => s,
            _ => &source,
        };
        let r = ramp::measure_server(kind, workers, mode, src, &cfg, &mut feedback).await;
        match r {
            Ok(r) => results.push(r),
            Err(e) if quick => return Err(e.context(format!("{label} fan-out"))),
            Err(e) => notes.push(format!("{label} failed: {e:#}")),
        }
    }
    if placement.pin_client {
        procstat::unpin_self();
    }
    notes.extend(feedback.iter().map(|f| f.to_string()));
    let placement = placement.text(&args);
    let text = report::render(&report::Context {
        machine: &machine,
        source: &source,
        simulcast_source: simulcast_source.as_ref(),
        window: cfg.window,
        max_loss: args.max_loss,
        placement: &placement,
        server_cores: cfg.server_cores,
        janus_event_loops: args.janus_event_loops,
        load_before,
        load_after: procstat::load_average(),
        results: &results,
        notes: &notes,
    });
    let run = results::Run {
        machine: machine.to_string(),
        source: source.label.clone(),
        window_s: cfg.window.as_secs_f64(),
        max_loss: args.max_loss,
        server_cores: cfg.server_cores,
        placement,
        results: results.clone(),
    };
    let (files, text) = write_results(&run, &args, &before, text);
    Ok(FanoutReport {
        results,
        notes,
        text,
        files,
        transport_feedback: feedback,
    })
}

/// A ramp to run: the server, Strata's `--rtc-workers`, how the players choose layers.
type Target = (Kind, Option<usize>, Mode);

/// The ramps to run, and notes on servers skipped.
fn targets(args: &FanoutArgs) -> Result<(Vec<Target>, Vec<String>)> {
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
    if want("strata") && !args.transport_cc {
        notes.push("transport-cc off: Strata's players send no transport feedback.".to_owned());
    }
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
    Ok((targets, notes))
}

/// How each ramp runs, the same for every server.
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
    transport_cc: bool,
}

/// Where the server and the load client run.
struct Placement {
    /// Whether anything is pinned.
    pin: bool,
    server_cores: usize,
    /// `taskset -c` list for the server.
    server_cpus: String,
    /// With more than one core for the server, the client shares them (not pinned).
    pin_client: bool,
}

impl Placement {
    fn new(args: &FanoutArgs, machine: &Machine) -> Self {
        let pin = !args.no_pin && !args.quick && machine.nproc >= 2;
        let server_cores = args.server_cores.clamp(1, machine.nproc.max(1));
        let server_cpus = match server_cores {
            1 => args.server_cpu.to_string(),
            n => format!("0-{}", n - 1),
        };
        Self {
            pin,
            server_cores,
            server_cpus,
            pin_client: pin && server_cores == 1,
        }
    }

    /// The report's sentence on placement.
    fn text(&self, args: &FanoutArgs) -> String {
        match (self.pin, self.server_cores) {
            (false, _) => "Nothing pinned.".to_owned(),
            (true, 1) => format!(
                "Server pinned to CPU {} (`taskset`), load client to CPU {}.",
                args.server_cpu, args.client_cpu
            ),
            (true, n) => format!(
                "Server pinned to CPUs {} ({n} cores, `taskset`); the load client is \
                 not pinned and shares them.",
                self.server_cpus
            ),
        }
    }
}

/// Steps, window and settle time (defaults by `--quick`), and the server's placement.
fn ramp_config(args: &FanoutArgs, placement: &Placement) -> RampConfig {
    let quick = args.quick;
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
    RampConfig {
        steps,
        window,
        settle,
        max_loss: args.max_loss,
        server_cpus: placement.pin.then(|| placement.server_cpus.clone()),
        server_cores: placement.server_cores,
        perf: args.perf,
        janus_event_loops: args.janus_event_loops,
        transport_cc: args.transport_cc,
    }
}

/// Writes `fanout.json` and the plot; the report with the files written (or why not) added.
fn write_results(
    run: &results::Run,
    args: &FanoutArgs,
    before: &[plot::Series],
    text: String,
) -> (Vec<PathBuf>, String) {
    match results::write(run, args, before) {
        Ok(files) => {
            let list: Vec<String> = files.iter().map(|f| format!("`{}`", f.display())).collect();
            let text = format!("{text}\nFiles: {}.\n", list.join(", "));
            (files, text)
        }
        Err(e) => (
            Vec::new(),
            format!("{text}\nNote: results not written: {e:#}\n"),
        ),
    }
}
