//! `strata.v1.RoutingService`: publish, resolve, release, watch, list.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use strata_proto::v1::{self, routing_service_server::RoutingService};

use super::{State, convert, now_ms};
use crate::cache::{StreamState, Versioned};
use crate::election::{Decision, decide};
use crate::error::{Error, Result};
use crate::keys::{self, MainRecord, NodeRecord, RegionalRecord, SubscriberRecord};
use crate::kv::{Compare, KeyValue, Op};
use crate::names::{self, NameKind};

/// Attempts of one resolve under contention before giving up.
const MAX_ATTEMPTS: usize = 5;

/// The routing service.
#[derive(Clone)]
pub struct RoutingApi {
    state: State,
}

impl RoutingApi {
    /// Serves from this state.
    pub fn new(state: State) -> Self {
        Self { state }
    }
}

fn versioned<T: for<'de> serde::Deserialize<'de>>(
    kv: Option<KeyValue>,
) -> Option<Arc<Versioned<T>>> {
    let kv = kv?;
    Some(Arc::new(Versioned {
        value: keys::decode(&kv.value)?,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }))
}

fn upstream_main(m: &Versioned<MainRecord>) -> v1::Upstream {
    v1::Upstream {
        node_id: m.value.node_id.clone(),
        region: m.value.region.clone(),
        relay_addr: m.value.relay_addr.clone(),
        epoch: m.epoch(),
    }
}

fn upstream_regional(region: &str, r: &Versioned<RegionalRecord>) -> v1::Upstream {
    v1::Upstream {
        node_id: r.value.node_id.clone(),
        region: region.to_owned(),
        relay_addr: r.value.relay_addr.clone(),
        epoch: r.epoch(),
    }
}

fn answer(
    stream: &str,
    main: &Versioned<MainRecord>,
    role: v1::Role,
    upstream: Option<v1::Upstream>,
    epoch: i64,
) -> v1::ResolveResponse {
    v1::ResolveResponse {
        role: role as i32,
        upstream,
        epoch,
        main: Some(convert::main_origin(stream, main)),
    }
}

/// Whether the cache holds `node`'s subscriber record of a stream exactly as
/// a resolve would write it (pulling from `upstream`), compared field by
/// field without building the record.
fn subscribed(st: &StreamState, node: &NodeRecord, upstream: &str) -> bool {
    st.subscribers.get(&node.id).is_some_and(|v| {
        // Every field, so that a new one cannot be missed here.
        let SubscriberRecord {
            region,
            upstream_node_id,
        } = &v.value;
        *region == node.region && upstream_node_id == upstream
    })
}

impl RoutingApi {
    async fn publish(&self, req: v1::PublishRequest) -> Result<v1::PublishResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream)?;
        let node = s.caller(&req.node_id).await?;
        let node = &node.value;
        let key = s.keys().main(&req.stream);
        let record = MainRecord {
            node_id: node.id.clone(),
            region: node.region.clone(),
            relay_addr: node.relay_addr.clone(),
            started_at_ms: now_ms(),
        };
        let put = Op::Put {
            key: key.clone(),
            value: keys::encode(&record),
            lease: node.lease,
        };
        let out = s
            .kv()
            .txn(
                vec![Compare::CreateRevision(key.clone(), 0)],
                vec![put, Op::Get(key.clone())],
                vec![Op::Get(key)],
            )
            .await?;
        let current: Arc<Versioned<MainRecord>> = versioned(out.gets.into_iter().next().flatten())
            .ok_or_else(|| Error::Internal("main origin record unreadable".into()))?;
        if !out.succeeded && current.value.node_id != node.id {
            return Err(Error::AlreadyExists(format!(
                "stream {:?} is already live on node {:?} (region {:?})",
                req.stream, current.value.node_id, current.value.region
            )));
        }
        if out.succeeded {
            // No wait for the cache here: a resolve that misses the main
            // origin in the cache confirms with the store.
            s.metrics().publishes.inc();
            info!(stream = %req.stream, node = %node.id, epoch = current.epoch(), "stream published");
        }
        Ok(v1::PublishResponse {
            origin: Some(convert::main_origin(&req.stream, &current)),
        })
    }

    async fn unpublish(&self, req: v1::UnpublishRequest) -> Result<v1::UnpublishResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream)?;
        names::validate(NameKind::Node, &req.node_id)?;
        let key = s.keys().main(&req.stream);
        let Some(current) = versioned::<MainRecord>(s.kv().get(&key).await?) else {
            return Ok(v1::UnpublishResponse {});
        };
        if current.value.node_id != req.node_id {
            return Err(Error::FailedPrecondition(format!(
                "node {:?} is not the main origin of stream {:?} ({:?} is)",
                req.node_id, req.stream, current.value.node_id
            )));
        }
        let guard = vec![Compare::ModRevision(key, current.epoch())];
        let all = Op::DeletePrefix(s.keys().stream(&req.stream));
        let out = s.kv().txn(guard, vec![all], Vec::new()).await?;
        s.cache().wait_for(out.revision, s.config().lease_ttl).await;
        info!(stream = %req.stream, node = %req.node_id, "stream unpublished");
        Ok(v1::UnpublishResponse {})
    }

    async fn resolve(&self, req: v1::ResolveRequest) -> Result<v1::ResolveResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream)?;
        names::validate(NameKind::Region, &req.region)?;
        names::validate(NameKind::Node, &req.node_id)?;
        let unreachable = req
            .unreachable
            .as_ref()
            .map(|u| (u.node_id.as_str(), u.epoch));
        if let Some(answer) = self.resolve_cached(&req, unreachable) {
            return Ok(answer);
        }
        // Boxed, so that this future (boxed and moved for every call) stays
        // small and the steady state does not pay for the general path's
        // state.
        Box::pin(self.resolve_full(&req, unreachable)).await
    }

    /// Resolve in general: claims, store reads on cache misses, subscriber
    /// writes, retries after a lost claim. `req` has been validated.
    async fn resolve_full(
        &self,
        req: &v1::ResolveRequest,
        unreachable: Option<(&str, i64)>,
    ) -> Result<v1::ResolveResponse> {
        let s = &self.state;
        let node = s.caller(&req.node_id).await?;
        let node = &node.value;
        if node.region != req.region {
            return Err(Error::InvalidArgument(format!(
                "region {:?} is not the region node {:?} registered in ({:?})",
                req.region, node.id, node.region
            )));
        }
        s.metrics().resolves.inc();
        let (stream, region) = (req.stream.as_str(), req.region.as_str());

        // First from the cache; after a lost transaction, from what it read.
        let (mut main, mut regional) = {
            let view = s.cache().read();
            let st = view.streams.get(stream);
            (
                st.and_then(|st| st.main.clone()),
                st.and_then(|st| st.regions.get(region).cloned()),
            )
        };
        if main.is_some() {
            s.metrics().cache_hits.inc();
        } else {
            // A publish through another replica may not have reached this
            // cache yet: a miss is confirmed by the store.
            s.metrics().cache_misses.inc();
            let out = s
                .kv()
                .txn(
                    Vec::new(),
                    vec![
                        Op::Get(s.keys().main(stream)),
                        Op::Get(s.keys().regional(stream, region)),
                    ],
                    Vec::new(),
                )
                .await?;
            let mut gets = out.gets.into_iter();
            main = versioned(gets.next().flatten());
            regional = versioned(gets.next().flatten());
        }
        for _ in 0..MAX_ATTEMPTS {
            let decision = {
                let view = s.cache().read();
                let is_live = |n: &str| view.nodes.contains_key(n);
                decide(
                    main.as_deref(),
                    regional.as_deref(),
                    &node.id,
                    region,
                    unreachable,
                    &is_live,
                )
            };
            let Some(m) = main.as_deref() else {
                return Err(Error::NotFound(format!("stream {stream:?} is not live")));
            };
            match decision {
                Decision::NotLive => {
                    return Err(Error::NotFound(format!("stream {stream:?} is not live")));
                }
                Decision::Main => {
                    s.metrics().resolves_cached.inc();
                    return Ok(answer(stream, m, v1::Role::MainOrigin, None, m.epoch()));
                }
                Decision::PullFromMain => {
                    self.ensure_subscriber(stream, node, &m.value.node_id)
                        .await?;
                    let up = upstream_main(m);
                    return Ok(answer(stream, m, v1::Role::Edge, Some(up), m.epoch()));
                }
                Decision::HoldsRegional => {
                    let Some(r) = regional.as_deref() else {
                        continue;
                    };
                    s.metrics().resolves_cached.inc();
                    let up = upstream_main(m);
                    return Ok(answer(
                        stream,
                        m,
                        v1::Role::RegionalOrigin,
                        Some(up),
                        r.epoch(),
                    ));
                }
                Decision::PullFromRegional(holder) => {
                    let Some(r) = regional.as_deref() else {
                        continue;
                    };
                    self.ensure_subscriber(stream, node, holder).await?;
                    let up = upstream_regional(region, r);
                    return Ok(answer(stream, m, v1::Role::Edge, Some(up), r.epoch()));
                }
                Decision::Claim { .. } if node.draining => {
                    // A draining node must not become an origin (it is about to
                    // leave): it pulls from the main origin directly until then.
                    self.ensure_subscriber(stream, node, &m.value.node_id)
                        .await?;
                    let up = upstream_main(m);
                    return Ok(answer(stream, m, v1::Role::Edge, Some(up), m.epoch()));
                }
                Decision::Claim { replace } => {
                    let (won, m2, r2) = self.claim(stream, region, node, m, replace).await?;
                    if won {
                        s.metrics().claims_won.inc();
                        let epoch = r2.as_ref().map(|r| r.epoch()).unwrap_or(0);
                        info!(%stream, %region, node = %node.id, epoch, "regional origin claimed");
                        let up = upstream_main(m);
                        return Ok(answer(stream, m, v1::Role::RegionalOrigin, Some(up), epoch));
                    }
                    s.metrics().claims_lost.inc();
                    debug!(%stream, %region, node = %node.id, "regional claim lost; re-deciding");
                    main = m2;
                    regional = r2;
                }
            }
        }
        Err(Error::Unavailable(format!(
            "stream {stream:?} region {region:?}: origin changed during every attempt; retry"
        )))
    }

    /// The steady state under one read guard of the cache, copying no record:
    /// the caller is registered in the region it names, the main origin is
    /// cached, and the answer needs no write (no claim, and an edge's
    /// subscriber record is cached as it would be written). It counts what
    /// the full path counts for that answer. `None` whenever anything else
    /// holds; the full path then decides, reading the cache afresh and the
    /// store where the cache misses.
    fn resolve_cached(
        &self,
        req: &v1::ResolveRequest,
        unreachable: Option<(&str, i64)>,
    ) -> Option<v1::ResolveResponse> {
        let (stream, region) = (req.stream.as_str(), req.region.as_str());
        let resp = {
            let view = self.state.cache().read();
            let node = &view.nodes.get(&req.node_id)?.value;
            if node.region != region {
                return None;
            }
            let st = view.streams.get(stream)?;
            let m = st.main.as_deref()?;
            let regional = st.regions.get(region).map(|r| &**r);
            let is_live = |n: &str| view.nodes.contains_key(n);
            let from_main = || {
                subscribed(st, node, &m.value.node_id).then(|| {
                    let up = upstream_main(m);
                    answer(stream, m, v1::Role::Edge, Some(up), m.epoch())
                })
            };
            match decide(Some(m), regional, &node.id, region, unreachable, &is_live) {
                Decision::Main => answer(stream, m, v1::Role::MainOrigin, None, m.epoch()),
                Decision::PullFromMain => from_main()?,
                // A draining node may not claim: it pulls from the main origin.
                Decision::Claim { .. } if node.draining => from_main()?,
                Decision::HoldsRegional => {
                    let epoch = regional?.epoch();
                    let up = upstream_main(m);
                    answer(stream, m, v1::Role::RegionalOrigin, Some(up), epoch)
                }
                Decision::PullFromRegional(holder) => {
                    let r = regional?;
                    if !subscribed(st, node, holder) {
                        return None;
                    }
                    let up = upstream_regional(region, r);
                    answer(stream, m, v1::Role::Edge, Some(up), r.epoch())
                }
                Decision::NotLive | Decision::Claim { .. } => return None,
            }
        };
        let m = self.state.metrics();
        // The caller's record and the main origin were both cache hits.
        m.cache_hits.add(2);
        m.resolves.inc();
        m.resolves_cached.inc();
        Some(resp)
    }

    /// One guarded claim of a region's origin. Returns whether it was won and
    /// the main and regional records as the store holds them afterwards.
    async fn claim(
        &self,
        stream: &str,
        region: &str,
        node: &NodeRecord,
        main: &Versioned<MainRecord>,
        replace: i64,
    ) -> Result<(
        bool,
        Option<Arc<Versioned<MainRecord>>>,
        Option<Arc<Versioned<RegionalRecord>>>,
    )> {
        let s = &self.state;
        let (main_key, reg_key) = (s.keys().main(stream), s.keys().regional(stream, region));
        let record = RegionalRecord {
            node_id: node.id.clone(),
            relay_addr: node.relay_addr.clone(),
            upstream_node_id: main.value.node_id.clone(),
            main_epoch: main.epoch(),
        };
        let guard = vec![
            Compare::ModRevision(main_key.clone(), main.epoch()),
            if replace == 0 {
                Compare::CreateRevision(reg_key.clone(), 0)
            } else {
                Compare::ModRevision(reg_key.clone(), replace)
            },
        ];
        // Replacing a stale holder in place gives the record a new mod
        // revision, i.e. a new epoch.
        let then = vec![
            Op::Put {
                key: reg_key.clone(),
                value: keys::encode(&record),
                lease: node.lease,
            },
            Op::Delete(s.keys().subscriber(stream, &node.id)),
            Op::Get(main_key.clone()),
            Op::Get(reg_key.clone()),
        ];
        let out = s
            .kv()
            .txn(guard, then, vec![Op::Get(main_key), Op::Get(reg_key)])
            .await?;
        let mut gets = out.gets.into_iter();
        let (m, r) = (
            versioned(gets.next().flatten()),
            versioned(gets.next().flatten()),
        );
        if out.succeeded {
            s.cache().wait_for(out.revision, s.config().lease_ttl).await;
        }
        Ok((out.succeeded, m, r))
    }

    /// Records that `node` pulls `stream` from `upstream`, unless the cache
    /// shows that record already (the steady-state resolve writes nothing).
    async fn ensure_subscriber(
        &self,
        stream: &str,
        node: &NodeRecord,
        upstream: &str,
    ) -> Result<()> {
        let s = &self.state;
        let present = {
            let view = s.cache().read();
            view.streams
                .get(stream)
                .is_some_and(|st| subscribed(st, node, upstream))
        };
        if present {
            s.metrics().resolves_cached.inc();
            return Ok(());
        }
        let record = SubscriberRecord {
            region: node.region.clone(),
            upstream_node_id: upstream.into(),
        };
        let key = s.keys().subscriber(stream, &node.id);
        let rev = s.kv().put(&key, keys::encode(&record), node.lease).await?;
        s.cache().wait_for(rev, s.config().lease_ttl).await;
        Ok(())
    }

    async fn release(&self, req: v1::ReleaseRequest) -> Result<v1::ReleaseResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream)?;
        names::validate(NameKind::Node, &req.node_id)?;
        let mut ops = vec![Op::Delete(s.keys().subscriber(&req.stream, &req.node_id))];
        let held = {
            let view = s.cache().read();
            view.streams.get(&req.stream).and_then(|st| {
                st.regions
                    .iter()
                    .find(|(_, r)| r.value.node_id == req.node_id)
                    .map(|(region, r)| (region.clone(), r.mod_revision))
            })
        };
        let mut guard = Vec::new();
        if let Some((region, rev)) = held {
            let key = s.keys().regional(&req.stream, &region);
            guard.push(Compare::ModRevision(key.clone(), rev));
            ops.push(Op::Delete(key));
            info!(stream = %req.stream, %region, node = %req.node_id, "regional origin released");
        }
        let fallback = vec![Op::Delete(s.keys().subscriber(&req.stream, &req.node_id))];
        let out = s.kv().txn(guard, ops, fallback).await?;
        s.cache().wait_for(out.revision, s.config().lease_ttl).await;
        Ok(v1::ReleaseResponse {})
    }

    fn topology(&self, stream: &str, region: &str) -> v1::StreamTopology {
        let view = self.state.cache().read();
        let st = view.streams.get(stream);
        let main = st.and_then(|st| st.main.as_ref());
        v1::StreamTopology {
            live: main.is_some(),
            main: main.map(|m| convert::main_origin(stream, m)),
            regional: st
                .and_then(|st| st.regions.get(region))
                .filter(|r| main.is_some_and(|m| m.epoch() == r.value.main_epoch))
                .map(|r| convert::regional(stream, region, r)),
            revision: view.revision,
        }
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

use crate::auth::{self, Need};

/// The server stream of `WatchStream`.
pub type TopologyStream =
    Pin<Box<dyn Stream<Item = std::result::Result<v1::StreamTopology, Status>> + Send>>;

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    async fn publish(&self, r: Request<v1::PublishRequest>) -> Reply<v1::PublishResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::publish(self, r.into_inner()).await?,
        ))
    }

    async fn unpublish(&self, r: Request<v1::UnpublishRequest>) -> Reply<v1::UnpublishResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::unpublish(self, r.into_inner()).await?,
        ))
    }

    async fn resolve(&self, r: Request<v1::ResolveRequest>) -> Reply<v1::ResolveResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::resolve(self, r.into_inner()).await?,
        ))
    }

    async fn release(&self, r: Request<v1::ReleaseRequest>) -> Reply<v1::ReleaseResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::release(self, r.into_inner()).await?,
        ))
    }

    type WatchStreamStream = TopologyStream;

    async fn watch_stream(&self, r: Request<v1::WatchStreamRequest>) -> Reply<TopologyStream> {
        auth::require(&r, Need::Member)?;
        let req = r.into_inner();
        self.state.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream).map_err(Error::from)?;
        names::validate(NameKind::Region, &req.region).map_err(Error::from)?;
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        let mut revisions = self.state.cache().revisions();
        tokio::spawn(async move {
            let key = |t: &v1::StreamTopology| (t.live, t.main.clone(), t.regional.clone());
            let mut last = api.topology(&req.stream, &req.region);
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    changed = revisions.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
                let now = api.topology(&req.stream, &req.region);
                if key(&now) != key(&last) {
                    if tx.send(Ok(now.clone())).await.is_err() {
                        return;
                    }
                    last = now;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_streams(
        &self,
        r: Request<v1::ListStreamsRequest>,
    ) -> Reply<v1::ListStreamsResponse> {
        auth::require(&r, Need::Operator)?;
        self.state.ensure_healthy()?;
        let view = self.state.cache().read();
        let streams = view
            .streams
            .iter()
            .filter_map(|(id, st)| convert::tree(id, st))
            .collect();
        Ok(Response::new(v1::ListStreamsResponse { streams }))
    }

    async fn get_stream(&self, r: Request<v1::GetStreamRequest>) -> Reply<v1::StreamTree> {
        auth::require(&r, Need::Operator)?;
        let req = r.into_inner();
        self.state.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream).map_err(Error::from)?;
        let view = self.state.cache().read();
        let tree = view
            .streams
            .get(&req.stream)
            .and_then(|st| convert::tree(&req.stream, st));
        tree.map(Response::new).ok_or_else(|| {
            Status::from(Error::NotFound(format!(
                "stream {:?} is not live",
                req.stream
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache;
    use crate::keys::Keys;
    use crate::kv::Kv;
    use crate::kv::memory::MemoryKv;
    use crate::metrics::Metrics;
    use crate::service::ServiceConfig;

    const WAIT: Duration = Duration::from_secs(5);

    struct Fixture {
        api: RoutingApi,
        kv: Kv,
        keys: Keys,
        lease: i64,
    }

    impl Fixture {
        async fn new() -> Self {
            let kv = Kv::Memory(MemoryKv::new());
            let keys = Keys::new("/t/");
            let cache = cache::spawn(kv.clone(), keys.clone(), Duration::from_millis(100));
            let mut health = cache.health();
            tokio::time::timeout(WAIT, health.wait_for(|h| *h))
                .await
                .expect("cache synced")
                .unwrap();
            let config = ServiceConfig {
                lease_ttl: Duration::from_secs(10),
            };
            let metrics = Arc::new(Metrics::default());
            let state = State::new(kv.clone(), keys.clone(), cache, config, metrics);
            let lease = kv.grant(Duration::from_secs(60)).await.unwrap();
            Self {
                api: RoutingApi::new(state),
                kv,
                keys,
                lease,
            }
        }

        fn state(&self) -> &State {
            &self.api.state
        }

        /// The store's revision, once the cache has caught up with it.
        async fn settle(&self) -> i64 {
            let (_, rev) = self.kv.range(self.keys.prefix()).await.unwrap();
            self.state().cache().wait_for(rev, WAIT).await;
            assert!(self.state().cache().read().revision >= rev);
            rev
        }

        async fn node(&self, id: &str, region: &str, draining: bool) {
            let record = NodeRecord {
                id: id.into(),
                region: region.into(),
                relay_addr: format!("{id}.relay:4433"),
                http_url: format!("http://{id}"),
                capacity: 0,
                version: "test".into(),
                lease: self.lease,
                registered_at_ms: 0,
                draining,
            };
            let key = self.keys.node(id);
            self.kv
                .put(&key, keys::encode(&record), self.lease)
                .await
                .unwrap();
            self.settle().await;
        }

        fn counts(&self) -> [u64; 4] {
            let m = self.state().metrics();
            [
                m.resolves.get(),
                m.resolves_cached.get(),
                m.cache_hits.get(),
                m.cache_misses.get(),
            ]
        }

        fn cached(&self, req: &v1::ResolveRequest) -> Option<v1::ResolveResponse> {
            self.api.resolve_cached(req, unreachable_of(req))
        }

        async fn full(&self, req: &v1::ResolveRequest) -> Result<v1::ResolveResponse> {
            self.api.resolve_full(req, unreachable_of(req)).await
        }
    }

    fn unreachable_of(req: &v1::ResolveRequest) -> Option<(&str, i64)> {
        req.unreachable
            .as_ref()
            .map(|u| (u.node_id.as_str(), u.epoch))
    }

    fn req(node: &str, region: &str) -> v1::ResolveRequest {
        v1::ResolveRequest {
            stream: "s".into(),
            region: region.into(),
            node_id: node.into(),
            unreachable: None,
        }
    }

    /// A main origin `o` (eu) with an edge `e` (eu), `a` and `b` in us, and a
    /// draining `d` in ap.
    async fn cluster() -> Fixture {
        let f = Fixture::new().await;
        for (id, region, draining) in [
            ("o", "eu", false),
            ("e", "eu", false),
            ("a", "us", false),
            ("b", "us", false),
            ("d", "ap", true),
        ] {
            f.node(id, region, draining).await;
        }
        f.api
            .publish(v1::PublishRequest {
                stream: "s".into(),
                node_id: "o".into(),
            })
            .await
            .unwrap();
        f.settle().await;
        f
    }

    #[tokio::test]
    async fn the_steady_state_is_the_full_paths_answer_without_writes() {
        let f = cluster().await;
        // Only the main origin needs nothing written for its first resolve.
        assert!(f.cached(&req("o", "eu")).is_some());
        for (node, region) in [("e", "eu"), ("a", "us"), ("b", "us"), ("d", "ap")] {
            assert_eq!(f.cached(&req(node, region)), None, "{node}");
        }
        let callers = [
            ("o", "eu", v1::Role::MainOrigin, None),
            ("e", "eu", v1::Role::Edge, Some("o")),
            ("a", "us", v1::Role::RegionalOrigin, Some("o")),
            ("b", "us", v1::Role::Edge, Some("a")),
            ("d", "ap", v1::Role::Edge, Some("o")),
        ];
        for (node, region, ..) in callers {
            f.full(&req(node, region)).await.unwrap();
        }
        let rev = f.settle().await;

        for (node, region, role, upstream) in callers {
            let r = req(node, region);
            let before = f.counts();
            let fast = f.cached(&r).expect("answered from the cache");
            let counted = f.counts();
            let full = f.full(&r).await.unwrap();
            assert_eq!(fast, full, "{node}");
            assert_eq!(fast.role, role as i32, "{node}");
            assert_eq!(
                fast.upstream.as_ref().map(|u| u.node_id.as_str()),
                upstream,
                "{node}"
            );
            // Counted as the full path counts the same answer.
            let after = f.counts();
            for i in 0..4 {
                assert_eq!(counted[i] - before[i], after[i] - counted[i], "{node} {i}");
            }
        }
        assert_eq!(f.settle().await, rev, "nothing written");
    }

    #[tokio::test]
    async fn anything_else_takes_the_full_path() {
        let f = cluster().await;
        for (node, region) in [("a", "us"), ("b", "us")] {
            f.full(&req(node, region)).await.unwrap();
        }
        f.settle().await;
        assert!(f.cached(&req("b", "us")).is_some());

        // Not the caller's region, not registered, not live: the full path
        // answers (with an error).
        assert_eq!(f.cached(&req("b", "eu")), None);
        assert!(matches!(
            f.full(&req("b", "eu")).await,
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(f.cached(&req("x", "us")), None);
        assert!(matches!(
            f.full(&req("x", "us")).await,
            Err(Error::FailedPrecondition(_))
        ));
        let other = v1::ResolveRequest {
            stream: "t".into(),
            ..req("b", "us")
        };
        assert_eq!(f.cached(&other), None);
        assert!(matches!(f.full(&other).await, Err(Error::NotFound(_))));

        // The regional origin reported unreachable at its epoch: a claim.
        let epoch = f.cached(&req("a", "us")).unwrap().epoch;
        let report = v1::ResolveRequest {
            unreachable: Some(v1::Upstream {
                node_id: "a".into(),
                region: "us".into(),
                relay_addr: String::new(),
                epoch,
            }),
            ..req("b", "us")
        };
        assert_eq!(f.cached(&report), None);
        let claimed = f.full(&report).await.unwrap();
        assert_eq!(claimed.role, v1::Role::RegionalOrigin as i32);
        assert!(claimed.epoch > epoch);
        f.settle().await;
        // A late report of the old epoch changes nothing, from the cache.
        assert_eq!(
            f.cached(&report).map(|r| r.role),
            Some(v1::Role::RegionalOrigin as i32)
        );

        // The deposed holder has no subscriber record yet: written once.
        assert_eq!(f.cached(&req("a", "us")), None);
        let edge = f.full(&req("a", "us")).await.unwrap();
        f.settle().await;
        assert_eq!(f.cached(&req("a", "us")), Some(edge));
    }
}
