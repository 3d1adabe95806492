//! Pulling a stream from its upstream node over the relay.
//!
//! One puller per (node, stream), whatever the number of players. It asks the
//! control plane for the node's role, subscribes to the upstream it names,
//! feeds the hub, and follows the stream's topology (a watch): when the
//! upstream changes or dies it re-resolves (telling the control plane which
//! upstream was unreachable, so failover does not wait for a lease to expire)
//! and resubscribes, re-attaching to the same hub stream so players stay.
//! With no sinks left for `linger`, it releases its claims and ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strata_common::backoff::Backoff;
use strata_media::Catalog;
use strata_media::hub::Source;
use strata_proto::v1;
use strata_relay::{RelayError, SubscribeErrorCode, Subscription, SubscriptionEvent};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::pull_interest::UpstreamInterest;
use crate::state::NodeState;

/// What a puller can say about its stream.
#[derive(Debug, Clone, PartialEq)]
pub enum PullStatus {
    /// Resolving or subscribing.
    Starting,
    /// Media flows into the hub; the catalog players negotiate with.
    Ready(Catalog),
    /// The control plane says the stream is not live.
    NotLive,
    /// The puller cannot serve this stream (reason for the HTTP answer).
    Failed(String),
}

/// Starts (or joins) the puller of `stream` and returns its status.
pub fn ensure(state: &Arc<NodeState>, stream: &str) -> watch::Receiver<PullStatus> {
    state.insert_puller_with(stream, || {
        let (tx, rx) = watch::channel(PullStatus::Starting);
        let span = info_span!("pull", stream, node = %state.id());
        tokio::spawn(run(state.clone(), stream.to_owned(), tx).instrument(span));
        rx
    })
}

/// Why one subscription ended.
enum Outcome {
    /// Re-resolve now (topology moved, upstream ended).
    Resolve,
    /// The upstream could not be reached: report it when re-resolving.
    Unreachable(v1::Upstream),
    /// No more sinks for `linger`, or the node stops: end the puller.
    Stop,
}

/// How long a puller that has never delivered keeps retrying a control plane
/// that does not answer before it gives up, so that the players waiting for it
/// get a prompt 503 (with `Retry-After`) instead of hanging.
const START_RETRY: Duration = Duration::from_secs(1);

async fn run(state: Arc<NodeState>, stream: String, status: watch::Sender<PullStatus>) {
    let topology = watch_topology(&state, &stream);
    let mut unreachable: Option<v1::Upstream> = None;
    let mut backoff = retry_pacing();
    let mut not_live_since: Option<Instant> = None;
    let started = Instant::now();
    let mut ever_ready = false;
    let mut source: Option<Source> = None;
    loop {
        let resolved = state
            .control
            .resolve(&stream, state.region(), state.id(), unreachable.take())
            .await;
        let answer = match resolved {
            Ok(a) => a,
            Err(e) if e.code() == tonic::Code::NotFound => {
                let since = *not_live_since.get_or_insert_with(Instant::now);
                let has_sinks = state.hub.get(&stream).is_some_and(|s| s.sink_count() > 0);
                if !has_sinks || since.elapsed() >= state.cfg.orphan_grace {
                    if let Some(s) = state.hub.get(&stream) {
                        s.close();
                    }
                    status.send_replace(PullStatus::NotLive);
                    break;
                }
                // Players wait (stalled) for the stream to come back.
                if !matches!(*status.borrow(), PullStatus::Ready(_)) {
                    status.send_replace(PullStatus::NotLive);
                }
                wait_for_change(&topology, Duration::from_secs(1)).await;
                continue;
            }
            Err(e) if !ever_ready && started.elapsed() >= START_RETRY => {
                // Nobody is served by this puller yet: fail the waiting
                // players now rather than at their deadline.
                warn!(error = %e, "resolve failed; giving up");
                status.send_replace(PullStatus::Failed(format!(
                    "the control plane cannot route {stream:?} now: {e}"
                )));
                break;
            }
            Err(e) => {
                warn!(error = %e, "resolve failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        not_live_since = None;
        let role = v1::Role::try_from(answer.role).unwrap_or(v1::Role::Unspecified);
        let Some(upstream) = answer
            .upstream
            .clone()
            .filter(|_| role != v1::Role::MainOrigin)
        else {
            // This node is the main origin: its publisher feeds the hub.
            status.send_replace(PullStatus::Failed(
                "this node is the stream's origin".into(),
            ));
            break;
        };
        if role == v1::Role::RegionalOrigin {
            state.set_origin_epoch(&stream, answer.epoch);
        } else {
            state.clear_origin_epoch(&stream);
        }
        let sub = match subscribe(&state, &stream, &upstream).await {
            Ok(sub) => sub,
            Err(e) => {
                match &e {
                    // The upstream does not carry it yet (a new regional
                    // origin still connecting upstream) or the record moved:
                    // ask again shortly.
                    RelayError::Refused {
                        code: SubscribeErrorCode::NotFound | SubscribeErrorCode::StaleEpoch,
                        ..
                    } => {
                        debug!(error = %e, upstream = %upstream.node_id, "upstream not ready");
                    }
                    _ => {
                        warn!(error = %e, upstream = %upstream.node_id, "upstream unreachable");
                        unreachable = Some(upstream.clone());
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff = retry_pacing();
        // Swap the hub's source: sinks stay attached and resume at the new
        // source's next keyframe.
        drop(source.take());
        let src = match state.hub.attach_source(&stream, sub.catalog().clone()) {
            Ok(s) => s,
            Err(e) => {
                status.send_replace(PullStatus::Failed(e.to_string()));
                break;
            }
        };
        info!(role = ?role, upstream = %upstream.node_id, epoch = upstream.epoch, "pulling");
        status.send_replace(PullStatus::Ready(sub.catalog().clone()));
        ever_ready = true;
        let src = source.insert(src);
        match forward(
            &state,
            &stream,
            sub,
            src,
            &upstream,
            role,
            answer.epoch,
            &topology,
        )
        .await
        {
            Outcome::Resolve => {}
            Outcome::Unreachable(up) => unreachable = Some(up),
            Outcome::Stop => break,
        }
    }
    drop(source);
    state.remove_puller(&stream);
    state.clear_origin_epoch(&stream);
    if let Err(e) = state.control.release(&stream, state.id()).await {
        debug!(error = %e, "release failed; the lease will clean up");
    }
    info!("puller ended");
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &Arc<NodeState>,
    stream: &str,
    mut sub: Subscription,
    source: &mut Source,
    upstream: &v1::Upstream,
    role: v1::Role,
    epoch: i64,
    topology: &watch::Receiver<Option<v1::StreamTopology>>,
) -> Outcome {
    let mut topology = topology.clone();
    topology.mark_unchanged();
    let Some(handle) = state.hub.get(stream) else {
        return Outcome::Resolve;
    };
    let mut sinks = handle.watch_sink_count();
    let mut interest = UpstreamInterest::new(&handle);
    let linger = state.cfg.linger;
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
                if changed.is_ok() && moved(&topology.borrow(), state.id(), role, upstream, epoch) {
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

/// Whether a topology snapshot means this node should pull from elsewhere.
pub fn moved(
    t: &Option<v1::StreamTopology>,
    me: &str,
    role: v1::Role,
    upstream: &v1::Upstream,
    epoch: i64,
) -> bool {
    let Some(t) = t else { return false };
    if !t.live {
        return true;
    }
    let main = t.main.as_ref();
    let main_moved = |m: Option<&v1::MainOrigin>| match m {
        Some(m) => m.node_id != upstream.node_id || m.epoch != upstream.epoch,
        None => true,
    };
    match role {
        v1::Role::RegionalOrigin => {
            // Deposed (the record also drops out of the topology when the
            // main origin's epoch moves past the one it was claimed under).
            let deposed = t
                .regional
                .as_ref()
                .is_none_or(|r| r.node_id != me || r.epoch != epoch);
            if main.is_some_and(|m| m.node_id == upstream.node_id) {
                // Pulling from the main origin: it changed under us.
                deposed || main_moved(main)
            } else {
                // Pulling from another region's regional origin (the region
                // graph): that region's record is gone or has a new holder.
                deposed
                    || t.upstream.as_ref().is_none_or(|u| {
                        u.node_id != upstream.node_id || u.region != upstream.region
                    })
            }
        }
        v1::Role::Edge
            if main
                .is_some_and(|m| m.region == upstream.region && m.node_id == upstream.node_id) =>
        {
            // Pulling from the main origin of our own region.
            main_moved(main)
        }
        v1::Role::Edge => t
            .regional
            .as_ref()
            .is_none_or(|r| r.node_id != upstream.node_id || r.epoch != upstream.epoch),
        _ => true,
    }
}

async fn subscribe(
    state: &NodeState,
    stream: &str,
    upstream: &v1::Upstream,
) -> Result<Subscription, RelayError> {
    let addr = resolve_addr(&upstream.relay_addr).await?;
    let epoch = u64::try_from(upstream.epoch).unwrap_or(0);
    state
        .relay
        .subscribe(addr, &upstream.node_id, stream, epoch)
        .await
}

async fn resolve_addr(addr: &str) -> Result<SocketAddr, RelayError> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| RelayError::Config(format!("relay address {addr:?} resolves to nothing")))
}

/// Follows the stream's topology for this node's region; `None` until the
/// first snapshot. Reconnects the watch when it breaks.
fn watch_topology(
    state: &Arc<NodeState>,
    stream: &str,
) -> watch::Receiver<Option<v1::StreamTopology>> {
    let (tx, rx) = watch::channel(None);
    let (state, stream) = (state.clone(), stream.to_owned());
    tokio::spawn(
        async move {
            let mut backoff = retry_pacing();
            loop {
                let req = v1::WatchStreamRequest {
                    stream: stream.clone(),
                    region: state.region().into(),
                };
                let opened = tokio::select! {
                    r = state.control.watch_stream(req) => r,
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

async fn wait_for_change(
    topology: &watch::Receiver<Option<v1::StreamTopology>>,
    at_most: Duration,
) {
    let mut t = topology.clone();
    t.mark_unchanged();
    let _ = tokio::time::timeout(at_most, t.changed()).await;
}

/// The puller's retry pacing: from 50 ms, doubling, at most 1 s.
fn retry_pacing() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(main: (&str, i64), regional: Option<(&str, i64)>) -> Option<v1::StreamTopology> {
        Some(v1::StreamTopology {
            live: true,
            main: Some(v1::MainOrigin {
                node_id: main.0.into(),
                region: "eu".into(),
                epoch: main.1,
                ..Default::default()
            }),
            regional: regional.map(|(n, e)| v1::RegionalOrigin {
                node_id: n.into(),
                epoch: e,
                ..Default::default()
            }),
            revision: 0,
            upstream: None,
        })
    }

    fn up(node: &str, region: &str, epoch: i64) -> v1::Upstream {
        v1::Upstream {
            node_id: node.into(),
            region: region.into(),
            epoch,
            ..Default::default()
        }
    }

    #[test]
    fn edge_of_regional_moves_when_regional_changes() {
        let u = up("r1", "us", 20);
        assert!(!moved(
            &topo(("o", 10), Some(("r1", 20))),
            "e",
            v1::Role::Edge,
            &u,
            20
        ));
        assert!(moved(&topo(("o", 10), None), "e", v1::Role::Edge, &u, 20));
        assert!(moved(
            &topo(("o", 10), Some(("r2", 25))),
            "e",
            v1::Role::Edge,
            &u,
            20
        ));
        assert!(moved(
            &topo(("o", 10), Some(("r1", 30))),
            "e",
            v1::Role::Edge,
            &u,
            20
        ));
    }

    #[test]
    fn edge_of_main_moves_only_with_main() {
        let u = up("o", "eu", 10);
        assert!(!moved(
            &topo(("o", 10), Some(("x", 3))),
            "e",
            v1::Role::Edge,
            &u,
            10
        ));
        assert!(moved(&topo(("o2", 11), None), "e", v1::Role::Edge, &u, 10));
    }

    #[test]
    fn regional_origin_moves_when_deposed_or_main_changes() {
        let u = up("o", "eu", 10);
        let me = "r1";
        assert!(!moved(
            &topo(("o", 10), Some(("r1", 20))),
            me,
            v1::Role::RegionalOrigin,
            &u,
            20
        ));
        assert!(moved(
            &topo(("o", 10), Some(("r2", 21))),
            me,
            v1::Role::RegionalOrigin,
            &u,
            20
        ));
        assert!(moved(
            &topo(("o", 12), Some(("r1", 20))),
            me,
            v1::Role::RegionalOrigin,
            &u,
            20
        ));
        let mut dead = topo(("o", 10), Some(("r1", 20)));
        if let Some(t) = dead.as_mut() {
            t.live = false;
        }
        assert!(moved(&dead, me, v1::Role::RegionalOrigin, &u, 20));
    }

    #[test]
    fn regional_origin_of_a_parent_region_moves_with_that_region() {
        // r3-1 holds region r3 and pulls from r2's regional origin r2-1.
        let u = up("r2-1", "r2", 30);
        let me = "r3-1";
        let with_parent = |parent: Option<(&str, &str)>| {
            let mut t = topo(("o", 10), Some((me, 40)));
            if let Some(t) = t.as_mut() {
                t.upstream = parent.map(|(n, r)| v1::RegionalOrigin {
                    node_id: n.into(),
                    region: r.into(),
                    epoch: 31,
                    ..Default::default()
                });
            }
            t
        };
        let role = v1::Role::RegionalOrigin;
        // The parent's record rewritten in place (same holder): no move.
        assert!(!moved(&with_parent(Some(("r2-1", "r2"))), me, role, &u, 40));
        // Gone, or held by another node now: re-resolve.
        assert!(moved(&with_parent(None), me, role, &u, 40));
        assert!(moved(&with_parent(Some(("r2-2", "r2"))), me, role, &u, 40));
        // Our own record rewritten (re-parented, rebalanced): re-resolve.
        assert!(moved(&with_parent(Some(("r2-1", "r2"))), me, role, &u, 39));
    }

    #[test]
    fn unknown_topology_is_not_a_move() {
        assert!(!moved(&None, "e", v1::Role::Edge, &up("o", "eu", 1), 1));
    }
}
