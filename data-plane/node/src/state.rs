//! The parts of a running node, assembled once by `node::run`.
//!
//! Each part is a type of its own, and a module takes the parts it uses:
//!
//! | part | type | used by |
//! |---|---|---|
//! | sessions, publish reservations | [`SessionTable`] | HTTP, ingest, drain, load reports, metrics |
//! | pullers | [`Pullers`] | players of streams carried elsewhere, backup |
//! | origin epochs | [`OriginEpochs`] | ingest, pullers, relay authorizer, drain |
//! | registry view | [`PeerView`] | relay authorizer, metrics, link reports |
//! | drain flags | [`DrainFlags`] | HTTP, ingest, drain |
//! | counters | [`NodeCounters`] | HTTP, ingest, takeover, metrics |
//! | client limiter | [`ClientLimiter`] | HTTP, RTMP, SRT |
//! | claims with takeover | [`Takeover`] | WHIP, RTMP, SRT |
//!
//! [`NodeState`] bundles them for the request handlers and the ingest
//! sessions (HTTP, WHIP/WHEP, RTMP, SRT, backup), which use most of them.

use std::sync::Arc;

use strata_media::hub::Hub;
use strata_relay::RelayStats;
use strata_rtc::RtcEngine;

use crate::auth::Auth;
use crate::config::NodeConfig;
use crate::control::{ControlClient, Registration};
use crate::counters::NodeCounters;
use crate::drain::DrainFlags;
use crate::limits::ClientLimiter;
use crate::origins::OriginEpochs;
use crate::peers::PeerView;
use crate::pull::Pullers;
use crate::session_table::SessionTable;
use crate::takeover::Takeover;

/// The node's parts, for the request handlers and ingest sessions.
pub struct NodeState {
    /// Configuration.
    pub cfg: NodeConfig,
    /// Streams carried by this node.
    pub hub: Hub,
    /// WebRTC edge.
    pub rtc: RtcEngine,
    /// Relay counters (both directions).
    pub relay_stats: Arc<RelayStats>,
    /// Control-plane client.
    pub control: ControlClient,
    /// The node's lease.
    pub registration: Registration,
    /// Node counters.
    pub counters: Arc<NodeCounters>,
    /// Whether the node takes new sessions.
    pub drain: Arc<DrainFlags>,
    /// Who may publish and play.
    pub auth: Auth,
    /// WHIP/WHEP POSTs and ingest connections per client address.
    pub limiter: ClientLimiter,
    /// Sessions and publish reservations.
    pub sessions: Arc<SessionTable>,
    /// Claims a stream, taking it over from a dead holder (see `takeover.rs`).
    pub takeover: Takeover,
    /// Upstream pullers.
    pub pullers: Pullers,
    /// Origin records this node holds.
    pub origins: Arc<OriginEpochs>,
    /// Registered nodes and their regions.
    pub peers: Arc<PeerView>,
}

impl NodeState {
    /// The node id.
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// The node's region.
    pub fn region(&self) -> &str {
        &self.cfg.region
    }

    /// Whether the node turns new sessions away (see [`DrainFlags`]).
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }
}
