//! The per-stream hub: one source, many sinks.
//!
//! A node carries each stream once. Its packets come from one [`Source`] (the
//! WHIP ingest, or the upstream relay subscription) and go to any number of
//! [`Sink`]s (local WebRTC players, downstream relay subscriptions).
//!
//! The rules live in sans-IO cores, tested with simulated time:
//! - [`SinkGate`]: a sink whose queue is full drops everything until the next
//!   keyframe; the source and the other sinks never wait for it.
//! - [`GopCache`]: a new sink first gets the current group from its keyframe.
//! - [`KeyframeCoalescer`]: keyframe requests from sinks reach the source at
//!   most once per track per interval.
//!
//! The async shell only adds locking, bounded channels (`try_send`, so
//! [`Source::push`] never blocks) and a timer for pending keyframe requests.
//! All of the locking is in one module, `shared` (the hub's map of streams and
//! each stream's state, with the lock order: the map first, then a stream);
//! the rest are leaves that call into it: `registry` ([`Hub`]), `stream`
//! ([`StreamHandle`]) and `endpoints` ([`Source`], [`Sink`]).

mod coalesce;
mod config;
mod endpoints;
mod gate;
mod gop;
mod interest;
mod registry;
mod shared;
mod slot;
mod stream;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_layers;

pub use coalesce::KeyframeCoalescer;
pub use config::{HubConfig, HubError};
pub use endpoints::{Sink, SinkLayers, Source};
pub use gate::{GateState, ResumeRule, SinkGate, Verdict};
pub use gop::GopCache;
pub use interest::{DebounceConfig, InterestDebounce, LayerFilter, LayerSet, LayerVerdict};
pub use registry::Hub;
pub use shared::StreamState;
pub use stream::StreamHandle;
