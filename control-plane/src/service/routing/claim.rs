//! A region's origin: the guarded claim (or re-parenting in place) and its release.

use std::sync::Arc;

use tracing::info;

use strata_proto::v1;

use super::{RoutingApi, check_stream_node, upstream, versioned};
use crate::cache::Versioned;
use crate::error::Result;
use crate::keys::{self, MainRecord, NodeRecord, RegionalRecord};
use crate::kv::{Compare, Op};

impl RoutingApi {
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
    pub(super) async fn claim(
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

    pub(super) async fn release(&self, req: v1::ReleaseRequest) -> Result<v1::ReleaseResponse> {
        let s = &self.state;
        check_stream_node(s, &req.stream, &req.node_id)?;
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
}
