//! The topology document: `GET /api/v1/topology`, and `--json` of the
//! operator CLI. Built from the gRPC messages (`ListNodes`, `ListStreams`),
//! so the HTTP view and the gRPC API can never disagree.
//!
//! This shape is a stable interface: fields may be added, never renamed or
//! removed. Names and units:
//!
//! ```text
//! {
//!   "revision": 42,               // store revision the snapshot reflects (0 from the CLI)
//!   "store_healthy": true,        // false while the store is unreachable
//!   "generated_at_ms": 1700000000000,
//!   "regions": [ { "name", "nodes", "draining", "players", "publishers",
//!                  "streams", "egress_bps", "cpu" } ],           // sums over live nodes
//!   "nodes": [ { "id", "region", "http_url", "relay_addr", "capacity", "version",
//!                "draining", "registered_at_ms", "lease_id",
//!                "load": null | { "streams", "players", "publishers", "egress_bps", "cpu" } } ],
//!   "streams": [ {
//!     "id",
//!     "main": { "node", "region", "epoch", "started_at_ms" },
//!     "regions": ["eu", "us"],    // every region the stream reaches
//!     "regional_origins": [ { "region", "node", "epoch", "upstream" } ],
//!     "subscribers": [ { "node", "region", "upstream" } ],
//!     "tree": { "node", "region", "role", "epoch", "children": [ … ] },
//!     "players": [ { "region", "players", "low", "mid", "high" } ],  // per region and layer
//!     "standby": null | { "node", "region", "epoch", "started_at_ms" },  // the backup publisher's node
//!     "detached": [ … ]           // records whose upstream is not in the tree (transient)
//!   } ]
//! }
//! ```
//!
//! `role` is `main_origin`, `regional_origin` or `edge`; `epoch` is present
//! for origins only. Nodes are ordered by region then id, streams by id,
//! tree children by region then node. `cpu` is in cores, `egress_bps` in
//! bits per second.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_proto::v1;

pub use super::players::RegionPlayers;
use super::players::region_players;

/// A snapshot of the whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Store revision the snapshot reflects; 0 when not known (CLI).
    pub revision: i64,
    /// Whether the control plane's store is reachable and its cache in sync.
    pub store_healthy: bool,
    /// Unix ms when the snapshot was taken.
    pub generated_at_ms: i64,
    /// Per-region sums, ordered by name.
    pub regions: Vec<RegionSummary>,
    /// Live nodes, ordered by region then id.
    pub nodes: Vec<NodeView>,
    /// Live streams, ordered by id.
    pub streams: Vec<StreamView>,
}

/// Sums over a region's live nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionSummary {
    /// Region name.
    pub name: String,
    /// Live nodes.
    pub nodes: u32,
    /// Of which draining.
    pub draining: u32,
    /// Players served.
    pub players: u64,
    /// Publishers ingested.
    pub publishers: u64,
    /// Streams carried (a stream counts once per node carrying it).
    pub streams: u64,
    /// Egress bit/s.
    pub egress_bps: u64,
    /// CPU, cores.
    pub cpu: f64,
}

/// A live node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Public HTTP base URL.
    pub http_url: String,
    /// QUIC relay address.
    pub relay_addr: String,
    /// Most players; 0 = unlimited.
    pub capacity: u32,
    /// Software version.
    pub version: String,
    /// Whether the node is draining (no new sessions).
    pub draining: bool,
    /// Unix ms of registration.
    pub registered_at_ms: i64,
    /// The etcd lease carrying the node's records.
    pub lease_id: i64,
    /// Latest load report; `null` before the first keep-alive.
    pub load: Option<LoadView>,
}

/// A node's load report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadView {
    /// Streams carried.
    pub streams: u32,
    /// Players served.
    pub players: u32,
    /// Publishers ingested.
    pub publishers: u32,
    /// Egress bit/s.
    pub egress_bps: u64,
    /// CPU, cores.
    pub cpu: f32,
}

/// A live stream and every node serving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamView {
    /// Stream id.
    pub id: String,
    /// The main origin.
    pub main: MainView,
    /// Every region the stream reaches, sorted.
    pub regions: Vec<String>,
    /// Regional origins, ordered by region.
    pub regional_origins: Vec<RegionalView>,
    /// Nodes pulling the stream without being an origin, ordered by region, node.
    pub subscribers: Vec<SubscriberView>,
    /// The distribution tree: main origin → regional origins → pulling nodes.
    pub tree: TreeNode,
    /// Records whose upstream is not in the tree (a moment during failover).
    pub detached: Vec<TreeNode>,
    /// Players per region and simulcast layer, ordered by region (from load reports).
    #[serde(default)]
    pub players: Vec<RegionPlayers>,
    /// The standby: the node of the stream's backup publisher, ready to take over. The live
    /// publisher is the main origin's.
    #[serde(default)]
    pub standby: Option<StandbyView>,
}

/// A stream's standby (redundant ingest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyView {
    /// The backup publisher's node.
    pub node: String,
    /// Its region.
    pub region: String,
    /// Epoch of the standby record.
    pub epoch: i64,
    /// Unix ms when the standby registered.
    pub started_at_ms: i64,
}

impl StreamView {
    /// Nodes carrying the stream: the main origin and every node pulling it.
    pub fn node_count(&self) -> usize {
        1 + self.regional_origins.len() + self.subscribers.len()
    }
}

/// A stream's main origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MainView {
    /// Ingest node.
    pub node: String,
    /// Its region.
    pub region: String,
    /// Epoch of the claim.
    pub epoch: i64,
    /// Unix ms when the stream went live.
    pub started_at_ms: i64,
}

/// A regional origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionalView {
    /// The region it serves.
    pub region: String,
    /// The node holding the claim.
    pub node: String,
    /// Epoch of the claim.
    pub epoch: i64,
    /// The node it pulls from.
    pub upstream: String,
}

/// A node pulling a stream without being an origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriberView {
    /// The pulling node.
    pub node: String,
    /// Its region.
    pub region: String,
    /// The node it pulls from.
    pub upstream: String,
}

/// What a node is for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ingests the stream.
    MainOrigin,
    /// Its region's origin, pulling from the main origin.
    RegionalOrigin,
    /// Pulls from an origin.
    Edge,
}

impl Role {
    /// A human label.
    pub fn label(self) -> &'static str {
        match self {
            Role::MainOrigin => "main origin",
            Role::RegionalOrigin => "regional origin",
            Role::Edge => "edge",
        }
    }
}

/// One node of a stream's tree, with the nodes pulling from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    /// Node id.
    pub node: String,
    /// Region of the node.
    pub region: String,
    /// Its role for the stream.
    pub role: Role,
    /// Epoch of the origin claim (origins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Nodes pulling from this one, ordered by region then node.
    #[serde(default)]
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Every node in this subtree, depth first.
    pub fn walk(&self) -> Vec<&TreeNode> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

/// A node view from the gRPC message; `None` without `info`.
pub fn node_view(n: &v1::Node) -> Option<NodeView> {
    let info = n.info.as_ref()?;
    Some(NodeView {
        id: info.id.clone(),
        region: info.region.clone(),
        http_url: info.http_url.clone(),
        relay_addr: info.relay_addr.clone(),
        capacity: info.capacity,
        version: info.version.clone(),
        draining: n.draining,
        registered_at_ms: n.registered_at_ms,
        lease_id: n.lease_id,
        load: n.load.as_ref().map(|l| LoadView {
            streams: l.streams,
            players: l.players,
            publishers: l.publishers,
            egress_bps: l.egress_bps,
            cpu: l.cpu,
        }),
    })
}

/// A stream view from the gRPC message; `None` without a main origin.
pub fn stream_view(t: &v1::StreamTree) -> Option<StreamView> {
    let m = t.main.as_ref()?;
    let main = MainView {
        node: m.node_id.clone(),
        region: m.region.clone(),
        epoch: m.epoch,
        started_at_ms: m.started_at_ms,
    };
    let mut regional_origins: Vec<RegionalView> = t
        .regional
        .iter()
        .map(|r| RegionalView {
            region: r.region.clone(),
            node: r.node_id.clone(),
            epoch: r.epoch,
            upstream: r.upstream_node_id.clone(),
        })
        .collect();
    regional_origins.sort_by(|a, b| (&a.region, &a.node).cmp(&(&b.region, &b.node)));
    let mut subscribers: Vec<SubscriberView> = t
        .subscribers
        .iter()
        .map(|s| SubscriberView {
            node: s.node_id.clone(),
            region: s.region.clone(),
            upstream: s.upstream_node_id.clone(),
        })
        .collect();
    subscribers.sort_by(|a, b| (&a.region, &a.node).cmp(&(&b.region, &b.node)));
    let regions: BTreeSet<String> = std::iter::once(main.region.clone())
        .chain(regional_origins.iter().map(|r| r.region.clone()))
        .chain(subscribers.iter().map(|s| s.region.clone()))
        .collect();
    let (tree, detached) = build_tree(&main, &regional_origins, &subscribers);
    Some(StreamView {
        id: m.stream.clone(),
        main,
        regions: regions.into_iter().collect(),
        regional_origins,
        subscribers,
        tree,
        detached,
        players: region_players(t),
        standby: t.standby.as_ref().map(|b| StandbyView {
            node: b.node_id.clone(),
            region: b.region.clone(),
            epoch: b.epoch,
            started_at_ms: b.started_at_ms,
        }),
    })
}

/// Hangs every record under the node it pulls from. Each node appears once;
/// records whose upstream is not reachable from the main origin are returned
/// as separate trees.
fn build_tree(
    main: &MainView,
    regional: &[RegionalView],
    subscribers: &[SubscriberView],
) -> (TreeNode, Vec<TreeNode>) {
    // (node, region, role, epoch) by upstream, each list in region, node order.
    type Child<'a> = (&'a str, &'a str, Role, Option<i64>);
    let mut by_upstream: BTreeMap<&str, Vec<Child<'_>>> = BTreeMap::new();
    for r in regional {
        by_upstream.entry(&r.upstream).or_default().push((
            &r.node,
            &r.region,
            Role::RegionalOrigin,
            Some(r.epoch),
        ));
    }
    for s in subscribers {
        by_upstream
            .entry(&s.upstream)
            .or_default()
            .push((&s.node, &s.region, Role::Edge, None));
    }
    for list in by_upstream.values_mut() {
        list.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
    }
    fn grow<'a>(
        node: TreeNode,
        by_upstream: &BTreeMap<&str, Vec<Child<'a>>>,
        seen: &mut BTreeSet<String>,
    ) -> TreeNode {
        let mut node = node;
        let kids = by_upstream
            .get(node.node.as_str())
            .cloned()
            .unwrap_or_default();
        for (id, region, role, epoch) in kids {
            if !seen.insert(id.to_owned()) {
                continue;
            }
            let child = TreeNode {
                node: id.to_owned(),
                region: region.to_owned(),
                role,
                epoch,
                children: Vec::new(),
            };
            node.children.push(grow(child, by_upstream, seen));
        }
        node
    }
    let mut seen = BTreeSet::from([main.node.clone()]);
    let root = TreeNode {
        node: main.node.clone(),
        region: main.region.clone(),
        role: Role::MainOrigin,
        epoch: Some(main.epoch),
        children: Vec::new(),
    };
    let tree = grow(root, &by_upstream, &mut seen);
    let mut detached = Vec::new();
    let leftovers: Vec<Child<'_>> = by_upstream.values().flatten().copied().collect();
    for (id, region, role, epoch) in leftovers {
        if !seen.insert(id.to_owned()) {
            continue;
        }
        let start = TreeNode {
            node: id.to_owned(),
            region: region.to_owned(),
            role,
            epoch,
            children: Vec::new(),
        };
        detached.push(grow(start, &by_upstream, &mut seen));
    }
    (tree, detached)
}

/// Per-region sums over nodes.
pub fn region_summaries(nodes: &[NodeView]) -> Vec<RegionSummary> {
    let mut by: BTreeMap<&str, RegionSummary> = BTreeMap::new();
    for n in nodes {
        let r = by.entry(&n.region).or_insert_with(|| RegionSummary {
            name: n.region.clone(),
            ..RegionSummary::default()
        });
        r.nodes += 1;
        r.draining += u32::from(n.draining);
        if let Some(l) = &n.load {
            r.players += u64::from(l.players);
            r.publishers += u64::from(l.publishers);
            r.streams += u64::from(l.streams);
            r.egress_bps += l.egress_bps;
            r.cpu += f64::from(l.cpu);
        }
    }
    by.into_values().collect()
}

impl Topology {
    /// The document for these gRPC listings.
    pub fn build(
        nodes: &[v1::Node],
        streams: &[v1::StreamTree],
        revision: i64,
        store_healthy: bool,
        now_ms: i64,
    ) -> Self {
        let mut nodes: Vec<NodeView> = nodes.iter().filter_map(node_view).collect();
        nodes.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
        let mut streams: Vec<StreamView> = streams.iter().filter_map(stream_view).collect();
        streams.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            revision,
            store_healthy,
            generated_at_ms: now_ms,
            regions: region_summaries(&nodes),
            nodes,
            streams,
        }
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
pub(crate) mod tests;
