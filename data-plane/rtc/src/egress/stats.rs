//! Counters of the egress, shared by every worker and read by the node's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What every player session of the egress adds up to.
#[derive(Debug, Default)]
pub struct EgressCounters {
    /// RTP packets sent to players (first transmissions).
    pub packets_out: Counter,
    /// Bytes sent to players: SRTP, SRTCP and retransmissions.
    pub bytes_out: Counter,
    /// Packets players asked for again (generic NACK entries).
    pub nacked_packets: Counter,
    /// Packets retransmitted in answer to NACKs.
    pub retransmitted_packets: Counter,
    /// Bytes of those retransmissions (SRTP).
    pub retransmitted_bytes: Counter,
    /// NACKed packets not resent: the player's retransmission budget was spent.
    pub nack_over_budget: Counter,
    /// NACKed packets not resent: already resent to that player within about one RTT.
    pub nack_duplicates: Counter,
    /// NACKed packets not resent: no longer (or never) in the stream's history.
    pub nack_unknown: Counter,
    /// Keyframe requests (PLI, FIR) from players.
    pub keyframe_requests: Counter,
    /// STUN requests refused: wrong username or MESSAGE-INTEGRITY.
    pub refused_stun: Counter,
    /// Other datagrams refused: from an address no check verified, or failing SRTCP.
    pub refused_datagrams: Counter,
    /// Sessions that never completed DTLS within the connect timeout.
    pub connect_timeouts: Counter,
    /// DTLS handshakes that failed (wrong fingerprint, bad records, retransmissions spent).
    pub dtls_failures: Counter,
    /// Remote candidates (offer and PATCH) ignored: over the cap or outside allowed ranges.
    pub refused_candidates: Counter,
}
