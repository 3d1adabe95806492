//! What the failover tests share: cluster set-up, players and publishers, tree and metric
//! probes, and the reports they print.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod backup;

use std::collections::BTreeSet;
use std::time::Duration;

use strata_proto::v1;
use strata_tests::faults::{
    TreeMonitor, get_tree, median_max, ms, regionals, routing_client, wait_resumed,
};
use strata_tests::http::{self, metric_sum};
use strata_tests::media::{TestPlayer, TestPublisher, vp8_clip};
use strata_tests::procs::{ProcCluster, ProcOptions};
use tokio::time::{Instant, sleep};

/// Lease TTL of every case (the control plane's default).
pub const TTL: Duration = Duration::from_secs(3);
/// Slack on top of the TTL for a dead node's records to be gone: the lease may have been
/// renewed up to a keep-alive interval before the kill, etcd checks expiry every 500 ms, and
/// the control plane's cache follows a watch.
pub const RECORDS_SLACK: Duration = Duration::from_millis(1500);
pub const STREAM: &str = "live";
/// The longest video gap that still counts as "no interruption": the clip's frames are 33 ms
/// apart and keyframes come in bursts, so a healthy player sees gaps of 40 to 70 ms; any
/// failover needs at least the 600 ms QUIC idle timeout to notice a dead upstream; the margin
/// in between absorbs a loaded machine.
pub const NO_INTERRUPTION: Duration = Duration::from_millis(400);

/// The cases run one at a time even when the harness runs tests in parallel (`scripts/test.sh`
/// does, with one thread per core): each starts a whole cluster and measures stalls in
/// milliseconds.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn nodes(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, r)| ((*n).to_owned(), (*r).to_owned()))
        .collect()
}

pub async fn start(opts: ProcOptions) -> ProcCluster {
    ProcCluster::start(ProcOptions {
        lease_ttl: TTL,
        ..opts
    })
    .await
    .unwrap()
}

pub fn cp_urls(c: &ProcCluster) -> Vec<String> {
    c.control_planes().iter().map(|cp| cp.url()).collect()
}

pub fn url(c: &ProcCluster, node: &str) -> String {
    c.node(node).unwrap().http_url()
}

pub async fn publish(c: &ProcCluster, node: &str) -> TestPublisher {
    let p = TestPublisher::start(&url(c, node), STREAM, vp8_clip().unwrap())
        .await
        .unwrap();
    assert_eq!(p.node, node);
    p
}

/// A player on `node` that received a second of video, keyframe first.
pub async fn play(c: &ProcCluster, node: &str) -> TestPlayer {
    let p = TestPlayer::start(&url(c, node), STREAM).await.unwrap();
    assert_eq!(p.node, node);
    let st = p
        .wait_for(Duration::from_secs(20), "1 s of video", |s| {
            s.video_packets >= 100
        })
        .await
        .unwrap();
    assert_eq!(st.first_video_is_keyframe, Some(true), "{node}: {st:?}");
    p
}

/// The cases' common start: the cluster of `opts` (lease TTL [`TTL`]), the publisher on O1,
/// one player on each of `players` (in that order, each with a second of video), and the tree
/// once `settled` holds for it.
pub async fn live<const N: usize>(
    opts: ProcOptions,
    players: [&str; N],
    what: &str,
    settled: impl Fn(Option<&v1::StreamTree>) -> bool,
) -> (ProcCluster, TestPublisher, [TestPlayer; N], v1::StreamTree) {
    let c = start(opts).await;
    let publisher = publish(&c, "O1").await;
    let mut started = Vec::with_capacity(N);
    for n in players {
        started.push(play(&c, n).await);
    }
    let tree = wait_tree(&c, Duration::from_secs(5), what, |t| {
        t.is_some() && settled(t)
    })
    .await
    .unwrap();
    let Ok(started) = <[TestPlayer; N]>::try_from(started) else {
        unreachable!("one player per node asked for");
    };
    (c, publisher, started, tree)
}

/// The two-region cases' settled tree: E21 is Region2's regional origin, E11 pulls from O1
/// and E22 from E21.
pub fn settled_on_e21(t: Option<&v1::StreamTree>) -> bool {
    regional_of(t, "Region2").as_deref() == Some("E21")
        && upstream_of(t, "E11").as_deref() == Some("O1")
        && upstream_of(t, "E22").as_deref() == Some("E21")
}

/// Waits (at most 10 s) until every player received video after `since` and then a second
/// more; returns each one's stall (see [`strata_tests::faults::wait_resumed`]).
pub async fn resumed(players: &[&TestPlayer], since: Instant) -> Vec<Duration> {
    wait_resumed(
        players,
        since,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await
    .unwrap()
}

/// Polls `GetStream` until `cond` holds; returns the tree (`None`: NOT_FOUND).
pub async fn wait_tree(
    c: &ProcCluster,
    within: Duration,
    what: &str,
    cond: impl Fn(Option<&v1::StreamTree>) -> bool,
) -> Option<v1::StreamTree> {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Ok(mut routing) = routing_client(&cp_urls(c)).await {
            match get_tree(&mut routing, STREAM).await {
                Ok(t) if cond(t.as_ref()) => return t,
                Ok(t) => last = Some(format!("{t:?}")),
                Err(s) => last = Some(format!("{s}")),
            }
        }
        assert!(
            Instant::now() < deadline,
            "tree not {what} within {within:?}; last: {last:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

pub fn regional_of(tree: Option<&v1::StreamTree>, region: &str) -> Option<String> {
    regionals(tree?).get(region).map(|(n, _)| n.clone())
}

pub fn upstream_of(tree: Option<&v1::StreamTree>, node: &str) -> Option<String> {
    tree?
        .subscribers
        .iter()
        .find(|s| s.node_id == node)
        .map(|s| s.upstream_node_id.clone())
}

/// Relay bytes `node` sent to each peer, from its `/metrics`.
pub async fn relay_out(c: &ProcCluster, node: &str, peers: &[&str]) -> Vec<f64> {
    let m = http::get(&format!("{}/metrics", url(c, node)))
        .await
        .unwrap()
        .text();
    peers
        .iter()
        .map(|p| {
            metric_sum(
                &m,
                "strata_relay_bytes_total",
                &[("peer", p), ("direction", "out")],
            )
        })
        .collect()
}

/// The peers among `peers` that `node` sends relay media to, over a one-second window: one
/// copy of the stream per region means exactly one of a region's nodes.
pub async fn receiving_from(c: &ProcCluster, node: &str, peers: &[&str]) -> BTreeSet<String> {
    let before = relay_out(c, node, peers).await;
    sleep(Duration::from_secs(1)).await;
    let after = relay_out(c, node, peers).await;
    peers
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| *a > *b)
        .map(|(p, _)| (*p).to_owned())
        .collect()
}

pub fn print_stalls(case: &str, nodes: &[&str], stalls: &[Duration]) {
    let (median, worst) = median_max(stalls);
    let each: Vec<String> = nodes
        .iter()
        .zip(stalls)
        .map(|(n, s)| format!("{n} {} ms", ms(*s)))
        .collect();
    eprintln!(
        "[{case}] stall per player: {}; median {} ms, worst {} ms",
        each.join(", "),
        ms(median),
        ms(worst)
    );
}

pub fn assert_no_violations(case: &str, monitor: TreeMonitor) {
    let report = monitor.stop();
    eprintln!(
        "[{case}] GetStream checked {} times every 20 ms ({} polls unanswered); regional changes: {:?}",
        report.samples,
        report.unavailable,
        report
            .changes
            .iter()
            .map(|c| (c.region.clone(), c.holder.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        report.violations.is_empty(),
        "[{case}] invariant violations: {:#?}",
        report.violations
    );
}

/// What must not change when a fault should be invisible: main origin and regional origins with
/// their epochs, and who pulls from whom.
pub type TreeKey = (
    Option<(String, i64)>,
    std::collections::BTreeMap<String, (String, i64)>,
    BTreeSet<(String, String)>,
);

pub fn tree_key(tree: &v1::StreamTree) -> TreeKey {
    (
        tree.main.as_ref().map(|m| (m.node_id.clone(), m.epoch)),
        regionals(tree),
        tree.subscribers
            .iter()
            .map(|s| (s.node_id.clone(), s.upstream_node_id.clone()))
            .collect(),
    )
}

/// Registered nodes and their lease ids (a lease that changed means the node had to register
/// again, i.e. its records were lost).
pub async fn leases(c: &ProcCluster) -> std::collections::BTreeMap<String, i64> {
    let ch = tonic::transport::Endpoint::from_shared(cp_urls(c)[0].clone())
        .unwrap()
        .connect()
        .await;
    let ch = match ch {
        Ok(ch) => ch,
        Err(_) => tonic::transport::Endpoint::from_shared(cp_urls(c)[1].clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    };
    let mut nodes = v1::node_service_client::NodeServiceClient::new(ch);
    nodes
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| (n.info.unwrap().id, n.lease_id))
        .collect()
}

/// Longest video gap of each player since [`arm`].
pub fn gaps(players: &[&TestPlayer]) -> Vec<Duration> {
    players
        .iter()
        .map(|p| p.stats().longest_video_gap)
        .collect()
}

/// Sleeps through a measured window (media flows meanwhile; nothing waits on it).
pub async fn media_window(d: Duration) {
    sleep(d).await;
}
