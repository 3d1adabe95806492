//! Strata data-plane node: WHIP ingest, QUIC relay between nodes, WHEP
//! playback, following the control plane's origin answers.
//!
//! The node never talks to etcd: everything it knows about the cluster comes
//! from the control plane's gRPC API.

pub mod auth;
pub mod backup;
pub mod config;
pub mod control;
pub mod control_tls;
pub mod counters;
pub mod drain;
pub mod encoder;
pub mod error;
pub mod feed;
pub mod http;
pub mod limits;
pub mod links;
pub mod metrics;
pub mod node;
pub mod origins;
pub mod pages;
pub mod peers;
pub mod probe;
pub mod publish;
pub mod pull;
pub mod relay_auth;
pub mod rtmp;
pub mod session_table;
pub mod sessions;
pub mod srt;
pub mod state;
pub mod takeover;

pub use config::NodeConfig;
pub use node::{Listeners, run, run_with_reload};
