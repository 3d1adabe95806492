//! What etcd itself says: its Prometheus counters (raft proposals, MVCC puts, deletes and
//! transactions, lease renewals, database size), and a watch over the control plane's prefix
//! that counts every key change by the kind of record it touches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use etcd_client::{EventType, WatchOptions};
use serde::Serialize;
use strata_control::keys::{KeyKind, Keys, MainRecord};
use tokio::task::JoinHandle;

use super::hist::Hist;
use crate::http::metric_sum;

/// etcd's own counters at one moment (one member: every member commits every proposal).
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdCounters {
    /// `etcd_server_proposals_committed_total`: raft entries (every write and lease grant or
    /// revoke; renewals are not raft entries).
    pub proposals: f64,
    /// `etcd_mvcc_put_total`.
    pub puts: f64,
    /// `etcd_mvcc_delete_total`.
    pub deletes: f64,
    /// `etcd_mvcc_txn_total`.
    pub txns: f64,
    /// `etcd_debugging_lease_renewed_total`.
    pub renewals: f64,
    /// `etcd_mvcc_db_total_size_in_bytes`.
    pub db_bytes: f64,
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`.
    pub db_in_use_bytes: f64,
    /// `etcd_debugging_mvcc_keys_total`.
    pub keys: f64,
}

impl EtcdCounters {
    /// Reads `/metrics` from the member at `endpoint` (`http://127.0.0.1:PORT`).
    pub async fn scrape(endpoint: &str) -> Result<Self> {
        let resp = crate::http::get(&format!("{endpoint}/metrics"))
            .await
            .context("reading etcd's /metrics")?;
        let text = resp.text();
        let m = |name: &str| metric_sum(&text, name, &[]);
        Ok(Self {
            proposals: m("etcd_server_proposals_committed_total"),
            puts: m("etcd_mvcc_put_total"),
            deletes: m("etcd_mvcc_delete_total"),
            txns: m("etcd_mvcc_txn_total"),
            renewals: m("etcd_debugging_lease_renewed_total"),
            db_bytes: m("etcd_mvcc_db_total_size_in_bytes"),
            db_in_use_bytes: m("etcd_mvcc_db_total_size_in_use_in_bytes"),
            keys: m("etcd_debugging_mvcc_keys_total"),
        })
    }
}

/// Rates of etcd's counters over a phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EtcdRates {
    /// Raft proposals committed per second.
    pub proposals_per_s: f64,
    /// MVCC puts per second.
    pub puts_per_s: f64,
    /// MVCC deletes per second.
    pub deletes_per_s: f64,
    /// MVCC transactions per second.
    pub txns_per_s: f64,
    /// Lease renewals per second.
    pub renewals_per_s: f64,
    /// Database file size at the end of the phase.
    pub db_bytes: u64,
    /// Database bytes in use at the end of the phase.
    pub db_in_use_bytes: u64,
    /// Keys at the end of the phase.
    pub keys: u64,
}

impl EtcdRates {
    /// The rates between two scrapes `secs` apart.
    pub fn between(a: &EtcdCounters, b: &EtcdCounters, secs: f64) -> Self {
        let rate = |x: f64, y: f64| {
            if secs > 0.0 {
                (y - x).max(0.0) / secs
            } else {
                0.0
            }
        };
        Self {
            proposals_per_s: rate(a.proposals, b.proposals),
            puts_per_s: rate(a.puts, b.puts),
            deletes_per_s: rate(a.deletes, b.deletes),
            txns_per_s: rate(a.txns, b.txns),
            renewals_per_s: rate(a.renewals, b.renewals),
            db_bytes: b.db_bytes as u64,
            db_in_use_bytes: b.db_in_use_bytes as u64,
            keys: b.keys as u64,
        }
    }
}

/// The kinds of record a key change touches, in report order.
pub const SOURCES: [&str; 7] = [
    "nodes",
    "load",
    "main",
    "regions",
    "subscribers",
    "revoked",
    "other",
];

/// Counts of key changes by source, and how late the main-origin puts arrived.
#[derive(Default)]
pub struct KeyCounts {
    /// Puts by source, in [`SOURCES`] order.
    pub puts: [AtomicU64; SOURCES.len()],
    /// Deletes by source.
    pub deletes: [AtomicU64; SOURCES.len()],
    /// Watch delay of main-origin puts: from the record's `started_at_ms` (set by the control
    /// plane just before its transaction) to this watch seeing it.
    pub main_delay: Hist,
}

impl KeyCounts {
    /// Puts and deletes by source so far.
    pub fn snapshot(&self) -> [(u64, u64); SOURCES.len()] {
        std::array::from_fn(|i| {
            (
                self.puts[i].load(Ordering::Relaxed),
                self.deletes[i].load(Ordering::Relaxed),
            )
        })
    }
}

fn source(kind: Option<KeyKind<'_>>) -> usize {
    match kind {
        Some(KeyKind::Node(_)) => 0,
        Some(KeyKind::Load(_)) => 1,
        Some(KeyKind::Main(_)) => 2,
        Some(KeyKind::Standby(_)) => 2,
        Some(KeyKind::Regional(..)) => 3,
        Some(KeyKind::Subscriber(..)) => 4,
        Some(KeyKind::Revoked(..) | KeyKind::Link(..)) => 5,
        None => 6,
    }
}

/// Follows every change under the control plane's prefix until dropped.
pub struct KeyWatch {
    /// The counts so far.
    pub counts: Arc<KeyCounts>,
    task: JoinHandle<()>,
}

impl KeyWatch {
    /// Watches `prefix` on `endpoint` from now on.
    pub async fn start(endpoint: &str, prefix: &str) -> Result<Self> {
        let mut client = etcd_client::Client::connect([endpoint], None).await?;
        let mut stream = client
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await?;
        let counts = Arc::new(KeyCounts::default());
        let keys = Keys::new(prefix);
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                for ev in msg.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    let kind = keys.parse(&key);
                    let is_main = matches!(kind, Some(KeyKind::Main(_)));
                    let i = source(kind);
                    match ev.event_type() {
                        EventType::Put => {
                            c.puts[i].fetch_add(1, Ordering::Relaxed);
                            if is_main && kv.version() == 1 {
                                main_delay(&c.main_delay, kv.value());
                            }
                        }
                        EventType::Delete => {
                            c.deletes[i].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Ok(Self { counts, task })
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn main_delay(hist: &Hist, value: &[u8]) {
    let Ok(record) = serde_json::from_slice::<MainRecord>(value) else {
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let ms = (now_ms - record.started_at_ms).max(0) as u64;
    hist.record(Duration::from_millis(ms));
}

/// Key changes per second by source between two snapshots `secs` apart.
pub fn per_source(
    a: &[(u64, u64); SOURCES.len()],
    b: &[(u64, u64); SOURCES.len()],
    secs: f64,
) -> BTreeMap<String, (f64, f64)> {
    let rate = |x: u64, y: u64| {
        if secs > 0.0 {
            y.saturating_sub(x) as f64 / secs
        } else {
            0.0
        }
    };
    SOURCES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                (*s).to_owned(),
                (rate(a[i].0, b[i].0), rate(a[i].1, b[i].1)),
            )
        })
        .collect()
}
