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

/// The cluster gauges of `view` (`healthy`: the cache is in sync with a reachable store),
/// in a registry of their own, for one scrape.
pub fn gauges(view: &View, healthy: bool) -> Registry {
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
    let (mut streams, mut regional, mut subscribers) = (0i64, 0i64, 0i64);
    for s in view.streams.values().filter(|s| s.main.is_some()) {
        streams += 1;
        regional += s.regions.len() as i64;
        subscribers += s.subscribers.len() as i64;
    }

    let mut reg = Registry::default();
    let r = &mut reg;
    r.register(
        "strata_control_nodes",
        "Live nodes per region",
        per_region(&regions, |r| r.nodes),
    );
    r.register(
        "strata_control_nodes_draining",
        "Draining nodes per region",
        per_region(&regions, |r| r.draining),
    );
    r.register(
        "strata_control_players",
        "Players per region, from the nodes' load reports",
        per_region(&regions, |r| r.players),
    );
    r.register(
        "strata_control_publishers",
        "Publishers per region, from the nodes' load reports",
        per_region(&regions, |r| r.publishers),
    );
    r.register(
        "strata_control_egress_bytes_per_second",
        "Egress per region in bytes per second, from the nodes' load reports",
        per_region(&regions, |r| r.egress_bps / 8.0),
    );
    r.register(
        "strata_control_streams",
        "Live streams",
        ConstGauge::new(streams),
    );
    r.register(
        "strata_control_regional_origins",
        "Regional origin records of live streams",
        ConstGauge::new(regional),
    );
    r.register(
        "strata_control_subscribers",
        "Subscriber records (nodes pulling a stream without being an origin)",
        ConstGauge::new(subscribers),
    );
    r.register(
        "strata_control_cache_revision",
        "Store revision the cache reflects",
        ConstGauge::new(view.revision),
    );
    r.register(
        "strata_control_store_healthy",
        "1 when the store is reachable and the cache in sync",
        ConstGauge::new(i64::from(healthy)),
    );
    reg
}
