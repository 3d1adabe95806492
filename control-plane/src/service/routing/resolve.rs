//! Resolve: where a node gets a stream from (the steady state from the cache, else the
//! general path: store reads on cache misses, claims, subscriber records).

use std::sync::Arc;

use tracing::{debug, info};

use strata_proto::v1;

use super::{RoutingApi, check_stream, upstream, upstream_main, upstream_regional, versioned};
use crate::cache::{StreamState, Versioned};
use crate::election::{Decision, decide};
use crate::error::{Error, Result};
use crate::keys::{self, MainRecord, NodeRecord, RegionalRecord, SubscriberRecord};
use crate::kv::Op;
use crate::service::convert;
use strata_common::names::{self, NameKind};

/// Attempts of one resolve under contention before giving up.
const MAX_ATTEMPTS: usize = 5;

/// A stream's main origin record, as cached or read.
type Main = Option<Arc<Versioned<MainRecord>>>;
/// A region's origin record of a stream, as cached or read.
type Regional = Option<Arc<Versioned<RegionalRecord>>>;

/// What one attempt of the general resolve is about; `node` registered in `region`.
struct Attempt<'a> {
    stream: &'a str,
    region: &'a str,
    node: &'a NodeRecord,
    unreachable: Option<(&'a str, i64)>,
}

/// Where one attempt of the general resolve ended.
enum Step {
    /// The answer.
    Done(v1::ResolveResponse),
    /// Decide again on these records (a claim was lost, or a record the
    /// decision named was missing).
    Again(Main, Regional),
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
    pub(super) async fn resolve(&self, req: v1::ResolveRequest) -> Result<v1::ResolveResponse> {
        check_stream(&self.state, &req.stream)?;
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
    pub(super) async fn resolve_full(
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
        let (mut main, mut regional) = self.records(stream, region).await?;
        let at = Attempt {
            stream,
            region,
            node,
            unreachable,
        };
        for _ in 0..MAX_ATTEMPTS {
            match self.attempt(&at, main, regional).await? {
                Step::Done(answer) => return Ok(answer),
                Step::Again(m, r) => (main, regional) = (m, r),
            }
        }
        Err(Error::Unavailable(format!(
            "stream {stream:?} region {region:?}: origin changed during every attempt; retry"
        )))
    }

    /// The stream's main origin and the region's origin records: from the
    /// cache, or from the store when the cache has no main origin.
    async fn records(&self, stream: &str, region: &str) -> Result<(Main, Regional)> {
        let s = &self.state;
        let (main, regional) = {
            let view = s.cache().read();
            let st = view.streams.get(stream);
            (
                st.and_then(|st| st.main.clone()),
                st.and_then(|st| st.regions.get(region).cloned()),
            )
        };
        if main.is_some() {
            s.metrics().cache_hits.inc();
            return Ok((main, regional));
        }
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
        let main = versioned(gets.next().flatten());
        let regional = versioned(gets.next().flatten());
        Ok((main, regional))
    }

    /// Decides on `main` and `regional` (first from the cache; after a lost
    /// transaction, from what it read) and acts on the decision.
    async fn attempt(&self, at: &Attempt<'_>, main: Main, regional: Regional) -> Result<Step> {
        let (s, stream, node) = (&self.state, at.stream, at.node);
        let decision = {
            let view = s.cache().read();
            let is_live = |n: &str| view.nodes.contains_key(n);
            decide(
                main.as_deref(),
                regional.as_deref(),
                &node.id,
                at.region,
                at.unreachable,
                &is_live,
            )
        };
        let Some(m) = main.as_deref() else {
            return Err(Error::NotFound(format!("stream {stream:?} is not live")));
        };
        match decision {
            Decision::NotLive => Err(Error::NotFound(format!("stream {stream:?} is not live"))),
            Decision::Main => {
                s.metrics().resolves_cached.inc();
                Ok(Step::Done(answer(
                    stream,
                    m,
                    v1::Role::MainOrigin,
                    None,
                    m.epoch(),
                )))
            }
            Decision::PullFromMain => self.pull_from_main(stream, node, m).await,
            Decision::HoldsRegional => match regional.as_deref() {
                None => Ok(Step::Again(main.clone(), regional.clone())),
                Some(r) => self.holds_regional(at, m, r).await,
            },
            Decision::PullFromRegional(holder) => {
                let Some(r) = regional.as_deref() else {
                    return Ok(Step::Again(main.clone(), regional.clone()));
                };
                self.ensure_subscriber(stream, node, holder).await?;
                let up = upstream_regional(at.region, r);
                Ok(Step::Done(answer(
                    stream,
                    m,
                    v1::Role::Edge,
                    Some(up),
                    r.epoch(),
                )))
            }
            // A draining node must not become an origin (it is about to
            // leave): it pulls from the main origin directly until then.
            Decision::Claim { .. } if node.draining => self.pull_from_main(stream, node, m).await,
            Decision::Claim { replace } => {
                let avoid = at.unreachable.map(|(n, _)| n);
                let (won, m2, r2, up) = self
                    .claim(stream, at.region, node, m, replace, avoid)
                    .await?;
                if !won {
                    s.metrics().claims_lost.inc();
                    debug!(%stream, region = %at.region, node = %node.id,
                        "regional claim lost; re-deciding");
                    return Ok(Step::Again(m2, r2));
                }
                s.metrics().claims_won.inc();
                let epoch = r2.as_ref().map(|r| r.epoch()).unwrap_or(0);
                info!(%stream, region = %at.region, node = %node.id, epoch,
                    upstream = %up.node_id, upstream_region = %up.region, "regional origin claimed");
                Ok(Step::Done(answer(
                    stream,
                    m,
                    v1::Role::RegionalOrigin,
                    Some(up),
                    epoch,
                )))
            }
        }
    }

    /// `node` pulls the stream from the main origin as an edge.
    async fn pull_from_main(
        &self,
        stream: &str,
        node: &NodeRecord,
        m: &Versioned<MainRecord>,
    ) -> Result<Step> {
        self.ensure_subscriber(stream, node, &m.value.node_id)
            .await?;
        let up = upstream_main(m);
        Ok(Step::Done(answer(
            stream,
            m,
            v1::Role::Edge,
            Some(up),
            m.epoch(),
        )))
    }

    /// The caller holds the region's origin record `r`: it keeps its upstream
    /// while that is still usable, else it is re-parented.
    async fn holds_regional(
        &self,
        at: &Attempt<'_>,
        m: &Versioned<MainRecord>,
        r: &Versioned<RegionalRecord>,
    ) -> Result<Step> {
        let (s, stream, region, node) = (&self.state, at.stream, at.region, at.node);
        let held = {
            let view = s.cache().read();
            upstream::held_upstream(s, &view, stream, m, &r.value, at.unreachable)
        };
        if let Some(up) = held {
            s.metrics().resolves_cached.inc();
            let epoch = r.epoch();
            return Ok(Step::Done(answer(
                stream,
                m,
                v1::Role::RegionalOrigin,
                Some(up),
                epoch,
            )));
        }
        // Its upstream region's origin died, drained or moved:
        // re-parent by the same rule, in place (guarded on the
        // record being still this one).
        let avoid = at.unreachable.map(|(n, _)| n);
        let (won, m2, r2, up) = self
            .claim(stream, region, node, m, r.mod_revision, avoid)
            .await?;
        if !won {
            return Ok(Step::Again(m2, r2));
        }
        let epoch = r2.as_ref().map(|r| r.epoch()).unwrap_or(0);
        info!(%stream, %region, node = %node.id, epoch, upstream = %up.node_id,
            upstream_region = %up.region, "regional origin re-parented");
        Ok(Step::Done(answer(
            stream,
            m,
            v1::Role::RegionalOrigin,
            Some(up),
            epoch,
        )))
    }

    /// The steady state under one read guard of the cache, copying no record:
    /// the caller is registered in the region it names, the main origin is
    /// cached, and the answer needs no write (no claim, and an edge's
    /// subscriber record is cached as it would be written). It counts what
    /// the full path counts for that answer. `None` whenever anything else
    /// holds; the full path then decides, reading the cache afresh and the
    /// store where the cache misses.
    pub(super) fn resolve_cached(
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
}
