//! The layers a puller asks its upstream for: the union of what the node's
//! hub sinks want (egress loops for local players, downstream relay
//! subscriptions), debounced ([`InterestDebounce`]: additions within 250 ms,
//! removals after 2 s), so interest propagates edge → regional origin → main
//! origin at a bounded rate per subscription.

use std::time::Instant as StdInstant;

use strata_media::hub::{DebounceConfig, InterestDebounce, LayerSet, StreamHandle};
use tokio::sync::watch;
use tokio::time::Instant;

/// One subscription's outgoing interest.
pub(super) struct UpstreamInterest {
    rx: watch::Receiver<LayerSet>,
    open: bool,
    debounce: InterestDebounce,
}

fn now() -> StdInstant {
    Instant::now().into_std()
}

impl UpstreamInterest {
    /// Follows `stream`'s sinks; nothing sent yet (upstream sends every layer).
    pub(super) fn new(stream: &StreamHandle) -> Self {
        let mut rx = stream.watch_interest();
        let mut debounce = InterestDebounce::new(DebounceConfig::default());
        debounce.want(now(), *rx.borrow_and_update());
        UpstreamInterest {
            rx,
            open: true,
            debounce,
        }
    }

    /// The next set to send upstream. Cancel-safe.
    pub(super) async fn next(&mut self) -> LayerSet {
        loop {
            if let Some(set) = self.debounce.poll(now()) {
                return set;
            }
            let deadline = self.debounce.next_deadline().map(Instant::from_std);
            tokio::select! {
                changed = self.rx.changed(), if self.open => match changed {
                    Ok(()) => {
                        let wanted = *self.rx.borrow_and_update();
                        self.debounce.want(now(), wanted);
                    }
                    Err(_) => self.open = false,
                },
                () = sleep_until(deadline) => {}
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
