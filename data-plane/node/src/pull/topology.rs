//! Following a stream's topology for this node's region (`WatchStream`).

use std::time::Duration;

use strata_proto::v1;
use tokio::sync::watch;
use tracing::{Instrument, debug};

use super::{PullContext, retry_pacing};

/// The latest topology snapshot; `None` until the first.
pub(super) type Topology = watch::Receiver<Option<v1::StreamTopology>>;

/// Follows the stream's topology for this node's region. Reconnects the
/// watch when it breaks; ends when every receiver is gone.
pub(super) fn watch(ctx: &PullContext, stream: &str) -> Topology {
    let (tx, rx) = watch::channel(None);
    let control = ctx.control.clone();
    let req = v1::WatchStreamRequest {
        stream: stream.to_owned(),
        region: ctx.region.clone(),
    };
    tokio::spawn(
        async move {
            let mut backoff = retry_pacing();
            loop {
                let opened = tokio::select! {
                    r = control.watch_stream(req.clone()) => r,
                    _ = tx.closed() => return,
                };
                match opened {
                    Ok(mut events) => loop {
                        let msg = tokio::select! {
                            m = events.message() => m,
                            _ = tx.closed() => return,
                        };
                        match msg {
                            Ok(Some(t)) => {
                                backoff = retry_pacing();
                                tx.send_replace(Some(t));
                            }
                            Ok(None) | Err(_) => break,
                        }
                    },
                    Err(e) => debug!(error = %e, "topology watch failed"),
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        .in_current_span(),
    );
    rx
}

/// Waits for the next snapshot, `at_most` long.
pub(super) async fn wait_for_change(topology: &Topology, at_most: Duration) {
    let mut t = topology.clone();
    t.mark_unchanged();
    let _ = tokio::time::timeout(at_most, t.changed()).await;
}
