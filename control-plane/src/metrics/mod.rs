//! Control-plane metrics: `prometheus-client` counters and the store latency histogram in
//! one registry per server (passed in, no process-wide registry), plus gauges computed from
//! the cache at scrape time ([`cluster`]). Exposed in the Prometheus text format
//! (`strata_common::metrics`).
//!
//! Store calls made by the services go through [`TimedKv`] (what `State::kv()` hands out),
//! so every request-path etcd call is timed in one place.

pub mod cluster;
mod store;

use std::fmt;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric, counter};
use prometheus_client::registry::Registry;
use strata_common::metrics::counter_name;

pub use store::{STORE_BUCKETS, StoreMetrics, StoreOp, TimedKv};

/// A monotonically increasing counter: prometheus-client's (a handle on a registered
/// series; clones share it), with the methods the services call.
#[derive(Debug, Clone, Default)]
pub struct Counter(counter::Counter);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Requests the HTTP front door answered, by kind and outcome.
#[derive(Debug)]
pub struct FrontDoorMetrics {
    /// WHIP requests redirected to a node.
    pub whip_redirects: Counter,
    /// WHEP requests redirected to a node.
    pub whep_redirects: Counter,
    /// WHEP requests redirected to a node that already carries the stream.
    pub whep_redirects_carrier: Counter,
    /// Requests refused as malformed (400).
    pub bad_requests: Counter,
    /// Requests refused because no node could take them or the store is down (503).
    pub unavailable: Counter,
}

/// Everything the control plane counts. Each field is a handle on a series of the
/// registry; labelled families have every series registered from the start.
#[derive(Debug)]
pub struct Metrics {
    /// Resolve calls answered.
    pub resolves: Counter,
    /// Resolves answered from the cache without a store write.
    pub resolves_cached: Counter,
    /// Regional origin claims won.
    pub claims_won: Counter,
    /// Regional origin claims lost to another node.
    pub claims_lost: Counter,
    /// Main origin claims (publish) won.
    pub publishes: Counter,
    /// Claims refused RESOURCE_EXHAUSTED by admission control (`service/admission.rs`).
    pub claims_rejected: Counter,
    /// Main origins taken over from a dead holder (part of `publishes`).
    pub main_takeovers: Counter,
    /// Switch-overs to a standby (a backup publisher's node).
    pub standby_switches: Counter,
    /// Lookups (node records, main origins) answered by the cache.
    pub cache_hits: Counter,
    /// Node lookups that missed the cache and read the store.
    pub cache_misses: Counter,
    /// Registrations.
    pub registrations: Counter,
    /// Keep-alives.
    pub keepalives: Counter,
    /// Load reports written to the store (a material change).
    pub load_writes: Counter,
    /// Load reports left unwritten (within the tolerance of the stored one).
    pub load_unwritten: Counter,
    /// Store call latency and errors.
    pub store: StoreMetrics,
    /// The HTTP front door.
    pub front_door: FrontDoorMetrics,
    registry: Registry,
}

/// Registers an unlabelled counter exposed as `name` (ending in `_total`).
fn counter(registry: &mut Registry, name: &'static str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(counter_name(name), help, c.clone());
    c
}

/// Registers a counter family with one label, one series per value, in `values`' order.
fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &'static str,
    help: &str,
    key: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
    let series = values.map(|v| family.get_or_create_owned(&[(key, v)]));
    registry.register(counter_name(name), help, family);
    series
}

impl FrontDoorMetrics {
    /// Registers the front door's families in `registry`.
    fn register(r: &mut Registry) -> Self {
        let [whip_redirects, whep_redirects] = labelled(
            r,
            "strata_control_front_door_redirects_total",
            "WHIP/WHEP requests the front door redirected to a node",
            "kind",
            ["whip", "whep"],
        );
        let whep_redirects_carrier = counter(
            r,
            "strata_control_front_door_carrier_redirects_total",
            "WHEP requests redirected to a node already carrying the stream",
        );
        let [bad_requests, unavailable] = labelled(
            r,
            "strata_control_front_door_refused_total",
            "WHIP/WHEP requests the front door refused, by HTTP status",
            "status",
            ["400", "503"],
        );
        Self {
            whip_redirects,
            whep_redirects,
            whep_redirects_carrier,
            bad_requests,
            unavailable,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let r = &mut Registry::default();
        let [load_writes, load_unwritten] = labelled(
            r,
            "strata_control_load_reports_total",
            "Load reports received, by whether they were written to etcd",
            "written",
            ["true", "false"],
        );
        Self {
            resolves: counter(r, "strata_control_resolves_total", "Resolve calls answered"),
            resolves_cached: counter(
                r,
                "strata_control_resolves_cached_total",
                "Resolves answered from the cache alone",
            ),
            claims_won: counter(
                r,
                "strata_control_claims_won_total",
                "Regional origin claims won",
            ),
            claims_lost: counter(
                r,
                "strata_control_claims_lost_total",
                "Regional origin claims lost",
            ),
            publishes: counter(
                r,
                "strata_control_publishes_total",
                "Main origin claims won",
            ),
            claims_rejected: counter(
                r,
                "strata_control_claims_rejected_total",
                "Claims (publishes, resolves that write) refused RESOURCE_EXHAUSTED by admission control",
            ),
            main_takeovers: counter(
                r,
                "strata_control_main_takeovers_total",
                "Main origins taken over from a dead holder before its lease expired",
            ),
            standby_switches: counter(
                r,
                "strata_control_standby_switches_total",
                "Switch-overs of a stream's main origin to its standby (backup publisher)",
            ),
            cache_hits: counter(
                r,
                "strata_control_cache_hits_total",
                "Lookups (node records, main origins) answered by the cache",
            ),
            cache_misses: counter(
                r,
                "strata_control_cache_misses_total",
                "Cache misses read from etcd",
            ),
            registrations: counter(
                r,
                "strata_control_registrations_total",
                "Node registrations",
            ),
            keepalives: counter(r, "strata_control_keepalives_total", "Node keep-alives"),
            load_writes,
            load_unwritten,
            store: StoreMetrics::register(r),
            front_door: FrontDoorMetrics::register(r),
            registry: std::mem::take(r),
        }
    }
}

impl Metrics {
    /// The exposition: every counter and histogram, then the families of `scrape` (gauges
    /// computed for this scrape, see [`cluster::gauges`]).
    pub fn render(&self, scrape: &Registry) -> Result<String, fmt::Error> {
        strata_common::metrics::encode(&[&self.registry, scrape])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn labelled_series_share_one_help_and_exist_from_the_start() {
        let m = Metrics::default();
        m.front_door.whip_redirects.inc();
        let out = m.render(&Registry::default()).unwrap();
        let help = "# HELP strata_control_front_door_redirects_total";
        assert_eq!(out.matches(help).count(), 1, "{out}");
        assert!(out.contains("strata_control_front_door_redirects_total{kind=\"whip\"} 1\n"));
        assert!(out.contains("strata_control_front_door_redirects_total{kind=\"whep\"} 0\n"));
        assert!(out.contains("strata_control_load_reports_total{written=\"false\"} 0\n"));
        assert!(out.contains("# TYPE strata_control_resolves_total counter\n"));
        // One convention: every family's help is a sentence.
        for line in out.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(line.ends_with('.'), "{line}");
        }
    }
}
