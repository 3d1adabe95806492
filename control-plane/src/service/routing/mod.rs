//! `strata.v1.RoutingService`: publish, resolve, release, watch, list.

use std::sync::Arc;

use tracing::{debug, info};

use strata_proto::v1;

use super::{State, convert};
use crate::cache::{StreamState, Versioned};
use crate::election::{Decision, decide};
use crate::error::{Error, Result};
use crate::keys::{self, MainRecord, NodeRecord, RegionalRecord, SubscriberRecord};
use crate::kv::{Compare, KeyValue, Op};
use strata_common::names::{self, NameKind};

mod grpc;
mod publish;
mod standby;
pub(crate) use standby::standby_origin;
#[cfg(test)]
mod tests;
pub(crate) mod upstream;

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

/// Creates `key` with `value` (bound to `lease`) unless it exists: whether it was created, and
/// the record as it stands after the transaction (ours, or the one that was there). `what`
/// names the record in the error when it cannot be read back.
pub(super) async fn create_or_read<T: serde::Serialize + for<'de> serde::Deserialize<'de>>(
    s: &State,
    key: String,
    value: &T,
    lease: i64,
    what: &str,
) -> Result<(bool, Arc<Versioned<T>>)> {
    let put = Op::Put {
        key: key.clone(),
        value: keys::encode(value),
        lease,
    };
    let out = s
        .kv()
        .txn(
            vec![Compare::CreateRevision(key.clone(), 0)],
            vec![put, Op::Get(key.clone())],
            vec![Op::Get(key)],
        )
        .await?;
    let current = versioned(out.gets.into_iter().next().flatten())
        .ok_or_else(|| Error::Internal(format!("{what} unreadable")))?;
    Ok((out.succeeded, current))
}

pub(super) fn versioned<T: for<'de> serde::Deserialize<'de>>(
    kv: Option<KeyValue>,
) -> Option<Arc<Versioned<T>>> {
    let kv = kv?;
    Some(Arc::new(Versioned {
        value: keys::decode(&kv.value)?,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }))
}

pub(super) fn upstream_main(m: &Versioned<MainRecord>) -> v1::Upstream {
    v1::Upstream {
        node_id: m.value.node_id.clone(),
        region: m.value.region.clone(),
        relay_addr: m.value.relay_addr.clone(),
        epoch: m.epoch(),
    }
}

pub(super) fn upstream_regional(region: &str, r: &Versioned<RegionalRecord>) -> v1::Upstream {
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
    async fn unpublish(&self, req: v1::UnpublishRequest) -> Result<v1::UnpublishResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream)?;
        names::validate(NameKind::Node, &req.node_id)?;
        if req.epoch <= 0 {
            return Err(Error::InvalidArgument(
                "epoch is required: the main origin record's epoch as Publish returned it".into(),
            ));
        }
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
        if current.epoch() != req.epoch {
            // The claim the caller means is gone and the stream was published
            // again since (an old session's cleanup racing a reconnect): the
            // live record is not the caller's to end.
            info!(stream = %req.stream, node = %req.node_id, stale = req.epoch,
                current = current.epoch(), "unpublish of an older epoch; nothing deleted");
            return Ok(v1::UnpublishResponse {});
        }
        // Guarded on the caller's epoch, not on what was just read: the read
        // only tells whose record it is.
        let guard = vec![Compare::ModRevision(key, req.epoch)];
        let all = Op::DeletePrefix(s.keys().stream(&req.stream));
        let out = s.kv().txn(guard, vec![all], Vec::new()).await?;
        if out.succeeded {
            s.cache().wait_for(out.revision, s.config().lease_ttl).await;
            info!(stream = %req.stream, node = %req.node_id, epoch = req.epoch, "stream unpublished");
        } else {
            info!(stream = %req.stream, node = %req.node_id, stale = req.epoch,
                "main origin record changed during unpublish; nothing deleted");
        }
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
        // What the cache cannot answer may claim: it needs a slot (admission.rs).
        let _slot = self.state.admit_claim().await?;
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
                    let held = {
                        let view = s.cache().read();
                        upstream::held_upstream(s, &view, stream, m, &r.value, unreachable)
                    };
                    if let Some(up) = held {
                        s.metrics().resolves_cached.inc();
                        let epoch = r.epoch();
                        return Ok(answer(stream, m, v1::Role::RegionalOrigin, Some(up), epoch));
                    }
                    // Its upstream region's origin died, drained or moved:
                    // re-parent by the same rule, in place (guarded on the
                    // record being still this one).
                    let avoid = unreachable.map(|(n, _)| n);
                    let (won, m2, r2, up) = self
                        .claim(stream, region, node, m, r.mod_revision, avoid)
                        .await?;
                    if won {
                        let epoch = r2.as_ref().map(|r| r.epoch()).unwrap_or(0);
                        info!(%stream, %region, node = %node.id, epoch, upstream = %up.node_id,
                            upstream_region = %up.region, "regional origin re-parented");
                        return Ok(answer(stream, m, v1::Role::RegionalOrigin, Some(up), epoch));
                    }
                    main = m2;
                    regional = r2;
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
                    let avoid = unreachable.map(|(n, _)| n);
                    let (won, m2, r2, up) =
                        self.claim(stream, region, node, m, replace, avoid).await?;
                    if won {
                        s.metrics().claims_won.inc();
                        let epoch = r2.as_ref().map(|r| r.epoch()).unwrap_or(0);
                        info!(%stream, %region, node = %node.id, epoch, upstream = %up.node_id,
                            upstream_region = %up.region, "regional origin claimed");
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
                    let r = regional?;
                    let up = upstream::held_upstream(
                        &self.state,
                        &view,
                        stream,
                        m,
                        &r.value,
                        unreachable,
                    )?;
                    answer(stream, m, v1::Role::RegionalOrigin, Some(up), r.epoch())
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

    /// One guarded claim of a region's origin (or, with `replace` naming
    /// the caller's own record, a re-parenting in place), pulling from the
    /// upstream the region graph chooses now. Returns whether it was won,
    /// the main and regional records as the store holds them afterwards, and
    /// the chosen upstream. `avoid` is a node the caller reported
    /// unreachable: never chosen.
    ///
    /// The choice's chain (the parent's record and each of its upstreams')
    /// is part of the guard: the claim commits only if every record on the
    /// way to the main origin is still the one the choice read, none of
    /// which passes through this region, so two regions claiming at the same
    /// moment can never pull from each other.
    async fn claim(
        &self,
        stream: &str,
        region: &str,
        node: &NodeRecord,
        main: &Versioned<MainRecord>,
        replace: i64,
        avoid: Option<&str>,
    ) -> Result<(
        bool,
        Option<Arc<Versioned<MainRecord>>>,
        Option<Arc<Versioned<RegionalRecord>>>,
        v1::Upstream,
    )> {
        let s = &self.state;
        let (main_key, reg_key) = (s.keys().main(stream), s.keys().regional(stream, region));
        let picked = {
            let view = s.cache().read();
            upstream::choose(s, &view, stream, main, region, avoid)
        };
        let record = RegionalRecord {
            node_id: node.id.clone(),
            relay_addr: node.relay_addr.clone(),
            upstream_node_id: picked.upstream.node_id.clone(),
            main_epoch: main.epoch(),
            upstream_region: picked.choice.parent.clone(),
            depth: picked.choice.depth,
        };
        let mut guard = vec![
            Compare::ModRevision(main_key.clone(), main.epoch()),
            if replace == 0 {
                Compare::CreateRevision(reg_key.clone(), 0)
            } else {
                Compare::ModRevision(reg_key.clone(), replace)
            },
        ];
        guard.extend(
            picked
                .choice
                .chain
                .iter()
                .map(|(r, rev)| Compare::ModRevision(s.keys().regional(stream, r), *rev)),
        );
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
        let m = versioned::<MainRecord>(gets.next().flatten());
        let r = versioned::<RegionalRecord>(gets.next().flatten());
        // Won: the claimant's watch is served from the cache. Lost to a record
        // of the chosen chain that moved: the next choice, made from the
        // cache, must see it. Lost to another claim of the region: the next
        // decision has that record from the transaction and needs no wait.
        let lost_to_claim = r
            .as_ref()
            .is_some_and(|r| r.mod_revision != replace && r.value.node_id != node.id);
        if out.succeeded || !lost_to_claim {
            s.cache().wait_for(out.revision, s.config().lease_ttl).await;
        }
        Ok((out.succeeded, m, r, picked.upstream))
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
        let regional = st
            .and_then(|st| st.regions.get(region))
            .filter(|r| main.is_some_and(|m| m.epoch() == r.value.main_epoch));
        v1::StreamTopology {
            live: main.is_some(),
            main: main.map(|m| convert::main_origin(stream, m)),
            regional: regional.map(|r| convert::regional(stream, region, r)),
            revision: view.revision,
            // The record of the region this one pulls from, so that its
            // regional origin learns when that one goes.
            upstream: regional
                .and_then(|r| r.value.upstream_region.as_deref())
                .and_then(|p| Some((p, st?.regions.get(p)?)))
                .map(|(p, r)| convert::regional(stream, p, r)),
        }
    }
}
