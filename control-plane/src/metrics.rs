//! Control-plane counters, rendered in the Prometheus text format.
//!
//! One [`Metrics`] per server, passed in (no process-wide registry).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge computed at render time: name, help, (labels, value) series.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// Everything the control plane counts.
#[derive(Debug, Default)]
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
    /// Node lookups that missed the cache and read the store.
    pub cache_misses: Counter,
    /// Registrations.
    pub registrations: Counter,
    /// Keep-alives.
    pub keepalives: Counter,
}

impl Metrics {
    /// Renders the counters plus gauges computed by the caller.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        let counters = [
            (
                "strata_control_resolves_total",
                "Resolve calls answered",
                &self.resolves,
            ),
            (
                "strata_control_resolves_cached_total",
                "Resolves answered from the cache alone",
                &self.resolves_cached,
            ),
            (
                "strata_control_claims_won_total",
                "Regional origin claims won",
                &self.claims_won,
            ),
            (
                "strata_control_claims_lost_total",
                "Regional origin claims lost",
                &self.claims_lost,
            ),
            (
                "strata_control_publishes_total",
                "Main origin claims won",
                &self.publishes,
            ),
            (
                "strata_control_cache_misses_total",
                "Cache misses read from etcd",
                &self.cache_misses,
            ),
            (
                "strata_control_registrations_total",
                "Node registrations",
                &self.registrations,
            ),
            (
                "strata_control_keepalives_total",
                "Node keep-alives",
                &self.keepalives,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        for (name, help, series) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        out
    }
}
