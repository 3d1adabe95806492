//! Pulling a stream from its upstream node over the relay.
//!
//! One puller per (node, stream), whatever the number of players. It asks the
//! control plane for the node's role, subscribes to the upstream it names,
//! feeds the hub, and follows the stream's topology (a watch): when the
//! upstream changes or dies it re-resolves (telling the control plane which
//! upstream was unreachable, so failover does not wait for a lease to expire)
//! and resubscribes, re-attaching to the same hub stream so players stay.
//! With no sinks left for `linger`, it releases its claims and ends.
//!
//! `mod.rs` holds the table of pullers and the resolve/subscribe loop;
//! `forward.rs` moves one subscription's frames into the hub; `topology.rs`
//! follows the stream's topology and `moved.rs` decides when it moved.

mod forward;
mod interest;
mod moved;
mod topology;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use strata_common::backoff::Backoff;
use strata_media::Catalog;
use strata_media::hub::{Hub, Source};
use strata_proto::v1;
use strata_relay::{RelayClient, RelayError, SubscribeErrorCode, Subscription};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::control::ControlClient;
use crate::origins::OriginEpochs;
use forward::Outcome;
pub use moved::moved;
use topology::Topology;

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

/// What the pullers of a node work with.
pub struct PullContext {
    /// This node's id.
    pub node: String,
    /// This node's region.
    pub region: String,
    /// Resolve, topology watch, release.
    pub control: ControlClient,
    /// Where pulled streams go.
    pub hub: Hub,
    /// Subscribes to upstream nodes.
    pub relay: RelayClient,
    /// Regional origin records this node holds.
    pub origins: Arc<OriginEpochs>,
    /// How long a stream without sinks is kept (`--linger`).
    pub linger: Duration,
    /// How long players wait for a stream that went away (`--orphan-grace`).
    pub orphan_grace: Duration,
}

/// The running pullers of the node, by stream.
pub struct Pullers {
    inner: Arc<Shared>,
}

struct Shared {
    ctx: PullContext,
    table: Mutex<HashMap<String, watch::Receiver<PullStatus>>>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<PullStatus>>> {
        // Every step leaves the map whole: a poisoned lock still guards it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pullers {
    /// No pullers yet.
    pub fn new(ctx: PullContext) -> Self {
        let table = Mutex::new(HashMap::new());
        Pullers {
            inner: Arc::new(Shared { ctx, table }),
        }
    }

    /// Starts (or joins) the puller of `stream` and returns its status.
    pub fn ensure(&self, stream: &str) -> watch::Receiver<PullStatus> {
        let mut table = self.inner.table();
        if let Some(existing) = table.get(stream) {
            return existing.clone();
        }
        let (tx, rx) = watch::channel(PullStatus::Starting);
        let span = info_span!("pull", stream, node = %self.inner.ctx.node);
        tokio::spawn(run(self.inner.clone(), stream.to_owned(), tx).instrument(span));
        table.insert(stream.to_owned(), rx.clone());
        rx
    }

    /// The puller of a stream, if one runs.
    pub fn get(&self, stream: &str) -> Option<watch::Receiver<PullStatus>> {
        self.inner.table().get(stream).cloned()
    }

    /// Number of running pullers.
    pub fn count(&self) -> usize {
        self.inner.table().len()
    }
}

/// How long a puller that has never delivered keeps retrying a control plane
/// that does not answer before it gives up, so that the players waiting for it
/// get a prompt 503 (with `Retry-After`) instead of hanging.
const START_RETRY: Duration = Duration::from_secs(1);

/// What to do after one step of the loop.
enum Next<T> {
    /// Carry on with this.
    Go(T),
    /// Start the loop over (resolve again).
    Retry,
    /// End the puller.
    Stop,
}

/// One stream's puller.
struct Puller {
    shared: Arc<Shared>,
    stream: String,
    status: watch::Sender<PullStatus>,
    topology: Topology,
    unreachable: Option<v1::Upstream>,
    backoff: Backoff,
    not_live_since: Option<Instant>,
    started: Instant,
    ever_ready: bool,
}

async fn run(shared: Arc<Shared>, stream: String, status: watch::Sender<PullStatus>) {
    let topology = topology::watch(&shared.ctx, &stream);
    let mut p = Puller {
        shared,
        stream,
        status,
        topology,
        unreachable: None,
        backoff: retry_pacing(),
        not_live_since: None,
        started: Instant::now(),
        ever_ready: false,
    };
    let mut source: Option<Source> = None;
    loop {
        let answer = match p.resolve().await {
            Next::Go(a) => a,
            Next::Retry => continue,
            Next::Stop => break,
        };
        let Some((role, upstream)) = p.route(&answer) else {
            break;
        };
        let Some(sub) = p.subscribe(&upstream).await else {
            continue;
        };
        p.backoff = retry_pacing();
        // Swap the hub's source: sinks stay attached and resume at the new
        // source's next keyframe.
        drop(source.take());
        let Some(src) = p.attach(&sub) else {
            break;
        };
        info!(role = ?role, upstream = %upstream.node_id, epoch = upstream.epoch, "pulling");
        p.status
            .send_replace(PullStatus::Ready(sub.catalog().clone()));
        p.ever_ready = true;
        let src = source.insert(src);
        let route = forward::Route {
            upstream: &upstream,
            role,
            epoch: answer.epoch,
        };
        match forward::forward(&p.shared.ctx, &p.stream, sub, src, route, &p.topology).await {
            Outcome::Resolve => {}
            Outcome::Unreachable(up) => p.unreachable = Some(up),
            Outcome::Stop => break,
        }
    }
    drop(source);
    p.finish().await;
}

impl Puller {
    fn ctx(&self) -> &PullContext {
        &self.shared.ctx
    }

    /// Asks the control plane where to pull from.
    async fn resolve(&mut self) -> Next<v1::ResolveResponse> {
        let ctx = &self.shared.ctx;
        let (stream, unreachable) = (&self.stream, self.unreachable.take());
        match ctx
            .control
            .resolve(stream, &ctx.region, &ctx.node, unreachable)
            .await
        {
            Ok(a) => {
                self.not_live_since = None;
                Next::Go(a)
            }
            Err(e) if e.code() == tonic::Code::NotFound => self.not_live().await,
            Err(e) if !self.ever_ready && self.started.elapsed() >= START_RETRY => {
                // Nobody is served by this puller yet: fail the waiting
                // players now rather than at their deadline.
                warn!(error = %e, "resolve failed; giving up");
                self.status.send_replace(PullStatus::Failed(format!(
                    "the control plane cannot route {stream:?} now: {e}"
                )));
                Next::Stop
            }
            Err(e) => {
                warn!(error = %e, "resolve failed; retrying");
                tokio::time::sleep(self.backoff.next_delay()).await;
                Next::Retry
            }
        }
    }

    /// The control plane says the stream is not live: players wait (stalled)
    /// for it to come back, for `orphan_grace` at most.
    async fn not_live<T>(&mut self) -> Next<T> {
        let ctx = &self.shared.ctx;
        let since = *self.not_live_since.get_or_insert_with(Instant::now);
        let stream = ctx.hub.get(&self.stream);
        let has_sinks = stream.as_ref().is_some_and(|s| s.sink_count() > 0);
        if !has_sinks || since.elapsed() >= ctx.orphan_grace {
            if let Some(s) = stream {
                s.close();
            }
            self.status.send_replace(PullStatus::NotLive);
            return Next::Stop;
        }
        if !matches!(*self.status.borrow(), PullStatus::Ready(_)) {
            self.status.send_replace(PullStatus::NotLive);
        }
        topology::wait_for_change(&self.topology, Duration::from_secs(1)).await;
        Next::Retry
    }

    /// The node's role and upstream from a resolve answer; records a
    /// regional origin's epoch. `None` when this node is the main origin.
    fn route(&self, answer: &v1::ResolveResponse) -> Option<(v1::Role, v1::Upstream)> {
        let role = v1::Role::try_from(answer.role).unwrap_or(v1::Role::Unspecified);
        let Some(upstream) = answer
            .upstream
            .clone()
            .filter(|_| role != v1::Role::MainOrigin)
        else {
            // This node is the main origin: its publisher feeds the hub.
            self.status.send_replace(PullStatus::Failed(
                "this node is the stream's origin".into(),
            ));
            return None;
        };
        if role == v1::Role::RegionalOrigin {
            self.ctx().origins.set(&self.stream, answer.epoch);
        } else {
            self.ctx().origins.clear(&self.stream);
        }
        Some((role, upstream))
    }

    /// Subscribes to `upstream`; on failure waits out the backoff (and
    /// remembers an unreachable upstream for the next resolve).
    async fn subscribe(&mut self, upstream: &v1::Upstream) -> Option<Subscription> {
        let e = match subscribe(&self.shared.ctx.relay, &self.stream, upstream).await {
            Ok(sub) => return Some(sub),
            Err(e) => e,
        };
        match &e {
            // The upstream does not carry it yet (a new regional origin
            // still connecting upstream) or the record moved: ask again
            // shortly.
            RelayError::Refused {
                code: SubscribeErrorCode::NotFound | SubscribeErrorCode::StaleEpoch,
                ..
            } => {
                debug!(error = %e, upstream = %upstream.node_id, "upstream not ready");
            }
            _ => {
                warn!(error = %e, upstream = %upstream.node_id, "upstream unreachable");
                self.unreachable = Some(upstream.clone());
            }
        }
        tokio::time::sleep(self.backoff.next_delay()).await;
        None
    }

    /// Makes the subscription the hub stream's source.
    fn attach(&self, sub: &Subscription) -> Option<Source> {
        match self
            .ctx()
            .hub
            .attach_source(&self.stream, sub.catalog().clone())
        {
            Ok(s) => Some(s),
            Err(e) => {
                self.status.send_replace(PullStatus::Failed(e.to_string()));
                None
            }
        }
    }

    /// Leaves the table and gives the claims back.
    async fn finish(self) {
        let ctx = &self.shared.ctx;
        self.shared.table().remove(&self.stream);
        ctx.origins.clear(&self.stream);
        if let Err(e) = ctx.control.release(&self.stream, &ctx.node).await {
            debug!(error = %e, "release failed; the lease will clean up");
        }
        info!("puller ended");
    }
}

async fn subscribe(
    relay: &RelayClient,
    stream: &str,
    upstream: &v1::Upstream,
) -> Result<Subscription, RelayError> {
    let addr = resolve_addr(&upstream.relay_addr).await?;
    let epoch = u64::try_from(upstream.epoch).unwrap_or(0);
    relay
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

/// The puller's retry pacing: from 50 ms, doubling, at most 1 s.
fn retry_pacing() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
}
