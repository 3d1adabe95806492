//! Publish: claiming a stream's main origin, and taking it over from a holder
//! that is dead (ARCHITECTURE.md, "Taking over a dead main origin").

use tracing::info;

use strata_proto::v1;

use super::{RoutingApi, create_or_read, versioned};
use crate::cache::Versioned;
use crate::election::{PublishDecision, decide_publish};
use crate::error::{Error, Result};
use crate::keys::{self, MainRecord, NodeRecord};
use crate::kv::{Compare, Op};
use crate::service::{convert, now_ms};
use strata_common::names::{self, NameKind};

impl RoutingApi {
    pub(super) async fn publish(&self, req: v1::PublishRequest) -> Result<v1::PublishResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream)?;
        let _slot = s.admit_claim().await?;
        let node = s.caller(&req.node_id).await?;
        let node = &node.value;
        let stream = req.stream.as_str();
        let key = s.keys().main(stream);
        let (created, current) =
            create_or_read(s, key, &main_record(node), node.lease, "main origin record").await?;
        if created {
            // No wait for the cache here: a resolve that misses the main
            // origin in the cache confirms with the store.
            s.metrics().publishes.inc();
            info!(%stream, node = %node.id, epoch = current.epoch(), "stream published");
            return Ok(response(stream, &current));
        }
        let unreachable = req
            .unreachable
            .as_ref()
            .map(|u| (u.node_id.as_str(), u.epoch));
        // Registered, confirmed with the store on a cache miss: a holder
        // registered through another replica a moment ago is alive.
        let holder_live = s.node(&current.value.node_id).await?.is_some();
        let is_live = |n: &str| n != current.value.node_id || holder_live;
        match decide_publish(Some(&current), &node.id, unreachable, &is_live) {
            PublishDecision::Holds | PublishDecision::Create => Ok(response(stream, &current)),
            PublishDecision::Refuse => Err(live_elsewhere(stream, &current)),
            PublishDecision::TakeOver { replace } => {
                self.take_over(stream, node, &current, replace).await
            }
        }
    }

    /// Replaces a dead holder's main origin record, guarded by its epoch.
    /// The caller's region stops having a regional origin (the main origin is
    /// that region's origin) and the caller stops being a subscriber, in the
    /// same transaction, so the tree never shows either beside the new main
    /// origin. Other regions' records, claimed under the old epoch, are stale
    /// and replaced by their next resolve.
    async fn take_over(
        &self,
        stream: &str,
        node: &NodeRecord,
        old: &Versioned<MainRecord>,
        replace: i64,
    ) -> Result<v1::PublishResponse> {
        let s = &self.state;
        let key = s.keys().main(stream);
        let then = vec![
            Op::Put {
                key: key.clone(),
                value: keys::encode(&main_record(node)),
                lease: node.lease,
            },
            Op::Delete(s.keys().regional(stream, &node.region)),
            Op::Delete(s.keys().subscriber(stream, &node.id)),
            Op::Get(key.clone()),
        ];
        let out = s
            .kv()
            .txn(
                vec![Compare::ModRevision(key.clone(), replace)],
                then,
                vec![Op::Get(key)],
            )
            .await?;
        let Some(current) = versioned::<MainRecord>(out.gets.into_iter().last().flatten()) else {
            // Gone meanwhile (the old lease expired): an ordinary publish.
            return Err(Error::Unavailable(format!(
                "stream {stream:?}: main origin changed during the takeover; retry"
            )));
        };
        if !out.succeeded {
            // Someone else was faster (another takeover, or the lease expired
            // and a plain publish won): the record is not ours.
            if current.value.node_id == node.id {
                return Ok(response(stream, &current));
            }
            return Err(live_elsewhere(stream, &current));
        }
        // The replica's next resolve and GetStream must see the new main origin and the
        // records removed with it (a takeover is rare; a plain publish does not wait).
        s.cache().wait_for(out.revision, s.config().lease_ttl).await;
        s.metrics().publishes.inc();
        s.metrics().main_takeovers.inc();
        info!(%stream, node = %node.id, dead = %old.value.node_id, old_epoch = replace,
            epoch = current.epoch(), "main origin taken over from a dead holder");
        Ok(response(stream, &current))
    }
}

fn main_record(node: &NodeRecord) -> MainRecord {
    MainRecord {
        node_id: node.id.clone(),
        region: node.region.clone(),
        relay_addr: node.relay_addr.clone(),
        started_at_ms: now_ms(),
    }
}

fn response(stream: &str, m: &Versioned<MainRecord>) -> v1::PublishResponse {
    v1::PublishResponse {
        origin: Some(convert::main_origin(stream, m)),
    }
}

fn live_elsewhere(stream: &str, m: &Versioned<MainRecord>) -> Error {
    Error::AlreadyExists(format!(
        "stream {stream:?} is already live on node {:?} (region {:?})",
        m.value.node_id, m.value.region
    ))
}
