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

/// A value that goes up and down (players on a layer).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(&self) {
        // Never below zero, whatever the order of updates.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
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
    /// Players of simulcast streams on each layer now, indexed by `Layer::index`.
    pub players_on_layer: [Gauge; 3],
    /// Simulcast layer switches made (at a keyframe of the new layer).
    pub layer_switches: Counter,
    /// Transport-cc feedback packets read from players.
    pub transport_feedback: Counter,
    /// Transport-cc feedback packets refused as malformed (nothing of them used).
    pub transport_feedback_refused: Counter,
    /// Padding probes started before a move up.
    pub probes: Counter,
    /// Probes that passed (the move up followed).
    pub probes_passed: Counter,
    /// Probes that failed: the path did not deliver the rate, or the player showed trouble
    /// while one ran.
    pub probes_failed: Counter,
    /// Probes not started: the player's probes of the last minute were spent.
    pub probes_refused: Counter,
    /// Bytes of padding sent by probes (SRTP).
    pub probe_padding_bytes: Counter,
}

/// What a player's session shows about its simulcast layer, updated by its loop.
#[derive(Debug, Default)]
pub struct PlayerInfo {
    /// 0 without simulcast, else `Layer::index` + 1.
    layer: std::sync::atomic::AtomicU8,
    /// The player's bandwidth estimate in bit/s, 0 when there is none.
    estimate: AtomicU64,
    /// Whether the estimate is the node's own (transport-cc).
    transport_cc: std::sync::atomic::AtomicBool,
}

impl PlayerInfo {
    pub(crate) fn set(
        &self,
        layer: Option<strata_media::Layer>,
        estimate: Option<u64>,
        transport_cc: bool,
    ) {
        let layer = layer.map_or(0, |l| l.index() as u8 + 1);
        self.layer.store(layer, Ordering::Relaxed);
        self.estimate
            .store(estimate.unwrap_or(0), Ordering::Relaxed);
        self.transport_cc.store(transport_cc, Ordering::Relaxed);
    }

    /// Where the estimate comes from: `transport-cc` (the node's own, from the player's
    /// feedback) or `remb` (the player's); `None` without an estimate.
    pub fn estimate_from(&self) -> Option<&'static str> {
        self.estimate_bps()?;
        Some(if self.transport_cc.load(Ordering::Relaxed) {
            "transport-cc"
        } else {
            "remb"
        })
    }

    /// The layer the player receives now (`None` for a stream without simulcast).
    pub fn layer(&self) -> Option<strata_media::Layer> {
        let i = usize::from(self.layer.load(Ordering::Relaxed));
        i.checked_sub(1)
            .and_then(|i| strata_media::Layer::ALL.get(i).copied())
    }

    /// The player's bandwidth estimate in bit/s, if there is one (see
    /// [`estimate_from`](Self::estimate_from)).
    pub fn estimate_bps(&self) -> Option<u64> {
        Some(self.estimate.load(Ordering::Relaxed)).filter(|&e| e > 0)
    }
}
