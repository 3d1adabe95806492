//! Counters of the node's own (non-relay) work, shown by `/metrics`.

use std::sync::atomic::AtomicU64;

/// Counters of the node's own (non-relay) work.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// WHIP sessions accepted.
    pub publishers_total: AtomicU64,
    /// WHEP sessions accepted.
    pub players_total: AtomicU64,
    /// WHIP/WHEP requests refused, by any reason.
    pub refused_total: AtomicU64,
    /// Requests redirected to another node.
    pub redirects_total: AtomicU64,
    /// RTP bytes received from publishers.
    pub publisher_bytes_in: AtomicU64,
    /// Probes of a main origin holder's relay port (refused, listening, no
    /// answer), see `takeover.rs`.
    pub takeover_probes: [AtomicU64; 3],
    /// Switch-overs of a stream to this node's backup publisher (gone,
    /// silent), see `backup/`.
    pub backup_switches: [AtomicU64; 2],
    /// Backup publishers accepted (standby registered).
    pub backup_publishers_total: AtomicU64,
    /// RTMP connections accepted (within the connection limits).
    pub rtmp_connections_total: AtomicU64,
    /// RTMP publishers that went live.
    pub rtmp_publishers_total: AtomicU64,
    /// RTMP connections or publishes refused (limits, tokens, names,
    /// conflicts, codecs, draining).
    pub rtmp_refused_total: AtomicU64,
    /// SRT publishers that went live.
    pub srt_publishers_total: AtomicU64,
    /// SRT connections refused (limits, stream ids, tokens, conflicts,
    /// codecs, draining).
    pub srt_refused_total: AtomicU64,
}
