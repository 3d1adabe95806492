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
    /// The link it pulls over (region graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkView>,
}

/// The region-graph edge a regional origin pulls over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// Region it pulls from; empty: the main origin's.
    #[serde(default)]
    pub from_region: String,
    /// Hops from the main origin (1: pulls from the main origin).
    pub depth: u32,
    /// One-way cost of the link from the upstream's region, ms.
    pub cost_ms: u32,
    /// Where the cost comes from: pinned, configured, measured or unknown.
    pub source: String,
    /// Cost of the whole path from the main origin, ms (0: upstream gone).
    pub path_cost_ms: u64,
}

impl LinkView {
    /// "link 40 ms pinned, path 55 ms"
    pub fn label(&self) -> String {
        format!(
            "link {} ms {}, path {} ms",
            self.cost_ms, self.source, self.path_cost_ms
        )
    }
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
    /// The link a regional origin pulls over, with its cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkView>,
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
            link: Some(LinkView {
                from_region: r.upstream_region.clone(),
                depth: r.depth,
                cost_ms: r.link_cost_ms,
                source: r.link_cost_source.clone(),
                path_cost_ms: r.path_cost_ms,
            })
            .filter(|l| !l.source.is_empty()),
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
    let (tree, detached) = super::tree::build_tree(&main, &regional_origins, &subscribers);
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
