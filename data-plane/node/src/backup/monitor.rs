//! The standby's view of the live stream: this node's puller of it (which
//! also serves the node's players) and one hub sink whose packets say the
//! primary is alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_media::hub::Sink;

use crate::pull::PullStatus;
use crate::state::NodeState;

/// How long after this node's puller of the stream ended the standby starts
/// another one.
const PULL_RETRY: Duration = Duration::from_millis(200);

/// The standby's view of the live stream: this node's puller of it, and one
/// hub sink whose packets say the primary is alive.
#[derive(Default)]
pub(super) struct Monitor {
    status: Option<tokio::sync::watch::Receiver<PullStatus>>,
    sink: Option<Sink>,
    /// No new puller before this (the last one ended).
    pub(super) retry_at: Option<Instant>,
}

impl Monitor {
    /// Starts (or joins) the puller, again after it ended, and subscribes
    /// once it is ready.
    pub(super) fn ensure(&mut self, state: &Arc<NodeState>, stream: &str, now: Instant) {
        if self.status.is_none() {
            if self.retry_at.is_some_and(|t| now < t) {
                return;
            }
            self.retry_at = None;
            self.status = Some(state.pullers.ensure(stream));
        }
        if self.sink.is_some() {
            return;
        }
        let ready = self
            .status
            .as_ref()
            .is_some_and(|st| matches!(*st.borrow(), PullStatus::Ready(_)));
        if ready && let Some(h) = state.hub.get(stream) {
            self.sink = Some(h.subscribe());
        }
    }

    /// Reads the packets of the live stream already queued; whether there
    /// were any.
    pub(super) fn drain(&mut self) -> bool {
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        let mut got = false;
        while sink.try_recv().is_some() {
            got = true;
        }
        got
    }

    /// Waits for the next packet of the live stream (true) or a change of
    /// the puller's status (false: the caller subscribes or starts another).
    pub(super) async fn next(&mut self) -> bool {
        let Monitor {
            sink: sink_slot,
            status: status_slot,
            retry_at,
        } = self;
        let sink = async {
            match sink_slot.as_mut() {
                Some(sink) => {
                    let got = sink.recv().await.is_some();
                    while got && sink.try_recv().is_some() {}
                    Some(got)
                }
                None => std::future::pending().await,
            }
        };
        let status = async {
            match status_slot.as_mut() {
                Some(st) => st.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = sink => {
                if got == Some(true) {
                    return true;
                }
                *sink_slot = None;
                false
            }
            alive = status => {
                if !alive {
                    // The puller ended: another one shortly.
                    *status_slot = None;
                    *retry_at = Some(Instant::now() + PULL_RETRY);
                }
                false
            }
        }
    }
}
