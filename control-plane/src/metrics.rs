//! Control-plane counters and the store latency histogram, rendered in the
//! Prometheus text format.
//!
//! One [`Metrics`] per server, passed in (no process-wide registry). Store
//! calls made by the services go through [`TimedKv`] (what
//! `State::kv()` hands out), so every request-path etcd call is timed in one
//! place.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::kv::{Compare, KeyValue, Kv, KvError, Op, TxnOutcome};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the store latency buckets.
pub const STORE_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; the `+Inf` bucket last).
    buckets: [AtomicU64; STORE_BUCKETS.len() + 1],
    /// Sum of observations in nanoseconds.
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = STORE_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(STORE_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = STORE_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |v| v.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count());
    }
}

/// The kinds of store call, the `op` label of the latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Lease grant (register).
    Grant,
    /// Lease renewal (keep-alive).
    KeepAlive,
    /// Lease revoke (deregister, re-register).
    Revoke,
    /// Single-key read.
    Get,
    /// Unconditional single-key write.
    Put,
    /// Guarded transaction (claims, publish, release).
    Txn,
}

impl StoreOp {
    /// Every op, in render order.
    pub const ALL: [StoreOp; 6] = [
        StoreOp::Grant,
        StoreOp::KeepAlive,
        StoreOp::Revoke,
        StoreOp::Get,
        StoreOp::Put,
        StoreOp::Txn,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            StoreOp::Grant => "grant",
            StoreOp::KeepAlive => "keep_alive",
            StoreOp::Revoke => "revoke",
            StoreOp::Get => "get",
            StoreOp::Put => "put",
            StoreOp::Txn => "txn",
        }
    }
}

/// Latency and failures of store calls, per [`StoreOp`].
#[derive(Debug, Default)]
pub struct StoreMetrics {
    latency: [Histogram; StoreOp::ALL.len()],
    errors: [Counter; StoreOp::ALL.len()],
}

impl StoreMetrics {
    /// The latency histogram of one op.
    pub fn latency(&self, op: StoreOp) -> &Histogram {
        &self.latency[op as usize]
    }

    /// Records one call's outcome.
    pub fn record<T>(&self, op: StoreOp, started: Instant, result: &Result<T, KvError>) {
        self.latency[op as usize].observe(started.elapsed());
        if result.is_err() {
            self.errors[op as usize].inc();
        }
    }
}

/// Requests the HTTP front door answered, by kind and outcome.
#[derive(Debug, Default)]
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
}

/// A gauge computed at render time: name, help, (labels, value) series.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

impl Metrics {
    /// Renders the counters plus gauges computed by the caller.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        let fd = &self.front_door;
        let counters: [(&str, &str, &str, &Counter); 19] = [
            (
                "strata_control_resolves_total",
                "Resolve calls answered",
                "",
                &self.resolves,
            ),
            (
                "strata_control_resolves_cached_total",
                "Resolves answered from the cache alone",
                "",
                &self.resolves_cached,
            ),
            (
                "strata_control_claims_won_total",
                "Regional origin claims won",
                "",
                &self.claims_won,
            ),
            (
                "strata_control_claims_lost_total",
                "Regional origin claims lost",
                "",
                &self.claims_lost,
            ),
            (
                "strata_control_claims_rejected_total",
                "Claims (publishes, resolves that write) refused RESOURCE_EXHAUSTED by admission control",
                "",
                &self.claims_rejected,
            ),
            (
                "strata_control_publishes_total",
                "Main origin claims won",
                "",
                &self.publishes,
            ),
            (
                "strata_control_main_takeovers_total",
                "Main origins taken over from a dead holder before its lease expired",
                "",
                &self.main_takeovers,
            ),
            (
                "strata_control_standby_switches_total",
                "Switch-overs of a stream's main origin to its standby (backup publisher)",
                "",
                &self.standby_switches,
            ),
            (
                "strata_control_cache_hits_total",
                "Lookups (node records, main origins) answered by the cache",
                "",
                &self.cache_hits,
            ),
            (
                "strata_control_cache_misses_total",
                "Cache misses read from etcd",
                "",
                &self.cache_misses,
            ),
            (
                "strata_control_registrations_total",
                "Node registrations",
                "",
                &self.registrations,
            ),
            (
                "strata_control_keepalives_total",
                "Node keep-alives",
                "",
                &self.keepalives,
            ),
            (
                "strata_control_load_reports_total",
                "Load reports received, by whether they were written to etcd",
                "{written=\"true\"}",
                &self.load_writes,
            ),
            (
                "strata_control_load_reports_total",
                "",
                "{written=\"false\"}",
                &self.load_unwritten,
            ),
            (
                "strata_control_front_door_redirects_total",
                "WHIP/WHEP requests the front door redirected to a node",
                "{kind=\"whip\"}",
                &fd.whip_redirects,
            ),
            (
                "strata_control_front_door_redirects_total",
                "",
                "{kind=\"whep\"}",
                &fd.whep_redirects,
            ),
            (
                "strata_control_front_door_carrier_redirects_total",
                "WHEP requests redirected to a node already carrying the stream",
                "",
                &fd.whep_redirects_carrier,
            ),
            (
                "strata_control_front_door_refused_total",
                "WHIP/WHEP requests the front door refused, by HTTP status",
                "{status=\"400\"}",
                &fd.bad_requests,
            ),
            (
                "strata_control_front_door_refused_total",
                "",
                "{status=\"503\"}",
                &fd.unavailable,
            ),
        ];
        for (name, help, labels, c) in counters {
            // A series continuing the previous metric has no HELP of its own.
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            }
            let _ = writeln!(out, "{name}{labels} {}", c.get());
        }

        let name = "strata_control_store_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Store (etcd) calls that failed, by operation\n# TYPE {name} counter"
        );
        for op in StoreOp::ALL {
            let v = self.store.errors[op as usize].get();
            let _ = writeln!(out, "{name}{{op=\"{}\"}} {v}", op.label());
        }
        let name = "strata_control_store_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of store (etcd) calls made while serving requests, by operation\n# TYPE {name} histogram"
        );
        for op in StoreOp::ALL {
            self.store
                .latency(op)
                .render(&mut out, name, &format!("op=\"{}\"", op.label()));
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

/// The store as the services see it: every call is timed into
/// [`StoreMetrics`]. Same methods as [`Kv`].
pub struct TimedKv<'a> {
    kv: &'a Kv,
    metrics: &'a StoreMetrics,
}

impl<'a> TimedKv<'a> {
    /// Times calls on `kv` into `metrics`.
    pub fn new(kv: &'a Kv, metrics: &'a StoreMetrics) -> Self {
        Self { kv, metrics }
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.record(op, started, &result);
        result
    }

    /// [`Kv::grant`].
    pub async fn grant(&self, ttl: Duration) -> Result<i64, KvError> {
        self.timed(StoreOp::Grant, self.kv.grant(ttl)).await
    }

    /// [`Kv::keep_alive`].
    pub async fn keep_alive(&self, lease: i64) -> Result<(), KvError> {
        self.timed(StoreOp::KeepAlive, self.kv.keep_alive(lease))
            .await
    }

    /// [`Kv::revoke`].
    pub async fn revoke(&self, lease: i64) -> Result<i64, KvError> {
        self.timed(StoreOp::Revoke, self.kv.revoke(lease)).await
    }

    /// [`Kv::get`].
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        self.timed(StoreOp::Get, self.kv.get(key)).await
    }

    /// [`Kv::txn`].
    pub async fn txn(
        &self,
        compares: Vec<Compare>,
        then: Vec<Op>,
        otherwise: Vec<Op>,
    ) -> Result<TxnOutcome, KvError> {
        self.timed(StoreOp::Txn, self.kv.txn(compares, then, otherwise))
            .await
    }

    /// [`Kv::put`].
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<i64, KvError> {
        self.timed(StoreOp::Put, self.kv.put(key, value, lease))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x", "op=\"get\"");
        assert!(
            out.contains("x_bucket{op=\"get\",le=\"0.00025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{op=\"get\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{op=\"get\",le=\"5\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{op=\"get\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{op=\"get\"} 3\n"), "{out}");
    }

    #[test]
    fn labelled_series_share_one_help() {
        let m = Metrics::default();
        m.front_door.whip_redirects.inc();
        let out = m.render(&[]);
        let help = "# HELP strata_control_front_door_redirects_total";
        assert_eq!(out.matches(help).count(), 1, "{out}");
        assert!(out.contains("strata_control_front_door_redirects_total{kind=\"whip\"} 1\n"));
        assert!(out.contains("strata_control_front_door_redirects_total{kind=\"whep\"} 0\n"));
    }
}
