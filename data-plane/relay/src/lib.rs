//! Strata relay: media between nodes over QUIC.
//!
//! - [`framing`]: the wire format (documented there), with a decoder that
//!   never panics on hostile bytes.
//! - [`groups`]: sans-IO group planning (sender) and in-order group delivery
//!   (receiver).
//! - [`RelayServer`] serves streams of a [`strata_media::hub::Hub`] to
//!   downstream nodes; [`RelayClient`] subscribes to upstream nodes, one
//!   pooled connection per upstream.
//! - [`certs`] makes and loads the cluster CA and node certificates;
//!   [`RelayTls`] chooses mutual TLS (the default) or an explicit insecure mode;
//!   [`LiveTls`] lets a node renew its certificate and refuse revoked peers
//!   while it runs.
//! - [`RelayStats`]: counters and per-hop latency for the node's metrics.

#![forbid(unsafe_code)]

mod auth;
pub mod certs;
mod client;
mod config;
mod error;
pub mod framing;
pub mod groups;
mod io;
mod links;
mod live;
mod server;
mod stats;
mod tls;

pub use auth::{AllowAll, Authorizer, Refusal, SubscribeRequest};
pub use client::{RelayClient, Subscription, SubscriptionEvent};
pub use config::RelayConfig;
pub use error::RelayError;
pub use framing::SubscribeErrorCode;
pub use links::{LinkSample, Links};
pub use live::{LiveTls, Revocations};
pub use server::RelayServer;
pub use stats::{HopSample, LATENCY_BUCKETS_US, LatencyHistogram, PeerStats, RelayStats};
pub use tls::{ALPN, RelayTls, quic_client_config, quic_server_config};

/// The quinn the relay is built on (its types appear in [`RelayError`] and
/// [`quic_server_config`]).
pub use quinn;
