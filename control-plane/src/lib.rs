//! Strata control plane: the registry of live nodes and origin election,
//! on etcd (or an in-memory dev store), served over gRPC.
//!
//! Only the control plane talks to etcd; nodes learn everything from its
//! gRPC API. It is stateless apart from its read cache, so any number of
//! replicas can serve one etcd cluster side by side.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod election;
pub mod error;
pub mod graph;
pub mod http;
pub mod incoming;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod server;
pub mod service;
pub mod signals;

pub use config::{Config, StoreKind};
pub use server::{run, run_with_listeners, run_with_store};
