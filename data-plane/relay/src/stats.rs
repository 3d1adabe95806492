//! Relay counters, for the node to render as Prometheus text.
//!
//! Plain atomics behind an `Arc` the node creates and passes in: no global
//! registry. Per-peer counters are keyed by the peer's node id (from its
//! certificate; `"unknown"` in insecure mode).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (µs) of the hop-latency histogram buckets; a last bucket
/// counts everything above.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Traffic with one peer node.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Media bytes received (frame payloads and headers).
    pub bytes_in: AtomicU64,
    /// Media bytes sent.
    pub bytes_out: AtomicU64,
    /// Packets received.
    pub packets_in: AtomicU64,
    /// Packets sent.
    pub packets_out: AtomicU64,
}

/// Histogram of per-hop latency: receiver's wall clock minus the sender's
/// `send_us`, so it includes clock skew between nodes.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// Record one sample.
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let idx = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        if let Some(bucket) = self.buckets.get(idx) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative), the last one being "above every bound".
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Sum of all samples in µs.
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One received frame's clocks, for a [`RelayStats::with_hop_observer`] hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopSample {
    /// The sender's wall clock when it wrote the frame (µs since the Unix epoch).
    pub send_us: u64,
    /// The receiver's wall clock when it decoded the frame.
    pub recv_us: u64,
    /// When the packet entered the cluster.
    pub ingest_us: u64,
}

type HopObserver = Box<dyn Fn(HopSample) + Send + Sync>;

/// An optional per-frame hook; `None` costs one branch per frame.
#[derive(Default)]
struct ObserverSlot(Option<HopObserver>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// All relay counters of a node (server and client sides).
#[derive(Debug, Default)]
pub struct RelayStats {
    peers: Mutex<BTreeMap<String, Arc<PeerStats>>>,
    /// Live connections, for link measurements (RTT, loss).
    pub links: Arc<crate::links::Links>,
    /// Group streams reset because they fell too far behind.
    pub group_resets: AtomicU64,
    /// Groups the receiver did not deliver to their end: reset by the
    /// upstream, or given up on because a newer group waited too long.
    pub groups_skipped: AtomicU64,
    /// Frames the receiver dropped because their group was older than the
    /// one being delivered (or already given up on).
    pub late_frames: AtomicU64,
    /// Keyframe requests received from downstreams.
    pub keyframe_requests_in: AtomicU64,
    /// Keyframe requests sent upstream.
    pub keyframe_requests_out: AtomicU64,
    /// Layer-interest messages received from downstreams.
    pub layer_interest_in: AtomicU64,
    /// Layer-interest messages sent upstream.
    pub layer_interest_out: AtomicU64,
    /// Subscriptions served (accepted) so far.
    pub subscriptions_served: AtomicU64,
    /// Subscriptions refused so far.
    pub subscriptions_refused: AtomicU64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: AtomicU64,
    /// Per-hop latency of received frames.
    pub hop_latency: LatencyHistogram,
    hop_observer: ObserverSlot,
}

impl RelayStats {
    /// A fresh set of counters.
    pub fn new() -> Arc<Self> {
        Arc::new(RelayStats::default())
    }

    /// Fresh counters that also hand every received frame's clocks to
    /// `observer`, for measurements finer than [`hop_latency`](Self::hop_latency)'s
    /// buckets (the relay benchmark). It runs on the receive path of every
    /// frame, on the group reader's task: keep it short and non-blocking.
    pub fn with_hop_observer(observer: impl Fn(HopSample) + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(RelayStats {
            hop_observer: ObserverSlot(Some(Box::new(observer))),
            ..RelayStats::default()
        })
    }

    /// Record a received frame's latency (and hand it to the observer, if any).
    pub(crate) fn on_hop(&self, sample: HopSample) {
        let latency = sample.recv_us.saturating_sub(sample.send_us);
        self.hop_latency.record(Duration::from_micros(latency));
        if let Some(observer) = &self.hop_observer.0 {
            observer(sample);
        }
    }

    /// Counters for one peer, created on first use.
    pub fn peer(&self, node_id: &str) -> Arc<PeerStats> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.entry(node_id.to_owned()).or_default().clone()
    }

    /// Every peer seen so far, by node id.
    pub fn peers(&self) -> Vec<(String, Arc<PeerStats>)> {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_observer_sees_every_frame() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let stats = RelayStats::with_hop_observer(move |s| {
            sink.lock().unwrap_or_else(PoisonError::into_inner).push(s)
        });
        let sample = HopSample {
            send_us: 1_000,
            recv_us: 1_250,
            ingest_us: 900,
        };
        stats.on_hop(sample);
        assert_eq!(*seen.lock().unwrap(), [sample]);
        assert_eq!(stats.hop_latency.sum_us(), 250);
        RelayStats::default().on_hop(sample); // no observer: only the histogram
    }

    #[test]
    fn histogram_buckets() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(101));
        h.record(Duration::from_secs(5));
        let b = h.buckets();
        assert_eq!(b[0], 2);
        assert_eq!(b[1], 1);
        assert_eq!(b[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_us(), 5_000_251);
    }
}
