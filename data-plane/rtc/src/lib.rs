//! Strata WebRTC edge: WHIP publishers in, WHEP players out, independent of HTTP and of the
//! rest of the node.
//!
//! * [`RtcEngine`] owns the node's one UDP port (every peer connection shares it: ICE is
//!   demultiplexed by STUN username, then by remote address) and accepts offers.
//! * [`RtcEngine::accept_publisher`] turns a WHIP offer into a [`PublisherSession`]: the
//!   negotiated [`Catalog`](strata_media::Catalog) and a stream of
//!   [`MediaPacket`](strata_media::MediaPacket)s with keyframes detected.
//! * [`RtcEngine::accept_player`] turns a WHEP offer into an [`EgressPlayer`], served by the
//!   engine's [`Egress`] loops: a few loops drive every player, each packet of a stream
//!   reaching a loop once and rewritten for each player ([`RtpRewriter`]).
//! * [`client`] has the other ends (a WHIP publisher and a WHEP player) for tests and tools;
//!   [`fixture`] reads the recorded RTP clips under `tests/fixtures/`.
//!
//! Built on the `webrtc` 0.21 crate (async layer over the sans-IO `rtc` crate); mDNS is off
//! everywhere and only configured addresses are announced.

pub mod check;
pub mod client;
pub mod codec;
mod config;
mod egress;
mod engine;
mod error;
pub mod fixture;
pub(crate) mod ice;
mod interceptor;
mod mux;
mod publisher;
pub mod rewriter;
mod sdp;
mod session;
mod simulcast;
#[cfg(test)]
mod simulcast_offers;

pub mod udp_runtime;

pub use codec::Codec;
pub use config::RtcConfig;
pub use egress::{Counter, Egress, EgressCounters, EgressPlayer, Gauge, LayerPref, PlayerInfo};
pub use engine::RtcEngine;
pub use error::RtcError;
pub use publisher::{PublisherHandle, PublisherSession, PublisherStats};
pub use rewriter::{Rewritten, RtpRewriter};
pub use session::SessionState;
