//! One phase's measurement: everything counted between two marks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::time::Instant;

use super::etcd_stats::{EtcdCounters, EtcdRates, KeyCounts, SOURCES, per_source};
use super::hist::Summary;
use super::sim::Counters;
use crate::bench::cpu::cpu_time;
use crate::bench::fanout::procstat::rss_bytes;

/// The processes whose CPU and memory a phase reports.
#[derive(Debug, Clone)]
pub struct Pids {
    /// Control-plane replicas (`None` in process).
    pub replicas: Vec<Option<u32>>,
    /// etcd members.
    pub etcd: Vec<Option<u32>>,
}

/// Everything counted at one moment.
pub struct Mark {
    at: Instant,
    etcd: EtcdCounters,
    keys: [(u64, u64); SOURCES.len()],
    cpu: Vec<Option<Duration>>,
    watch_events: u64,
    leases_lost: u64,
    keepalive_errors: u64,
    errors: u64,
    refused: u64,
    watches_open: u64,
}

impl Mark {
    /// When it was taken.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Marks now.
    pub async fn take(
        etcd_endpoint: &str,
        keys: &KeyCounts,
        counters: &Counters,
        pids: &Pids,
    ) -> Result<Self> {
        let me = Some(std::process::id());
        let all = pids.replicas.iter().chain(&pids.etcd).chain([&me]);
        Ok(Self {
            at: Instant::now(),
            etcd: EtcdCounters::scrape(etcd_endpoint).await?,
            keys: keys.snapshot(),
            cpu: all.map(|p| p.and_then(cpu_time)).collect(),
            watch_events: counters.watch_events.load(Relaxed),
            leases_lost: counters.leases_lost.load(Relaxed),
            keepalive_errors: counters.keepalive_errors.load(Relaxed),
            errors: counters.errors.load(Relaxed),
            refused: counters.refused.load(Relaxed),
            watches_open: counters.watches_open.load(Relaxed),
        })
    }
}

/// CPU and memory of one process over a phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcUse {
    /// Cores used on average.
    pub cores: Option<f64>,
    /// Resident memory at the end, MiB.
    pub rss_mib: Option<f64>,
}

/// What one phase measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Phase name.
    pub name: String,
    /// Measured seconds.
    pub secs: f64,
    /// Live streams and pulls at the end.
    pub streams: usize,
    /// Pulls (node, stream) at the end.
    pub pulls: usize,
    /// etcd's own rates and size.
    pub etcd: EtcdRates,
    /// Key changes per second by source: (puts, deletes).
    pub sources: BTreeMap<String, (f64, f64)>,
    /// All key changes per second (what each replica's cache watch receives).
    pub key_changes_per_s: f64,
    /// Keep-alive (with load report) latency at the nodes.
    pub keepalive: Summary,
    /// Settled resolves at the nodes.
    pub resolve_settled: Summary,
    /// First resolves of a pull (subscriber write or regional claim).
    pub resolve_new: Summary,
    /// Publishes (main-origin claims).
    pub claim: Summary,
    /// Topology messages per second at the nodes' watches.
    pub watch_events_per_s: f64,
    /// Unpublish to "ended" at each puller's watch.
    pub watch_delay: Summary,
    /// Main-origin record written to seen by a plain etcd watch.
    pub etcd_watch_delay: Summary,
    /// Control-plane replicas.
    pub replicas: Vec<ProcUse>,
    /// etcd members.
    pub etcd_members: Vec<ProcUse>,
    /// This process (all simulated nodes).
    pub bench: ProcUse,
    /// Lost leases of nodes that were not told to die.
    pub leases_lost: u64,
    /// Keep-alives that failed otherwise.
    pub keepalive_errors: u64,
    /// Other failed calls.
    pub errors: u64,
    /// Claims refused RESOURCE_EXHAUSTED (admission control), each retried after the hint.
    pub claims_refused: u64,
    /// Topology watches open at the end (pullers' and publishers').
    pub watches_open: u64,
}

/// The phase between `a` and `b`, with the samples recorded since the last phase.
pub fn phase(
    name: &str,
    a: &Mark,
    b: &Mark,
    counters: &Arc<Counters>,
    keys: &KeyCounts,
    pids: &Pids,
) -> Phase {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-6);
    let sources = per_source(&a.keys, &b.keys, secs);
    let key_changes_per_s = sources.values().map(|(p, d)| p + d).sum();
    let cores: Vec<Option<f64>> = a
        .cpu
        .iter()
        .zip(&b.cpu)
        .map(|(x, y)| Some(y.as_ref()?.saturating_sub(*x.as_ref()?).as_secs_f64() / secs))
        .collect();
    let use_of = |i: usize, pid: Option<u32>| ProcUse {
        cores: cores.get(i).copied().flatten(),
        rss_mib: pid.and_then(rss_bytes).map(|b| b as f64 / (1 << 20) as f64),
    };
    let nr = pids.replicas.len();
    Phase {
        name: name.to_owned(),
        secs,
        etcd: EtcdRates::between(&a.etcd, &b.etcd, secs),
        sources,
        key_changes_per_s,
        keepalive: counters.keepalive.take(),
        resolve_settled: counters.resolve_settled.take(),
        resolve_new: counters.resolve_new.take(),
        claim: counters.claim.take(),
        watch_events_per_s: b.watch_events.saturating_sub(a.watch_events) as f64 / secs,
        watch_delay: counters.watch_delay.take(),
        etcd_watch_delay: keys.main_delay.take(),
        replicas: pids
            .replicas
            .iter()
            .enumerate()
            .map(|(i, p)| use_of(i, *p))
            .collect(),
        etcd_members: pids
            .etcd
            .iter()
            .enumerate()
            .map(|(i, p)| use_of(nr + i, *p))
            .collect(),
        bench: use_of(nr + pids.etcd.len(), Some(std::process::id())),
        leases_lost: b.leases_lost - a.leases_lost,
        keepalive_errors: b.keepalive_errors - a.keepalive_errors,
        errors: b.errors - a.errors,
        claims_refused: b.refused - a.refused,
        watches_open: b.watches_open,
        ..Phase::default()
    }
}
