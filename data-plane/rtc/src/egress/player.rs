//! A player's handle on its egress session (the WHEP resource), and the checks on the remote
//! candidates it names (in the offer or a PATCH): ICE-lite sends nothing to them, so they are
//! only counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::stats::{EgressCounters, PlayerInfo};
use super::worker::Command;
use crate::sdp;
use crate::{RtcConfig, RtcError, SessionState};

/// Whether one more remote candidate (the text after `candidate:`) counts as usable for a
/// session that has `taken` already: under the cap, on an allowed address. ICE-lite never
/// sends a check to any candidate; refused ones are counted so that abuse shows in `/metrics`.
pub(super) fn candidate_usable(candidate: &str, taken: usize, config: &RtcConfig) -> bool {
    let ip = candidate
        .split_whitespace()
        .nth(4)
        .and_then(|a| a.parse::<IpAddr>().ok());
    taken < config.max_remote_candidates && ip.is_some_and(|ip| config.candidate_allowed(ip))
}

/// An offer's candidates: how many count as usable, how many are refused.
pub(super) fn count_offer_candidates(sdp: &str, config: &RtcConfig) -> (usize, u64) {
    let mut usable = 0usize;
    let mut refused = 0u64;
    for line in sdp.lines() {
        let Some(candidate) = line.trim_end().strip_prefix("a=candidate:") else {
            continue;
        };
        if candidate_usable(candidate, usable, config) {
            usable += 1;
        } else {
            refused += 1;
        }
    }
    (usable, refused)
}

/// A player session of the egress. Dropping it closes the session.
pub struct EgressPlayer {
    pub(super) id: u64,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) state: watch::Receiver<SessionState>,
    pub(super) counters: Arc<EgressCounters>,
    pub(super) candidates: Arc<AtomicUsize>,
    pub(super) remote_ufrag: String,
    pub(super) config: RtcConfig,
    pub(super) info: Arc<PlayerInfo>,
}

impl EgressPlayer {
    /// The session's id within the node.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    /// Its simulcast layer and bandwidth estimate, as of the loop's last tick.
    pub fn info(&self) -> &PlayerInfo {
        &self.info
    }

    /// A receiver of state changes.
    pub fn state_changes(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// Resolves once the session is closed (by either side, a timeout, or the stream's end).
    pub async fn closed(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s == SessionState::Closed).await;
    }

    /// Closes the session (WHEP DELETE).
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close(self.id)).await;
        self.closed().await;
    }

    /// Takes trickled candidates (WHEP PATCH). The node is ICE-lite: it sends no checks, so
    /// candidates only need to be well-formed; beyond the cap, or outside the allowed address
    /// ranges, they are counted as refused.
    pub fn add_remote_candidates(&self, sdpfrag: &str) -> Result<(), RtcError> {
        if self.state() == SessionState::Closed {
            return Err(RtcError::Closed);
        }
        let frag = sdp::parse_sdpfrag(
            sdpfrag,
            self.config.max_sdp_bytes,
            self.config.max_sdp_lines,
        )?;
        if frag
            .ice_ufrag
            .as_deref()
            .is_some_and(|u| u != self.remote_ufrag)
        {
            return Err(RtcError::IceRestartUnsupported);
        }
        for candidate in &frag.candidates {
            let text = candidate
                .candidate
                .strip_prefix("candidate:")
                .unwrap_or(&candidate.candidate);
            let taken = self.candidates.load(Ordering::Relaxed);
            if candidate_usable(text, taken, &self.config) {
                self.candidates.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.refused_candidates.inc();
            }
        }
        Ok(())
    }

    /// Waits until the session leaves `Connecting`, at most `within`.
    pub async fn connected(&self, within: Duration) -> bool {
        let mut state = self.state.clone();
        matches!(
            tokio::time::timeout(within, state.wait_for(|s| *s != SessionState::Connecting)).await,
            Ok(Ok(s)) if *s == SessionState::Connected
        )
    }
}

impl Drop for EgressPlayer {
    fn drop(&mut self) {
        let _ = self.commands.try_send(Command::Close(self.id));
    }
}
