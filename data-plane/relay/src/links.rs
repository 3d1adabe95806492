//! The node's live relay connections by peer, for link measurements: QUIC
//! already knows each connection's smoothed RTT and how many of the packets
//! it sent were lost. The node turns these into per-region link costs for
//! the control plane's region graph.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What one connection measured so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSample {
    /// The peer's node id (from its certificate; `"unknown"` in insecure mode).
    pub peer: String,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// UDP datagrams this side sent on the connection.
    pub sent_packets: u64,
    /// Of those, how many QUIC declared lost.
    pub lost_packets: u64,
}

/// Live connections (both directions), keyed by quinn's stable id.
#[derive(Debug, Default)]
pub struct Links {
    conns: Mutex<HashMap<usize, (String, quinn::Connection)>>,
}

/// Removes its connection from [`Links`] when dropped.
pub(crate) struct LinkGuard {
    links: Arc<Links>,
    id: usize,
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let mut conns = self
            .links
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        conns.remove(&self.id);
    }
}

impl Links {
    /// One sample per live connection.
    pub fn samples(&self) -> Vec<LinkSample> {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns
            .values()
            .map(|(peer, conn)| {
                let stats = conn.stats();
                LinkSample {
                    peer: peer.clone(),
                    rtt: conn.rtt(),
                    sent_packets: stats.udp_tx.datagrams,
                    lost_packets: stats.path.lost_packets,
                }
            })
            .collect()
    }
}

/// Tracks `conn` to `peer` in `links` until the guard is dropped.
pub(crate) fn track(links: &Arc<Links>, peer: &str, conn: &quinn::Connection) -> LinkGuard {
    let id = conn.stable_id();
    let mut conns = links.conns.lock().unwrap_or_else(PoisonError::into_inner);
    conns.insert(id, (peer.to_owned(), conn.clone()));
    LinkGuard {
        links: links.clone(),
        id,
    }
}
