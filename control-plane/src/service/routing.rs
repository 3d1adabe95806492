//! `strata.v1.RoutingService`: publish, resolve, release, watch, list.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use strata_proto::v1::{self, routing_service_server::RoutingService};

use super::{State, convert, now_ms};
use crate::cache::Versioned;
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

fn versioned<T: for<'de> serde::Deserialize<'de>>(kv: Option<KeyValue>) -> Option<Versioned<T>> {
    let kv = kv?;
    Some(Versioned {
        value: keys::decode(&kv.value)?,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    })
}

fn upstream_main(m: &Versioned<MainRecord>) -> v1::Upstream {
    v1::Upstream {
        node_id: m.value.node_id.clone(),
        region: m.value.region.clone(),
        relay_addr: m.value.relay_addr.clone(),
        epoch: m.epoch(),
    }
}

impl RoutingApi {
    async fn publish(&self, req: v1::PublishRequest) -> Result<v1::PublishResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream)?;
        let node = s.caller(&req.node_id).await?;
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
        let current: Versioned<MainRecord> = versioned(out.gets.into_iter().next().flatten())
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
        let node = s.caller(&req.node_id).await?;
        if node.region != req.region {
            return Err(Error::InvalidArgument(format!(
                "region {:?} is not the region node {:?} registered in ({:?})",
                req.region, node.id, node.region
            )));
        }
        s.metrics().resolves.inc();
        let unreachable = req
            .unreachable
            .as_ref()
            .map(|u| (u.node_id.as_str(), u.epoch));
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
                    main.as_ref(),
                    regional.as_ref(),
                    &node.id,
                    region,
                    unreachable,
                    &is_live,
                )
            };
            let Some(m) = main.as_ref() else {
                return Err(Error::NotFound(format!("stream {stream:?} is not live")));
            };
            let answer =
                |role: v1::Role, upstream: Option<v1::Upstream>, epoch: i64| v1::ResolveResponse {
                    role: role as i32,
                    upstream,
                    epoch,
                    main: Some(convert::main_origin(stream, m)),
                };
            match decision {
                Decision::NotLive => {
                    return Err(Error::NotFound(format!("stream {stream:?} is not live")));
                }
                Decision::Main => {
                    s.metrics().resolves_cached.inc();
                    return Ok(answer(v1::Role::MainOrigin, None, m.epoch()));
                }
                Decision::PullFromMain => {
                    self.ensure_subscriber(stream, &node, &m.value.node_id)
                        .await?;
                    let up = upstream_main(m);
                    return Ok(answer(v1::Role::Edge, Some(up), m.epoch()));
                }
                Decision::HoldsRegional => {
                    let Some(r) = regional.as_ref() else { continue };
                    s.metrics().resolves_cached.inc();
                    return Ok(answer(
                        v1::Role::RegionalOrigin,
                        Some(upstream_main(m)),
                        r.epoch(),
                    ));
                }
                Decision::PullFromRegional(holder) => {
                    let Some(r) = regional.as_ref() else { continue };
                    self.ensure_subscriber(stream, &node, &holder).await?;
                    let up = v1::Upstream {
                        node_id: holder,
                        region: region.to_owned(),
                        relay_addr: r.value.relay_addr.clone(),
                        epoch: r.epoch(),
                    };
                    return Ok(answer(v1::Role::Edge, Some(up), r.epoch()));
                }
                Decision::Claim { .. } if node.draining => {
                    // A draining node must not become an origin (it is about to
                    // leave): it pulls from the main origin directly until then.
                    self.ensure_subscriber(stream, &node, &m.value.node_id)
                        .await?;
                    let up = upstream_main(m);
                    return Ok(answer(v1::Role::Edge, Some(up), m.epoch()));
                }
                Decision::Claim { replace } => {
                    let (won, m2, r2) = self.claim(stream, region, &node, m, replace).await?;
                    if won {
                        s.metrics().claims_won.inc();
                        let epoch = r2.as_ref().map(|r| r.epoch()).unwrap_or(0);
                        info!(%stream, %region, node = %node.id, epoch, "regional origin claimed");
                        return Ok(answer(
                            v1::Role::RegionalOrigin,
                            Some(upstream_main(m)),
                            epoch,
                        ));
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
        Option<Versioned<MainRecord>>,
        Option<Versioned<RegionalRecord>>,
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
        let record = SubscriberRecord {
            region: node.region.clone(),
            upstream_node_id: upstream.into(),
        };
        let present = {
            let view = s.cache().read();
            view.streams
                .get(stream)
                .and_then(|st| st.subscribers.get(&node.id))
                .is_some_and(|v| v.value == record)
        };
        if present {
            s.metrics().resolves_cached.inc();
            return Ok(());
        }
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
