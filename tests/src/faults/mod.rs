//! Fault injection and measurement for the failover tests (`tests/tests/netns_failover.rs`,
//! `tests/tests/netns_chaos.rs`).
//!
//! - [`TreeMonitor`] polls `GetStream` every 20 ms in the background and checks, at every
//!   sample, the invariants a failover must keep: at most one regional origin per (stream,
//!   region), no regional origin in the main origin's region, no node both a regional origin
//!   and a subscriber of a stream, and no record held by a node that died longer ago than
//!   its lease allows ([`DeadNodes`]). It also keeps the history of regional-origin changes.
//! - [`Partition`] drops UDP between two loopback address ranges with `nft`, inside the
//!   test's network namespace only (nodes of a region bind their relay on their region's
//!   address: [`crate::procs::ProcOptions::relay_ips`]).
//! - [`wait_resumed`] measures the stall players saw: the longest gap between two video
//!   packets since [`arm`] (last packet before the fault → first packet after it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use strata_proto::v1;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tonic::transport::{Channel, Endpoint};

use crate::media::TestPlayer;

mod partition;

pub use partition::{Net24, Partition, etcd_leader};

/// Interval between two `GetStream` polls.
pub const POLL: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A routing client of the first control plane in `urls` that answers (each tried in turn).
pub async fn routing_client(
    urls: &[String],
) -> Result<v1::routing_service_client::RoutingServiceClient<Channel>> {
    let mut last = None;
    for url in urls {
        let ep = Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1));
        match ep.connect().await {
            Ok(ch) => return Ok(v1::routing_service_client::RoutingServiceClient::new(ch)),
            Err(e) => last = Some(anyhow::Error::from(e).context(url.clone())),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no control-plane URL given")))
}

/// `GetStream`: `Ok(None)` on NOT_FOUND.
pub async fn get_tree(
    routing: &mut v1::routing_service_client::RoutingServiceClient<Channel>,
    stream: &str,
) -> std::result::Result<Option<v1::StreamTree>, tonic::Status> {
    let req = v1::GetStreamRequest {
        stream: stream.to_owned(),
    };
    match routing.get_stream(req).await {
        Ok(t) => Ok(Some(t.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// Every node id a tree names as the holder of a record (main, regional, subscriber).
pub fn record_holders(tree: &v1::StreamTree) -> Vec<String> {
    let mut ids: Vec<String> = tree.main.iter().map(|m| m.node_id.clone()).collect();
    ids.extend(tree.regional.iter().map(|r| r.node_id.clone()));
    ids.extend(tree.subscribers.iter().map(|s| s.node_id.clone()));
    ids.sort();
    ids.dedup();
    ids
}

/// The regional origins of a tree, region → (node, epoch).
pub fn regionals(tree: &v1::StreamTree) -> BTreeMap<String, (String, i64)> {
    tree.regional
        .iter()
        .map(|r| (r.region.clone(), (r.node_id.clone(), r.epoch)))
        .collect()
}

/// Nodes the test killed, with the moment after which none of their records may remain.
#[derive(Clone, Default)]
pub struct DeadNodes(Arc<Mutex<HashMap<String, Instant>>>);

impl DeadNodes {
    /// `node` died now; its records must be gone `within` (lease TTL plus slack).
    pub fn mark_dead(&self, node: &str, within: Duration) {
        lock(&self.0).insert(node.to_owned(), Instant::now() + within);
    }

    /// `node` runs again (restarted): its new records are legitimate.
    pub fn mark_alive(&self, node: &str) {
        lock(&self.0).remove(node);
    }

    /// Nodes whose records must be gone by now.
    pub fn overdue(&self, now: Instant) -> Vec<String> {
        lock(&self.0)
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// The invariant violations of one tree, given the nodes whose records must be gone.
pub fn tree_violations(stream: &str, tree: &v1::StreamTree, overdue: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut per_region: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &tree.regional {
        per_region
            .entry(r.region.as_str())
            .or_default()
            .push(r.node_id.as_str());
    }
    for (region, holders) in &per_region {
        if holders.len() > 1 {
            out.push(format!(
                "{stream}: {} regional origins in {region}: {holders:?}",
                holders.len()
            ));
        }
    }
    if let Some(m) = &tree.main
        && let Some(holders) = per_region.get(m.region.as_str())
    {
        out.push(format!(
            "{stream}: regional origin {holders:?} in the main origin's region {}",
            m.region
        ));
    }
    for s in &tree.subscribers {
        if tree.regional.iter().any(|r| r.node_id == s.node_id) {
            out.push(format!(
                "{stream}: {} is both a regional origin and a subscriber (of {})",
                s.node_id, s.upstream_node_id
            ));
        }
    }
    for holder in record_holders(tree) {
        if overdue.contains(&holder) {
            out.push(format!(
                "{stream}: record of {holder}, dead for longer than its lease allows: {tree:?}"
            ));
        }
    }
    out
}

/// One change of a stream's regional origin in a region, as the monitor saw it.
#[derive(Debug, Clone)]
pub struct RegionalChange {
    /// When the monitor saw it.
    pub at: Instant,
    /// Stream.
    pub stream: String,
    /// Region.
    pub region: String,
    /// The new holder and epoch; `None` when the record went away.
    pub holder: Option<(String, i64)>,
}

#[derive(Default)]
struct MonitorState {
    samples: u64,
    unavailable: u64,
    violations: Vec<String>,
    changes: Vec<RegionalChange>,
    last: HashMap<String, Option<v1::StreamTree>>,
}

/// What a [`TreeMonitor`] saw.
#[derive(Debug, Clone)]
pub struct MonitorReport {
    /// `GetStream` answers checked (per stream).
    pub samples: u64,
    /// Polls no control plane answered.
    pub unavailable: u64,
    /// Invariant violations, in order (at most 100 kept).
    pub violations: Vec<String>,
    /// Regional-origin changes, in order.
    pub changes: Vec<RegionalChange>,
}

/// Polls `GetStream` of some streams every [`POLL`] in the background and checks
/// [`tree_violations`] at every answer.
pub struct TreeMonitor {
    state: Arc<Mutex<MonitorState>>,
    task: JoinHandle<()>,
}

impl TreeMonitor {
    /// Starts polling through the control planes at `urls` (the next one is tried when one
    /// fails) for `streams`; `dead` says whose records must be gone.
    pub fn start(urls: Vec<String>, streams: Vec<String>, dead: DeadNodes) -> Self {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut client = None;
            let mut next_url = 0usize;
            loop {
                let started = Instant::now();
                if client.is_none() {
                    let url = urls[next_url % urls.len()].clone();
                    next_url += 1;
                    client = routing_client(&[url]).await.ok();
                }
                if let Some(routing) = client.as_mut() {
                    for stream in &streams {
                        match get_tree(routing, stream).await {
                            Ok(tree) => {
                                let overdue = dead.overdue(Instant::now());
                                record(&st, stream, tree, &overdue);
                            }
                            Err(_) => {
                                lock(&st).unavailable += 1;
                                client = None;
                                break;
                            }
                        }
                    }
                } else {
                    lock(&st).unavailable += 1;
                }
                let next = started + POLL;
                if next > Instant::now() {
                    tokio::time::sleep_until(next).await;
                }
            }
        });
        Self { state, task }
    }

    /// Violations so far.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// The last tree seen of `stream` (`None`: not live, or never seen).
    pub fn last(&self, stream: &str) -> Option<v1::StreamTree> {
        lock(&self.state).last.get(stream).cloned().flatten()
    }

    /// What the monitor saw so far.
    pub fn report(&self) -> MonitorReport {
        let st = lock(&self.state);
        MonitorReport {
            samples: st.samples,
            unavailable: st.unavailable,
            violations: st.violations.clone(),
            changes: st.changes.clone(),
        }
    }

    /// Stops polling; returns what it saw.
    pub fn stop(self) -> MonitorReport {
        self.task.abort();
        self.report()
    }
}

impl Drop for TreeMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(
    st: &Mutex<MonitorState>,
    stream: &str,
    tree: Option<v1::StreamTree>,
    overdue: &[String],
) {
    let now = Instant::now();
    let mut st = lock(st);
    st.samples += 1;
    if let Some(t) = &tree {
        for v in tree_violations(stream, t, overdue) {
            if st.violations.len() < 100 {
                st.violations.push(v);
            }
        }
    }
    let before = st
        .last
        .get(stream)
        .cloned()
        .flatten()
        .map(|t| regionals(&t))
        .unwrap_or_default();
    let after = tree.as_ref().map(regionals).unwrap_or_default();
    let regions: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for region in regions {
        let (b, a) = (before.get(region), after.get(region));
        if b != a {
            st.changes.push(RegionalChange {
                at: now,
                stream: stream.to_owned(),
                region: region.clone(),
                holder: a.cloned(),
            });
        }
    }
    st.last.insert(stream.to_owned(), tree);
}

/// Resets the longest-gap measure of every player; returns the moment, to pass to
/// [`wait_resumed`] (call it just before injecting the fault).
pub fn arm(players: &[&TestPlayer]) -> Instant {
    for p in players {
        p.reset_gap();
    }
    Instant::now()
}

/// Waits until every player received video after `since` and then `settle` more of it; returns
/// each player's stall: the longest gap between two video packets since [`arm`], i.e. the last
/// packet before the fault to the first after it (unless a longer gap came later, which is
/// then the figure that matters).
pub async fn wait_resumed(
    players: &[&TestPlayer],
    since: Instant,
    within: Duration,
    settle: Duration,
) -> Result<Vec<Duration>> {
    let since = since.into_std();
    let deadline = Instant::now() + within;
    let mut resumed_at = vec![None; players.len()];
    loop {
        let now = Instant::now();
        for (i, p) in players.iter().enumerate() {
            if resumed_at[i].is_none() && p.stats().last_video.is_some_and(|t| t > since) {
                resumed_at[i] = Some(now);
            }
        }
        if resumed_at
            .iter()
            .all(|r| r.is_some_and(|t: Instant| now >= t + settle))
        {
            break;
        }
        if now >= deadline {
            let stuck: Vec<String> = players
                .iter()
                .zip(&resumed_at)
                .filter(|(_, r)| r.is_none())
                .map(|(p, _)| format!("{} ({:?})", p.node, p.stats()))
                .collect();
            bail!("players did not resume within {within:?}: {stuck:?}");
        }
        sleep(POLL).await;
    }
    Ok(players
        .iter()
        .map(|p| p.stats().longest_video_gap)
        .collect())
}

/// Median and maximum of some durations.
pub fn median_max(v: &[Duration]) -> (Duration, Duration) {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let mut s = v.to_vec();
    s.sort();
    (s[s.len() / 2], s[s.len() - 1])
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}
