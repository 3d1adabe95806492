//! Draining: the node turns new sessions away (a 307 to another node, or a
//! 503) and hands its regional origins over, either to leave (SIGTERM) or
//! while an operator's Drain lasts (until Undrain).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_media::hub::Hub;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::control::ControlClient;
use crate::origins::OriginEpochs;
use crate::session_table::SessionTable;

/// Whether the node takes new sessions.
#[derive(Debug, Default)]
pub struct DrainFlags {
    /// True once the node shuts down (SIGTERM): it drains, then leaves.
    shutting_down: AtomicBool,
    /// True while the control plane marks the node draining (an operator's
    /// Drain, until Undrain): new sessions are turned away, the node stays.
    drained: AtomicBool,
}

impl DrainFlags {
    /// Whether the node turns new sessions away: it shuts down, or the
    /// control plane marks it draining.
    pub fn is_draining(&self) -> bool {
        self.is_shutting_down() || self.drained.load(Ordering::Relaxed)
    }

    /// Whether the node drains to leave (SIGTERM).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Sets the control plane's mark; returns whether it changed.
    fn set_drained(&self, marked: bool) -> bool {
        self.drained.swap(marked, Ordering::Relaxed) != marked
    }
}

/// What draining acts on.
pub struct Drainer {
    /// This node's id.
    pub node: String,
    /// The control plane (Drain, Release).
    pub control: ControlClient,
    /// The flags the request handlers read.
    pub flags: Arc<DrainFlags>,
    /// The origin records this node holds.
    pub origins: Arc<OriginEpochs>,
    /// The node's sessions (publishers stay origins; local players).
    pub sessions: Arc<SessionTable>,
    /// The node's streams (downstream nodes' relay sinks).
    pub hub: Hub,
    /// How long a SIGTERM drain waits for downstream nodes to move.
    pub timeout: Duration,
}

impl Drainer {
    /// Takes no new sessions, gives up regional origins so that the nodes
    /// pulling from this one move to a new regional origin while this node
    /// still serves them, then waits (bounded) until they have moved.
    pub async fn drain_to_leave(&self) {
        let started = Instant::now();
        self.flags.shutting_down.store(true, Ordering::Relaxed);
        info!(node = %self.node, "draining");
        if let Err(e) = self.control.drain(&self.node).await {
            warn!(error = %e, "could not mark the node draining");
        }
        // (After an operator's Drain there is usually nothing left to hand
        // over: a drained node does not claim.)
        let regional = self.hand_over_regional_origins().await;
        // Downstream nodes hold hub sinks of their own; wait for them to leave.
        let deadline = started + self.timeout;
        while Instant::now() < deadline && self.downstream(&regional) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(node = %self.node, took = ?started.elapsed(), handed_over = regional.len(), "drained");
    }

    /// Hub sinks of `streams` that are not this node's own players.
    fn downstream(&self, streams: &[String]) -> usize {
        streams
            .iter()
            .filter_map(|s| self.hub.get(s))
            .map(|h| {
                h.sink_count()
                    .saturating_sub(self.sessions.players_of(h.name()))
            })
            .sum()
    }

    /// Releases every regional origin this node holds (not the streams it
    /// ingests), so that a node of its region that pulls from it claims the
    /// region instead, and this node's own pullers move to the new holder (a
    /// draining node never claims). Returns the released streams.
    async fn hand_over_regional_origins(&self) -> Vec<String> {
        let regional: Vec<String> = self
            .origins
            .streams()
            .into_iter()
            .filter(|s| !self.sessions.has_publisher(s))
            .collect();
        for stream in &regional {
            if let Err(e) = self.control.release(stream, &self.node).await {
                warn!(%stream, error = %e, "could not hand over the regional origin");
            }
        }
        regional
    }

    /// Follows the control plane's draining mark, as keep-alive answers
    /// carry it: an operator's Drain makes the node drain as on SIGTERM
    /// without leaving (new sessions get a 307 or 503, regional origins are
    /// handed over, publishers and players stay); Undrain puts it back. A
    /// node that is shutting down stays drained and marks itself again if
    /// undrained.
    pub async fn follow_orders(
        &self,
        mut orders: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                r = orders.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            let marked = *orders.borrow_and_update();
            self.follow(marked).await;
        }
    }

    async fn follow(&self, marked: bool) {
        if self.flags.is_shutting_down() {
            // The SIGTERM drain does its own hand-over; it must not be undone.
            if !marked && let Err(e) = self.control.drain(&self.node).await {
                warn!(error = %e, "could not mark the node draining again");
            }
            return;
        }
        if !self.flags.set_drained(marked) {
            return;
        }
        if marked {
            info!(node = %self.node, "drained by the control plane: no new sessions; handing regional origins over");
            let released = self.hand_over_regional_origins().await;
            info!(node = %self.node, handed_over = released.len(), "drained; still serving");
        } else {
            info!(node = %self.node, "undrained: taking sessions again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_drain_on_either_mark() {
        let f = DrainFlags::default();
        assert!(!f.is_draining());
        assert!(f.set_drained(true));
        assert!(!f.set_drained(true), "no change the second time");
        assert!(f.is_draining() && !f.is_shutting_down());
        assert!(f.set_drained(false));
        assert!(!f.is_draining());
        f.shutting_down.store(true, Ordering::Relaxed);
        assert!(f.is_draining() && f.is_shutting_down());
    }
}
