//! The node's view of the registry (from `ListNodes`): which nodes are
//! registered and in which region (per-region metrics, and who may subscribe
//! over the relay), and the revocation list the relay enforces.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strata_proto::v1;
use strata_relay::{LiveTls, Revocations};
use tokio::sync::{Notify, watch};
use tracing::info;

use crate::control::ControlClient;

/// What the relay authorizer makes of a peer (see [`RegistryView::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVerdict {
    /// A registered node.
    Registered,
    /// Not in the view yet; the view may predate the peer's registration.
    /// Refused as retryable while the view is refreshed.
    NotYet,
    /// Still missing from a view fetched after the peer was first refused.
    NotRegistered,
}

/// Registered nodes (id → region) as last listed, and the relay peers that
/// were missing from it. Sans-IO: time is an argument.
#[derive(Debug, Default)]
pub struct RegistryView {
    nodes: HashMap<String, String>,
    fetched_at: Option<Instant>,
    first_miss: HashMap<String, Instant>,
    last_refresh_request: Option<Instant>,
}

/// Peers remembered as missing (only holders of a CA certificate get here).
const MAX_MISSES: usize = 1024;

impl RegistryView {
    /// Replaces the view with a listing fetched at `now`.
    pub fn set(&mut self, nodes: HashMap<String, String>, now: Instant) {
        self.nodes = nodes;
        self.fetched_at = Some(now);
        let nodes = &self.nodes;
        self.first_miss.retain(|p, _| !nodes.contains_key(p));
    }

    /// Whether `peer` may use the relay at `now`, and whether to refresh the
    /// view now (at most once per `refresh_every`).
    ///
    /// A peer missing from the view is first refused as [`PeerVerdict::NotYet`]
    /// (it may have registered after the view was fetched: a retryable
    /// refusal keeps its puller from reporting this node unreachable); once a
    /// view fetched after that first refusal still lacks it, it is
    /// [`PeerVerdict::NotRegistered`].
    pub fn check(
        &mut self,
        peer: &str,
        now: Instant,
        refresh_every: Duration,
    ) -> (PeerVerdict, bool) {
        if self.nodes.contains_key(peer) {
            return (PeerVerdict::Registered, false);
        }
        let refresh = self
            .last_refresh_request
            .is_none_or(|t| now.saturating_duration_since(t) >= refresh_every);
        if refresh {
            self.last_refresh_request = Some(now);
        }
        let verdict = match (self.first_miss.get(peer), self.fetched_at) {
            (Some(&missed), Some(fetched)) if fetched > missed => PeerVerdict::NotRegistered,
            (Some(_), _) => PeerVerdict::NotYet,
            (None, _) => {
                if self.first_miss.len() >= MAX_MISSES {
                    self.first_miss.clear();
                }
                self.first_miss.insert(peer.to_owned(), now);
                PeerVerdict::NotYet
            }
        };
        (verdict, refresh)
    }

    /// The region of a node, if listed.
    pub fn region(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).map(String::as_str)
    }
}

/// The registry view shared by the relay authorizer, the metrics and the link
/// reports, with the wake-up of its refresh task.
#[derive(Debug, Default)]
pub struct PeerView {
    view: Mutex<RegistryView>,
    /// Wakes the registry refresh early (a relay peer missing from the view).
    refresh: Notify,
}

impl PeerView {
    fn view(&self) -> MutexGuard<'_, RegistryView> {
        // Every step leaves the view whole: a poisoned lock still guards it.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the registered nodes and their regions, as listed at `now`.
    pub fn set_regions(&self, regions: HashMap<String, String>, now: Instant) {
        self.view().set(regions, now);
    }

    /// Whether relay peer `node` is a registered node at `now`; a miss wakes
    /// the registry refresh (at most once per `refresh_every`).
    pub fn check(&self, node: &str, now: Instant, refresh_every: Duration) -> PeerVerdict {
        let (verdict, refresh) = self.view().check(node, now, refresh_every);
        if refresh {
            self.refresh.notify_one();
        }
        verdict
    }

    /// The region of a peer node, `unknown` if not listed.
    pub fn region(&self, node: &str) -> String {
        self.view().region(node).unwrap_or("unknown").to_owned()
    }

    /// Takes a `ListNodes` answer: the registered nodes, and the revoked
    /// certificates the relay must refuse from its next handshake on.
    pub fn apply(&self, live: Option<&LiveTls>, registry: v1::ListNodesResponse) {
        if let Some(live) = live {
            set_revoked(live, &registry.revoked);
        }
        let regions = registry
            .nodes
            .into_iter()
            .filter_map(|n| n.info.map(|i| (i.id, i.region)))
            .collect();
        self.set_regions(regions, Instant::now());
    }

    /// Keeps the view (and the revocation list) fresh: every 2 s, and at
    /// once when the relay meets a peer it does not know. A failed
    /// `ListNodes` keeps the last view, so a control-plane outage does not
    /// cut the relay (nor forget a revocation).
    pub async fn refresh(
        &self,
        control: ControlClient,
        live: Option<LiveTls>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            if let Ok(registry) = control.registry().await {
                self.apply(live.as_ref(), registry);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = self.refresh.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }
}

fn set_revoked(live: &LiveTls, list: &[v1::RevokedCertificate]) {
    let mut revoked = Revocations::default();
    for r in list {
        if !r.serial.is_empty() {
            revoked.serials.insert(r.serial.clone());
        }
        if !r.sha256.is_empty() {
            revoked.sha256.insert(r.sha256.clone());
        }
    }
    if *live.revoked() != revoked {
        info!(
            serials = revoked.serials.len(),
            fingerprints = revoked.sha256.len(),
            "revocation list updated"
        );
        live.set_revoked(revoked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &[&str], at: Instant) -> RegistryView {
        let mut v = RegistryView::default();
        v.set(
            nodes
                .iter()
                .map(|n| ((*n).to_owned(), "r".to_owned()))
                .collect(),
            at,
        );
        v
    }

    #[test]
    fn a_peer_missing_from_the_view_is_refused_for_good_only_after_a_refresh() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut v = view(&["a"], t0);
        assert_eq!(v.check("a", t0, s), (PeerVerdict::Registered, false));
        // Registered after the view was fetched: retryable, and a refresh is due.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(v.check("b", t1, s), (PeerVerdict::NotYet, true));
        // Still the old view: still retryable; no second refresh within a second.
        assert_eq!(
            v.check("b", t1 + Duration::from_millis(10), s),
            (PeerVerdict::NotYet, false)
        );
        // The refresh lists it.
        v.set(
            [("a", "r"), ("b", "r")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .into(),
            t1 + s,
        );
        assert_eq!(v.check("b", t1 + s, s).0, PeerVerdict::Registered);
        // A peer that a newer view still lacks is not registered.
        let t2 = t1 + 2 * s;
        assert_eq!(v.check("rogue", t2, s), (PeerVerdict::NotYet, true));
        v.set(v.nodes.clone(), t2 + Duration::from_millis(50));
        assert_eq!(
            v.check("rogue", t2 + Duration::from_millis(60), s).0,
            PeerVerdict::NotRegistered
        );
        assert_eq!(
            v.check("rogue", t2 + 2 * s, s),
            (PeerVerdict::NotRegistered, true)
        );
    }

    #[test]
    fn misses_stay_bounded() {
        let t0 = Instant::now();
        let mut v = view(&[], t0);
        for i in 0..5000 {
            let _ = v.check(&format!("p{i}"), t0, Duration::from_secs(1));
        }
        assert!(v.first_miss.len() <= MAX_MISSES);
    }

    #[test]
    fn a_listing_sets_regions() {
        let peers = PeerView::default();
        let node = |id: &str, region: &str| v1::Node {
            info: Some(v1::NodeInfo {
                id: id.into(),
                region: region.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        peers.apply(
            None,
            v1::ListNodesResponse {
                nodes: vec![node("a", "eu"), node("b", "us")],
                ..Default::default()
            },
        );
        assert_eq!(peers.region("b"), "us");
        assert_eq!(peers.region("c"), "unknown");
        let s = Duration::from_secs(1);
        assert_eq!(peers.check("a", Instant::now(), s), PeerVerdict::Registered);
    }
}
