//! Publish: claiming a stream's main origin, and taking it over from a holder
//! that is dead (ARCHITECTURE.md, "Taking over a dead main origin"); Unpublish:
//! ending it at the epoch the caller holds.

use tracing::info;

use strata_proto::v1;

use super::{RoutingApi, check_end, create_or_read, main_record, versioned};
use crate::cache::Versioned;
use crate::election::{PublishDecision, decide_publish};
use crate::error::{Error, Result};
use crate::keys::{self, MainRecord, NodeRecord};
use crate::kv::{Compare, Op};
use crate::service::convert;

impl RoutingApi {
    pub(super) async fn publish(&self, req: v1::PublishRequest) -> Result<v1::PublishResponse> {
        let s = &self.state;
        let node = self.checked_caller(&req.stream, &req.node_id).await?;
        let _slot = s.admit_claim().await?;
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

    pub(super) async fn unpublish(
        &self,
        req: v1::UnpublishRequest,
    ) -> Result<v1::UnpublishResponse> {
        let s = &self.state;
        let what = ("main origin record", "Publish");
        check_end(s, &req.stream, &req.node_id, req.epoch, what)?;
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
