//! Hub configuration and errors.

use std::time::Duration;

/// Tuning of the hub; the defaults suit a few Mbit/s streams with 1–4 s GOPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Packets a sink may have queued before it is considered slow and skips
    /// to the next keyframe. Should be at least `gop_max_packets`, or a new
    /// sink cannot receive the whole cached group.
    pub sink_queue: usize,
    /// Upper bound of the GOP cache in RTP bytes.
    pub gop_max_bytes: usize,
    /// Upper bound of the GOP cache in packets.
    pub gop_max_packets: usize,
    /// At most one keyframe request per track is forwarded to the source per interval.
    pub keyframe_request_interval: Duration,
    /// Capacity of the channel carrying keyframe requests to the source;
    /// requests beyond it are dropped (one pending request is enough).
    pub keyframe_request_queue: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            sink_queue: 2048,
            gop_max_bytes: 4 << 20,
            gop_max_packets: 2048,
            keyframe_request_interval: Duration::from_millis(300),
            keyframe_request_queue: 64,
        }
    }
}

/// Why a hub operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The stream already has a source; detach (drop) it before attaching another.
    #[error("stream {0:?} already has a source")]
    SourceAttached(String),
}
