//! Relay tuning.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::error::RelayError;
use crate::groups::OrderLimits;

/// Tuning shared by [`RelayServer`](crate::RelayServer) and
/// [`RelayClient`](crate::RelayClient). The defaults notice a dead peer in
/// well under a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// A connection silent for this long is dead.
    pub idle_timeout: Duration,
    /// Deadline for a handshake, and for the first request/response on a new stream.
    pub handshake_timeout: Duration,
    /// Subscriptions one connection may hold at once (server side).
    pub max_subscriptions_per_connection: u32,
    /// Group streams a client accepts at once per connection.
    pub max_incoming_groups: u32,
    /// A group not delivered this long after it was superseded is reset, and
    /// a write blocked this long abandons its group.
    pub group_latency_bound: Duration,
    /// Superseded groups still in flight before the oldest is reset.
    pub max_backlog_groups: usize,
    /// Group length for streams without video.
    pub audio_group_duration: Duration,
    /// How long a stream may lack a source before downstreams are told it ended.
    pub source_grace: Duration,
    /// Per-subscription queue of received packets (client side).
    pub subscription_queue: usize,
    /// Receiver: frames of a newer group wait at most this long (from its
    /// first frame) for the group before it to end; then the older group's
    /// rest is skipped. Covers a group's tail arriving after the next group's
    /// start on another QUIC stream.
    pub group_order_window: Duration,
    /// Receiver: frames of newer groups held back at most, per subscription;
    /// beyond it the older group's rest is skipped.
    pub group_order_max_frames: usize,
    /// Receiver: RTP bytes of newer groups held back at most, per subscription.
    pub group_order_max_bytes: usize,
    /// Audio of streams with video travels as QUIC datagrams (see the wire
    /// format). Downstream: off refuses datagrams, so upstreams keep audio on
    /// the group streams; upstream: off never sends them.
    pub audio_datagrams: bool,
    /// Downstream: bytes of received datagrams buffered per connection
    /// before the oldest are dropped.
    pub datagram_buffer: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            keep_alive: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(600),
            handshake_timeout: Duration::from_secs(2),
            max_subscriptions_per_connection: 256,
            max_incoming_groups: 512,
            group_latency_bound: Duration::from_secs(1),
            max_backlog_groups: 1,
            audio_group_duration: Duration::from_secs(1),
            source_grace: Duration::from_secs(2),
            subscription_queue: 1024,
            group_order_window: Duration::from_millis(150),
            group_order_max_frames: 1024,
            group_order_max_bytes: 1 << 20,
            audio_datagrams: true,
            datagram_buffer: 256 * 1024,
        }
    }
}

impl RelayConfig {
    /// The receiver's group-ordering bounds.
    pub(crate) fn order_limits(&self) -> OrderLimits {
        OrderLimits {
            window: self.group_order_window,
            max_frames: self.group_order_max_frames,
            max_bytes: self.group_order_max_bytes,
        }
    }

    /// QUIC transport parameters for one side.
    pub(crate) fn transport(&self, server: bool) -> Result<Arc<TransportConfig>, RelayError> {
        let mut t = TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_idle_timeout(Some(
            IdleTimeout::try_from(self.idle_timeout)
                .map_err(|e| RelayError::Config(format!("idle_timeout: {e}")))?,
        ));
        if server {
            // Downstreams open one control stream per subscription, nothing else.
            // A little headroom so that one subscription too many is refused with a
            // reason instead of waiting for stream credit.
            t.max_concurrent_bidi_streams(VarInt::from_u32(
                self.max_subscriptions_per_connection.saturating_add(4),
            ));
            t.max_concurrent_uni_streams(VarInt::from_u32(0));
            // Downstreams never send datagrams: advertise a limit of 0 (quinn
            // only lets an endpoint that accepts datagrams send them).
            t.datagram_receive_buffer_size(Some(0));
        } else {
            t.datagram_receive_buffer_size(self.audio_datagrams.then_some(self.datagram_buffer));
            t.max_concurrent_bidi_streams(VarInt::from_u32(0));
            t.max_concurrent_uni_streams(VarInt::from_u32(self.max_incoming_groups));
        }
        Ok(Arc::new(t))
    }
}
