//! One subscription's life: its frames and catalog changes go into the hub,
//! keyframe requests and layer interest go upstream, until the upstream ends
//! or is lost, the topology moves, or no sink is left for `linger`.

use std::time::Duration;

use strata_media::hub::Source;
use strata_proto::v1;
use strata_relay::{Subscription, SubscriptionEvent};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::interest::UpstreamInterest;
use super::topology::Topology;
use super::{PullContext, moved};

/// Why one subscription ended.
pub(super) enum Outcome {
    /// Re-resolve now (topology moved, upstream ended).
    Resolve,
    /// The upstream could not be reached: report it when re-resolving.
    Unreachable(v1::Upstream),
    /// No more sinks for `linger`, or the node stops: end the puller.
    Stop,
}

/// Where a subscription comes from, as resolved.
pub(super) struct Route<'a> {
    pub upstream: &'a v1::Upstream,
    pub role: v1::Role,
    /// The epoch of the resolve answer (this node's own record, as a
    /// regional origin).
    pub epoch: i64,
}

pub(super) async fn forward(
    ctx: &PullContext,
    stream: &str,
    mut sub: Subscription,
    source: &mut Source,
    route: Route<'_>,
    topology: &Topology,
) -> Outcome {
    let upstream = route.upstream;
    let mut topology = topology.clone();
    topology.mark_unchanged();
    let Some(handle) = ctx.hub.get(stream) else {
        return Outcome::Resolve;
    };
    let mut sinks = handle.watch_sink_count();
    let mut interest = UpstreamInterest::new(&handle);
    let linger = ctx.linger;
    let mut idle_since: Option<Instant> = (*sinks.borrow() == 0).then(Instant::now);
    loop {
        let linger_left = idle_since.map(|t| linger.saturating_sub(t.elapsed()));
        tokio::select! {
            ev = sub.recv() => match ev {
                Some(SubscriptionEvent::Packet(p)) => source.push(p),
                Some(SubscriptionEvent::CatalogChanged(c)) => source.set_catalog(c),
                Some(SubscriptionEvent::Ended { reason }) => {
                    info!(%reason, "upstream ended the stream");
                    return Outcome::Resolve;
                }
                Some(SubscriptionEvent::Lost(e)) => {
                    warn!(error = %e, upstream = %upstream.node_id, "upstream lost");
                    return Outcome::Unreachable(upstream.clone());
                }
                None => return Outcome::Unreachable(upstream.clone()),
            },
            kf = source.keyframe_request() => {
                if let Some(track) = kf {
                    sub.request_keyframe(track);
                }
            }
            layers = interest.next() => sub.set_layers(layers),
            changed = topology.changed() => {
                if changed.is_ok()
                    && moved(&topology.borrow(), &ctx.node, route.role, upstream, route.epoch)
                {
                    debug!("topology moved; re-resolving");
                    return Outcome::Resolve;
                }
            }
            changed = sinks.changed() => {
                if changed.is_err() {
                    return Outcome::Stop;
                }
                let n = *sinks.borrow();
                idle_since = if n == 0 { idle_since.or_else(|| Some(Instant::now())) } else { None };
            }
            _ = sleep_opt(linger_left) => {
                debug!(?linger, "no sinks left; releasing");
                return Outcome::Stop;
            }
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
