//! One step of the benchmark: a fresh etcd and fresh replicas, the simulated nodes, and the
//! phases measured on them (setup, quiet, floors, churn, burst).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use strata_proto::v1;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::etcd_stats::KeyWatch;
use super::floors::{self, Floors};
use super::hist::{Hist, Summary};
use super::meter::{self, Mark, Phase, Pids};
use super::sim::{Counters, Life, SimNode};
use super::streams::{self, Ops};
use super::world::{self, World};
use super::{Plan, Step};
use crate::bench::control::target::{Placement, Target};
use crate::etcd::EtcdCluster;

/// Operations in flight at most (publishes, pulls, releases, resolves of the driver).
const IN_FLIGHT: usize = 256;
/// The driver's tick.
const TICK: Duration = Duration::from_millis(10);

/// What one step measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Nodes alive.
    pub nodes: usize,
    /// Streams live at the start.
    pub streams: usize,
    /// Which configuration of the replicas ("current", "baseline").
    pub variant: String,
    /// Extra flags the replicas ran with.
    pub replica_args: Vec<String>,
    /// Registering every node.
    pub register: Summary,
    /// Seconds to publish every stream and set up its pulls.
    pub populate_secs: f64,
    /// The phases.
    pub phases: Vec<Phase>,
    /// Sequential floor calls measured beside the load.
    pub floors: Floors,
    /// A region electing regional origins for a burst of new streams.
    pub burst: Burst,
    /// Seconds a replica started after the phases took to load its cache and serve.
    pub fresh_replica_secs: Option<f64>,
    /// Why that replica did not serve, if it did not.
    pub fresh_replica_error: Option<String>,
    /// Operations skipped for want of an alive node or a stream.
    pub skipped: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// The burst: `streams` new streams published in one region, then resolved at once by nodes of
/// another region, each resolve electing that region's origin.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Burst {
    /// New streams.
    pub streams: usize,
    /// From the first resolve sent to the last answered.
    pub secs: f64,
    /// Each resolve.
    pub resolve: Summary,
    /// Resolves that failed.
    pub failed: usize,
    /// Resolves refused RESOURCE_EXHAUSTED (and retried after the hint).
    pub refused: u64,
}

/// Runs one step with these extra replica flags.
pub async fn run(
    plan: &Plan,
    step: &Step,
    placement: &Placement,
    variant: &str,
    args: &[String],
) -> Result<StepResult> {
    eprintln!(
        "strata-bench scale: {} nodes, {} streams ({variant})…",
        step.nodes, step.streams
    );
    let etcd = EtcdCluster::start(plan.etcd_members)
        .await
        .context("starting etcd")?;
    let endpoints = etcd.endpoints();
    let mut replicas = Vec::new();
    for _ in 0..plan.replicas {
        let t = Target::start_on(placement, &endpoints, plan.lease_ttl, args)
            .await
            .context("starting a control-plane replica")?;
        replicas.push(t);
    }
    let pids = Pids {
        replicas: replicas.iter().map(Target::pid).collect(),
        etcd: etcd.members().iter().map(|m| m.pid()).collect(),
    };
    let urls: Vec<String> = replicas.iter().map(Target::url).collect();
    let result = measure(plan, step, &endpoints[0], &urls, &pids).await;
    // A replica (re)started at this size: how long until its cache has loaded and it serves.
    let t0 = Instant::now();
    let fresh = match Target::start_on(placement, &endpoints, plan.lease_ttl, args).await {
        Ok(t) => {
            let secs = t0.elapsed().as_secs_f64();
            replicas.push(t);
            Ok(secs)
        }
        Err(e) => Err(format!("{e:#}")),
    };
    for r in replicas {
        r.stop().await.context("stopping a replica")?;
    }
    drop(etcd);
    let mut result = result?;
    match fresh {
        Ok(secs) => result.fresh_replica_secs = Some(secs),
        Err(e) => result.fresh_replica_error = Some(e),
    }
    result.variant = variant.to_owned();
    result.replica_args = args.to_vec();
    Ok(result)
}

async fn measure(
    plan: &Plan,
    step: &Step,
    etcd: &str,
    urls: &[String],
    pids: &Pids,
) -> Result<StepResult> {
    let keys = KeyWatch::start(etcd, "/strata/").await?;
    let counters = Arc::new(Counters::default());
    let nodes = Arc::new(sim_nodes(plan, step, urls)?);
    let keepalives = world::register_all(&nodes, &counters, 16).await?;
    let register = counters.register.take();
    let mut world = new_world(plan, &nodes, &counters);
    let mark = || Mark::take(etcd, &keys.counts, &counters, pids);
    let mut phases = Vec::new();

    let a = mark().await?;
    populate(&mut world, plan, step).await;
    let b = mark().await?;
    let populate_secs = (b_at(&a, &b)).as_secs_f64();
    let mut setup = meter::phase("setup", &a, &b, &counters, &keys.counts, pids);
    setup.streams = world.live_count();
    setup.pulls = world.pull_count();
    phases.push(setup);

    // The load reports of the setup land within a keep-alive interval or two.
    tokio::time::sleep(plan.lease_ttl).await;
    let _ = (counters.keepalive.take(), counters.resolve_settled.take());
    phases.push(
        drive(
            &mut world,
            "quiet",
            plan.quiet,
            Rates::quiet(plan),
            &mark,
            pids,
            &keys,
        )
        .await?,
    );
    let floors = floors::measure(&world, etcd, plan.floor_calls).await?;
    let _ = (counters.keepalive.take(), counters.resolve_settled.take());
    phases.push(
        drive(
            &mut world,
            "churn",
            plan.duration,
            Rates::churn(plan),
            &mark,
            pids,
            &keys,
        )
        .await?,
    );
    let burst = burst(&mut world, plan).await;
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    stop_nodes(&nodes, keepalives);
    Ok(StepResult {
        nodes: step.nodes,
        streams: step.streams,
        variant: String::new(),
        replica_args: Vec::new(),
        register,
        populate_secs,
        phases,
        floors,
        burst,
        fresh_replica_secs: None,
        fresh_replica_error: None,
        skipped: world.skipped,
        first_error,
    })
}

/// The step's simulated nodes: `step.nodes` alive, then the spares, spread over the regions
/// and the replicas.
fn sim_nodes(plan: &Plan, step: &Step, urls: &[String]) -> Result<Vec<Arc<SimNode>>> {
    let spares = spares(plan, step);
    let mut nodes = Vec::with_capacity(step.nodes + spares);
    for i in 0..step.nodes + spares {
        let life = if i < step.nodes {
            Life::Alive
        } else {
            Life::Spare
        };
        let region = format!("r{}", i % plan.regions);
        nodes.push(Arc::new(SimNode::new(
            format!("n{i}"),
            region,
            &urls[i % urls.len()],
            life,
        )?));
    }
    Ok(nodes)
}

/// The world the driver runs on `nodes`, with [`IN_FLIGHT`] operations at most.
fn new_world(plan: &Plan, nodes: &Arc<Vec<Arc<SimNode>>>, counters: &Arc<Counters>) -> World {
    let (tx, rx) = mpsc::unbounded_channel();
    let ops = Ops {
        nodes: nodes.clone(),
        counters: counters.clone(),
        permits: Arc::new(Semaphore::new(IN_FLIGHT)),
        done: tx,
        publisher_watches: plan.publisher_watches,
    };
    World::new(ops, rx, plan.regions)
}

/// The setup phase's work: the step's streams, then pulls of them everywhere.
async fn populate(world: &mut World, plan: &Plan, step: &Step) {
    for _ in 0..step.streams {
        world.start_stream(None);
    }
    world.settle().await;
    world.pull_everywhere(plan.pulls);
    world.settle().await;
}

/// Ends the step's nodes: dead to the world, keep-alives stopped.
fn stop_nodes(nodes: &[Arc<SimNode>], keepalives: Vec<tokio::task::JoinHandle<()>>) {
    for n in nodes {
        n.set_life(Life::Dead);
    }
    for k in keepalives {
        k.abort();
    }
}

fn b_at(a: &Mark, b: &Mark) -> Duration {
    b.at().duration_since(a.at())
}

/// Spare nodes, enough for every node that dies in the churn phase to be replaced.
fn spares(plan: &Plan, step: &Step) -> usize {
    let deaths = (plan.node_churn * plan.duration.as_secs_f64() / 60.0).ceil() as usize;
    (deaths + plan.regions).min(step.nodes)
}

/// Events per second of a phase.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    stream_ends: f64,
    player_arrivals: f64,
    player_departures: f64,
    settled_resolves: f64,
    node_events: f64,
}

impl Rates {
    /// No churn: keep-alives and settled resolves only.
    fn quiet(plan: &Plan) -> Self {
        Self {
            settled_resolves: plan.resolve_rate,
            ..Self::default()
        }
    }

    /// Everything.
    fn churn(plan: &Plan) -> Self {
        Self {
            stream_ends: plan.churn,
            player_arrivals: plan.players_rate,
            player_departures: plan.players_rate,
            settled_resolves: plan.resolve_rate,
            node_events: plan.node_churn / 60.0,
        }
    }
}

/// Drives the world at `rates` for `length`, then measures the phase.
#[allow(clippy::too_many_arguments)]
async fn drive<F, Fut>(
    world: &mut World,
    name: &str,
    length: Duration,
    rates: Rates,
    mark: &F,
    pids: &Pids,
    keys: &KeyWatch,
) -> Result<Phase>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Mark>>,
{
    let a = mark().await?;
    let start = Instant::now();
    let mut due = [0.0f64; 5];
    let mut node_event = 0u64;
    let mut tick = tokio::time::interval(TICK);
    while start.elapsed() < length {
        tick.tick().await;
        world.absorb();
        let dt = TICK.as_secs_f64();
        let r = [
            rates.stream_ends,
            rates.player_arrivals,
            rates.player_departures,
            rates.settled_resolves,
            rates.node_events,
        ];
        for (d, r) in due.iter_mut().zip(r) {
            *d += r * dt;
        }
        while due[0] >= 1.0 {
            due[0] -= 1.0;
            world.end_stream();
            world.start_stream(None);
        }
        while due[1] >= 1.0 {
            due[1] -= 1.0;
            world.player_arrives();
        }
        while due[2] >= 1.0 {
            due[2] -= 1.0;
            world.player_leaves();
        }
        while due[3] >= 1.0 {
            due[3] -= 1.0;
            world.re_resolve();
        }
        while due[4] >= 1.0 {
            due[4] -= 1.0;
            node_event += 1;
            // Two deaths (each replaced by a joining node) for one drain.
            if node_event.is_multiple_of(3) {
                world.node_drains();
            } else {
                world.node_dies();
            }
        }
    }
    let b = mark().await?;
    world.absorb();
    let mut p = meter::phase(name, &a, &b, &world.ops.counters, &keys.counts, pids);
    p.streams = world.live_count();
    p.pulls = world.pull_count();
    Ok(p)
}

/// Publishes `plan.burst` streams in region 0, then has region 1's nodes resolve all of them
/// at once: each resolve claims the region's origin for its stream.
async fn burst(world: &mut World, plan: &Plan) -> Burst {
    let mut names = Vec::with_capacity(plan.burst);
    for _ in 0..plan.burst {
        if let Some(n) = world.start_stream(Some(0)) {
            names.push(n);
        }
    }
    world.settle().await;
    let region = 1 % plan.regions;
    let nodes = &world.by_region[region];
    let alive: Vec<Arc<SimNode>> = nodes
        .iter()
        .map(|&i| world.ops.nodes[i].clone())
        .filter(|n| n.life() == Life::Alive)
        .collect();
    if alive.is_empty() {
        return Burst::default();
    }
    let hist = Arc::new(Hist::default());
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let tasks: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (node, name, counters) = (
                alive[i % alive.len()].clone(),
                name.clone(),
                counters.clone(),
            );
            let hist = hist.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let r = streams::resolve(&node, &name, &counters, false).await;
                hist.record(t0.elapsed());
                r.map(|r| r.role == v1::Role::RegionalOrigin as i32)
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    Burst {
        streams: names.len(),
        secs: start.elapsed().as_secs_f64(),
        resolve: hist.take(),
        failed,
        refused: counters.refused.load(std::sync::atomic::Ordering::Relaxed),
    }
}
