//! `strata-bench scale`: the control plane and its etcd under thousands of simulated nodes.
//!
//! Each step starts a fresh etcd (one member, or three with `--etcd-members 3`) and
//! `--replicas` control-plane replicas, then runs in this process thousands of lightweight
//! simulated nodes: no media, real gRPC. Every node registers, renews its lease with a load
//! report every keep-alive interval, publishes, resolves and watches streams. The phases:
//!
//! 1. **setup**: every node registers, `streams` streams are published and each gets
//!    `--pulls` pulls (resolve + topology watch) in random regions;
//! 2. **quiet**: no churn, only keep-alives and settled resolves: the steady-state
//!    bookkeeping's write rate;
//! 3. **floors**: one caller, sequentially: a no-op RPC and a raw etcd transaction beside a
//!    settled resolve and a claim, under the same background load;
//! 4. **churn**: streams ending and starting, players arriving and leaving in regions (pulls
//!    starting and ending), nodes dying (replaced by joining ones) and being drained;
//! 5. **burst**: `--burst` new streams published in one region, then resolved at once by the
//!    nodes of another region, each resolve electing that region's origin.
//!
//! With `--baseline-args` or `--baseline-bin`, every step runs twice: first with those extra
//! flags or that other `strata-control` binary for the replicas (an older behaviour to compare
//! with), then as built.

mod etcd_stats;
mod floors;
mod hist;
mod meter;
mod report;
mod sim;
mod step;
mod streams;
mod world;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use strata_control::config::parse_duration;

use crate::bench::control::target::Placement;
use crate::bench::machine::Machine;
pub use report::Report;
pub use step::StepResult;

/// `strata-bench scale` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// CI smoke run: one small step of a few seconds.
    #[arg(long, env = "STRATA_BENCH_QUICK")]
    pub quick: bool,
    /// Steps as NODESxSTREAMS, comma separated [default: 100x1000,300x3000,1000x10000;
    /// 20x100 with --quick].
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<String>,
    /// Regions the nodes are spread over.
    #[arg(long, default_value_t = 5)]
    pub regions: usize,
    /// Pulls (a node in some region resolving and watching) each stream starts with.
    #[arg(long, default_value_t = 2)]
    pub pulls: usize,
    /// Streams ending per second in the churn phase (each followed by a new one).
    #[arg(long, default_value_t = 5.0)]
    pub churn: f64,
    /// Players arriving per second in the churn phase (and as many leaving).
    #[arg(long, default_value_t = 50.0)]
    pub players_rate: f64,
    /// Settled resolves per second (quiet and churn phases).
    #[arg(long, default_value_t = 100.0)]
    pub resolve_rate: f64,
    /// Node events per minute in the churn phase: two of three a node dying (and a spare
    /// joining in its place), one of three a node drained.
    #[arg(long, default_value_t = 6.0)]
    pub node_churn: f64,
    /// Control-plane replicas.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// etcd members (1 or 3).
    #[arg(long, default_value_t = 1)]
    pub etcd_members: usize,
    /// The churn phase's length [default: 30s; 3s with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The quiet phase's length [default: 15s; 2s with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub quiet: Option<Duration>,
    /// New streams of the burst [default: 1000; 50 with --quick].
    #[arg(long)]
    pub burst: Option<usize>,
    /// Calls of each floor [default: 200; 20 with --quick].
    #[arg(long)]
    pub floor_calls: Option<usize>,
    /// Node lease TTL (the control plane's default is 3s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Extra `strata-control` flags, space separated, for a baseline run of every step
    /// before the normal one (e.g. "--load-report-tolerance 0").
    #[arg(long, allow_hyphen_values = true)]
    pub baseline_args: Option<String>,
    /// Another `strata-control` binary for the baseline run (e.g. one built before a change);
    /// implies a baseline run.
    #[arg(long)]
    pub baseline_bin: Option<PathBuf>,
    /// Whether each publishing node keeps a topology watch of its stream open, as a WHIP
    /// primary does (to learn that its standby took over): one more watch per live stream.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub publisher_watches: bool,
    /// Run the replicas inside this process (no per-replica CPU or memory then).
    #[arg(long)]
    pub in_process: bool,
    /// The `strata-control` binary [default: next to this binary].
    #[arg(long)]
    pub control_bin: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One step's size.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Step {
    /// Nodes alive.
    pub nodes: usize,
    /// Streams live.
    pub streams: usize,
}

/// The options with defaults applied and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    steps: Vec<Step>,
    regions: usize,
    pulls: usize,
    churn: f64,
    players_rate: f64,
    resolve_rate: f64,
    node_churn: f64,
    replicas: usize,
    etcd_members: usize,
    duration: Duration,
    quiet: Duration,
    burst: usize,
    floor_calls: usize,
    lease_ttl: Duration,
    publisher_watches: bool,
    baseline_args: Option<Vec<String>>,
    baseline_placement: Placement,
    placement: Placement,
    placement_note: Option<String>,
}

fn parse_step(s: &str) -> Result<Step> {
    let (n, st) = s
        .trim()
        .split_once(['x', 'X'])
        .with_context(|| format!("step {s:?}: expected NODESxSTREAMS"))?;
    let step = Step {
        nodes: n
            .trim()
            .parse()
            .with_context(|| format!("step {s:?}: nodes"))?,
        streams: st
            .trim()
            .parse()
            .with_context(|| format!("step {s:?}: streams"))?,
    };
    ensure!(
        (2..=20_000).contains(&step.nodes) && step.streams <= 200_000,
        "step {s:?}: 2..=20000 nodes and at most 200000 streams"
    );
    Ok(step)
}

impl Plan {
    fn new(a: &ScaleArgs) -> Result<Self> {
        let q = a.quick;
        let steps: Vec<String> = if !a.steps.is_empty() {
            a.steps.clone()
        } else if q {
            vec!["20x100".into()]
        } else {
            vec!["100x1000".into(), "300x3000".into(), "1000x10000".into()]
        };
        let steps = steps
            .iter()
            .map(|s| parse_step(s))
            .collect::<Result<Vec<_>>>()?;
        ensure!((2..=50).contains(&a.regions), "--regions must be 2..=50");
        ensure!(a.pulls <= 20, "--pulls must be at most 20");
        ensure!((1..=8).contains(&a.replicas), "--replicas must be 1..=8");
        ensure!(
            a.etcd_members == 1 || a.etcd_members == 3,
            "--etcd-members must be 1 or 3"
        );
        for (name, v) in [
            ("--churn", a.churn),
            ("--players-rate", a.players_rate),
            ("--resolve-rate", a.resolve_rate),
            ("--node-churn", a.node_churn),
        ] {
            ensure!((0.0..=10_000.0).contains(&v), "{name} must be 0..=10000");
        }
        ensure!(
            a.lease_ttl >= Duration::from_secs(1),
            "--lease-ttl must be at least 1s"
        );
        let pick = |v: Option<Duration>, quick: u64, full: u64| {
            v.unwrap_or(Duration::from_secs(if q { quick } else { full }))
        };
        let (duration, quiet) = (pick(a.duration, 3, 30), pick(a.quiet, 2, 15));
        ensure!(
            duration <= Duration::from_secs(3600) && quiet <= Duration::from_secs(3600),
            "phases of at most 1h"
        );
        let (placement, placement_note) =
            crate::bench::control::placement_of(a.in_process, false, a.control_bin.as_ref())?;
        let mut baseline_args = a
            .baseline_args
            .as_ref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
        let baseline_placement = match &a.baseline_bin {
            Some(bin) => {
                ensure!(bin.is_file(), "no --baseline-bin at {}", bin.display());
                baseline_args.get_or_insert_with(Vec::new);
                Placement::Process(bin.clone())
            }
            None => placement.clone(),
        };
        if baseline_args.is_some() && matches!(placement, Placement::InProcess) {
            bail!("--baseline-args needs the replicas as processes (a strata-control binary)");
        }
        Ok(Self {
            steps,
            regions: a.regions,
            pulls: a.pulls,
            churn: a.churn,
            players_rate: a.players_rate,
            resolve_rate: a.resolve_rate,
            node_churn: a.node_churn,
            replicas: a.replicas,
            etcd_members: a.etcd_members,
            duration,
            quiet,
            burst: a.burst.unwrap_or(if q { 50 } else { 1000 }),
            floor_calls: a.floor_calls.unwrap_or(if q { 20 } else { 200 }).max(1),
            lease_ttl: a.lease_ttl,
            publisher_watches: a.publisher_watches,
            baseline_args,
            baseline_placement,
            placement,
            placement_note,
        })
    }
}

/// Runs every step and returns the report.
pub async fn measure(args: ScaleArgs) -> Result<Report> {
    let plan = Plan::new(&args)?;
    let machine = Machine::detect();
    let load_before = crate::bench::fanout::procstat::load_average();
    let mut steps = Vec::new();
    let mut failed = Vec::new();
    for step in &plan.steps {
        let mut runs = Vec::new();
        if let Some(base) = &plan.baseline_args {
            runs.push((&plan.baseline_placement, "baseline", base.as_slice()));
        }
        runs.push((&plan.placement, "current", &[]));
        for (placement, variant, args) in runs {
            // A step that fails is reported; the others still run.
            match step::run(&plan, step, placement, variant, args).await {
                Ok(r) => {
                    eprintln!("{}", serde_json::to_string(&r).unwrap_or_default());
                    steps.push(r);
                }
                Err(e) => {
                    let why = format!("{}x{} ({variant}): {e:#}", step.nodes, step.streams);
                    eprintln!("strata-bench scale: step failed: {why}");
                    failed.push(why);
                }
            }
        }
    }
    let mut report = Report::new(machine, &plan, load_before, steps);
    report.failed_steps = failed;
    Ok(report)
}

/// Runs the benchmark, prints the report (markdown) on stdout, and writes the JSON if asked.
pub async fn run(args: ScaleArgs) -> Result<()> {
    let json = args.json.clone();
    let report = measure(args).await?;
    println!("{}", report.markdown());
    if let Some(path) = json {
        std::fs::write(&path, report.json()?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    report.check()
}
