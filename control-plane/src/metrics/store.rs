//! Latency and failures of the store (etcd) calls made while serving requests, and
//! [`TimedKv`], the store as the services see it, which records them.

use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use strata_common::metrics::counter_name;

use super::Counter;
use crate::kv::{Compare, KeyValue, Kv, KvError, Op, TxnOutcome};

/// Upper bounds (seconds) of the store latency buckets.
pub const STORE_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

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
    /// Every op.
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

type OpLabel = [(&'static str, &'static str); 1];

/// Latency and failures of store calls, per [`StoreOp`]: handles on the series of two
/// registered families, every op's series present from the start.
#[derive(Debug)]
pub struct StoreMetrics {
    latency: [Histogram; StoreOp::ALL.len()],
    errors: [Counter; StoreOp::ALL.len()],
}

impl StoreMetrics {
    /// Registers the store families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let errors = Family::<OpLabel, Counter>::default();
        let latency =
            Family::<OpLabel, Histogram>::new_with_constructor(|| Histogram::new(STORE_BUCKETS));
        let label = |op: StoreOp| [("op", op.label())];
        let this = Self {
            errors: StoreOp::ALL.map(|op| errors.get_or_create_owned(&label(op))),
            latency: StoreOp::ALL.map(|op| latency.get_or_create_owned(&label(op))),
        };
        registry.register(
            counter_name("strata_control_store_errors_total"),
            "Store (etcd) calls that failed, by operation",
            errors,
        );
        registry.register(
            "strata_control_store_request_duration_seconds",
            "Duration of store (etcd) calls made while serving requests, by operation",
            latency,
        );
        this
    }

    /// The latency histogram of one op.
    pub fn latency(&self, op: StoreOp) -> &Histogram {
        &self.latency[op as usize]
    }

    /// Records one call's outcome.
    pub fn record<T>(&self, op: StoreOp, started: Instant, result: &Result<T, KvError>) {
        self.latency[op as usize].observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors[op as usize].inc();
        }
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_per_op() {
        let mut r = Registry::default();
        let m = StoreMetrics::register(&mut r);
        let h = m.latency(StoreOp::Get);
        h.observe(Duration::from_micros(100).as_secs_f64());
        h.observe(Duration::from_millis(3).as_secs_f64());
        h.observe(Duration::from_secs(10).as_secs_f64());
        let out = strata_common::metrics::encode(&[&r]).unwrap();
        let name = "strata_control_store_request_duration_seconds";
        for line in [
            format!("{name}_bucket{{op=\"get\",le=\"0.00025\"}} 1\n"),
            format!("{name}_bucket{{op=\"get\",le=\"0.005\"}} 2\n"),
            format!("{name}_bucket{{op=\"get\",le=\"5\"}} 2\n"),
            format!("{name}_bucket{{op=\"get\",le=\"+Inf\"}} 3\n"),
            format!("{name}_count{{op=\"get\"}} 3\n"),
            format!("{name}_count{{op=\"txn\"}} 0\n"),
            "strata_control_store_errors_total{op=\"keep_alive\"} 0\n".to_owned(),
        ] {
            assert!(out.contains(&line), "{line:?} missing from\n{out}");
        }
    }
}
