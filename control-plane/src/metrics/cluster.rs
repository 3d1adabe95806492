//! Gauges of the whole cluster, computed from the cache at scrape time: nodes, load and
//! streams per region, and the cache's own health.

use std::collections::BTreeMap;

use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use strata_common::metrics::ConstFamily;

use crate::cache::View;

#[derive(Default)]
struct Region {
    nodes: i64,
    draining: i64,
    players: i64,
    publishers: i64,
    egress_bps: f64,
}

type RegionLabel = [(&'static str, String); 1];

/// One gauge family with a series per region (in name order).
fn per_region<N>(
    regions: &BTreeMap<String, Region>,
    value: impl Fn(&Region) -> N,
) -> ConstFamily<RegionLabel, ConstGauge<N>> {
    ConstFamily::new(
        regions
            .iter()
            .map(|(name, r)| ([("region", name.clone())], ConstGauge::new(value(r))))
            .collect(),
    )
}

/// One region's value of a gauge.
type OfRegion = fn(&Region) -> i64;

/// Per-region gauges of whole numbers: name, help, and the value of one region.
const PER_REGION: [(&str, &str, OfRegion); 4] = [
    ("strata_control_nodes", "Live nodes per region", |r| r.nodes),
    (
        "strata_control_nodes_draining",
        "Draining nodes per region",
        |r| r.draining,
    ),
    (
        "strata_control_players",
        "Players per region, from the nodes' load reports",
        |r| r.players,
    ),
    (
        "strata_control_publishers",
        "Publishers per region, from the nodes' load reports",
        |r| r.publishers,
    ),
];

/// Nodes and their load reports, summed per region (in name order).
fn tally_regions(view: &View) -> BTreeMap<String, Region> {
    let mut regions = BTreeMap::<String, Region>::new();
    for n in view.nodes.values() {
        let r = regions.entry(n.value.region.clone()).or_default();
        r.nodes += 1;
        r.draining += i64::from(n.value.draining);
        if let Some(l) = view.loads.get(&n.value.id) {
            r.players += i64::from(l.players);
            r.publishers += i64::from(l.publishers);
            r.egress_bps += l.egress_bps as f64;
        }
    }
    regions
}

/// The cluster gauges of `view` (`healthy`: the cache is in sync with a reachable store),
/// in a registry of their own, for one scrape.
pub fn gauges(view: &View, healthy: bool) -> Registry {
    let regions = tally_regions(view);
    let (mut streams, mut regional, mut subscribers) = (0i64, 0i64, 0i64);
    for s in view.streams.values().filter(|s| s.main.is_some()) {
        streams += 1;
        regional += s.regions.len() as i64;
        subscribers += s.subscribers.len() as i64;
    }

    let mut reg = Registry::default();
    let r = &mut reg;
    for (name, help, value) in PER_REGION {
        r.register(name, help, per_region(&regions, value));
    }
    r.register(
        "strata_control_egress_bytes_per_second",
        "Egress per region in bytes per second, from the nodes' load reports",
        per_region(&regions, |r| r.egress_bps / 8.0),
    );
    let totals = [
        ("strata_control_streams", "Live streams", streams),
        (
            "strata_control_regional_origins",
            "Regional origin records of live streams",
            regional,
        ),
        (
            "strata_control_subscribers",
            "Subscriber records (nodes pulling a stream without being an origin)",
            subscribers,
        ),
        (
            "strata_control_cache_revision",
            "Store revision the cache reflects",
            view.revision,
        ),
        (
            "strata_control_store_healthy",
            "1 when the store is reachable and the cache in sync",
            i64::from(healthy),
        ),
    ];
    for (name, help, value) in totals {
        r.register(name, help, ConstGauge::new(value));
    }
    reg
}
