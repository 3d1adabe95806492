//! Redundant ingest: a stream's standby record (the node of its backup
//! publisher) and the switch that makes the standby the main origin
//! (ARCHITECTURE.md, "Redundant ingest").
//!
//! The rule: the standby holder decides when to switch (its primary went
//! silent, its relay connection failed, or the main record went), and the
//! switch is one transaction guarded by both records' epochs, so at most one
//! main origin record exists whatever the nodes believe. The old main
//! origin's node learns from its topology watch that it lost the record.

use tracing::info;

use strata_proto::v1;

use super::{RoutingApi, check_end, check_stream, create_or_read, main_record, versioned};
use crate::cache::Versioned;
use crate::error::{Error, Result};
use crate::keys::{self, MainRecord, NodeRecord, StandbyRecord};
use crate::kv::{Compare, Op};
use crate::service::{convert, now_ms};

/// Why a standby switches, as a switch request names it.
const REASONS: [&str; 4] = ["gone", "silent", "unreachable", "operator"];

impl RoutingApi {
    pub(super) async fn standby(&self, req: v1::StandbyRequest) -> Result<v1::StandbyResponse> {
        let s = &self.state;
        let node = self.checked_caller(&req.stream, &req.node_id).await?;
        let node = &node.value;
        let stream = req.stream.as_str();
        let (key, main_key) = (s.keys().standby(stream), s.keys().main(stream));
        let main = versioned::<MainRecord>(s.kv().get(&main_key).await?);
        if main.as_ref().is_some_and(|m| m.value.node_id == node.id) {
            return Err(Error::FailedPrecondition(format!(
                "node {:?} is the main origin of stream {stream:?}: a backup publisher \
                 must use another node",
                node.id
            )));
        }
        let record = StandbyRecord {
            node_id: node.id.clone(),
            region: node.region.clone(),
            relay_addr: node.relay_addr.clone(),
            started_at_ms: now_ms(),
        };
        let (created, current) =
            create_or_read(s, key, &record, node.lease, "standby record").await?;
        if current.value.node_id != node.id {
            return Err(Error::AlreadyExists(format!(
                "stream {stream:?} already has a backup publisher (on node {:?})",
                current.value.node_id
            )));
        }
        if created {
            info!(%stream, node = %node.id, epoch = current.epoch(), "standby registered");
        }
        Ok(v1::StandbyResponse {
            standby: Some(standby_origin(stream, &current)),
            main: main.map(|m| convert::main_origin(stream, &m)),
        })
    }

    pub(super) async fn release_standby(
        &self,
        req: v1::ReleaseStandbyRequest,
    ) -> Result<v1::ReleaseStandbyResponse> {
        let s = &self.state;
        let what = ("standby record", "Standby");
        check_end(s, &req.stream, &req.node_id, req.epoch, what)?;
        let key = s.keys().standby(&req.stream);
        let guard = vec![Compare::ModRevision(key.clone(), req.epoch)];
        s.kv().txn(guard, vec![Op::Delete(key)], Vec::new()).await?;
        Ok(v1::ReleaseStandbyResponse {})
    }

    pub(super) async fn switch_to_standby(
        &self,
        req: v1::SwitchToStandbyRequest,
    ) -> Result<v1::SwitchToStandbyResponse> {
        let s = &self.state;
        check_stream(s, &req.stream)?;
        let reason = REASONS
            .iter()
            .find(|r| **r == req.reason)
            .ok_or_else(|| Error::InvalidArgument(format!("reason must be one of {REASONS:?}")))?;
        if req.standby_epoch <= 0 || req.main_epoch < 0 {
            return Err(Error::InvalidArgument(
                "standby_epoch is required and main_epoch may not be negative".into(),
            ));
        }
        let node = s.caller(&req.node_id).await?;
        let node = &node.value;
        let stream = req.stream.as_str();
        let key = s.keys().standby(stream);
        let held = versioned::<StandbyRecord>(s.kv().get(&key).await?);
        if !held.is_some_and(|h| h.value.node_id == node.id && h.epoch() == req.standby_epoch) {
            return Err(Error::FailedPrecondition(format!(
                "node {:?} does not hold the standby of stream {stream:?} at epoch {}",
                node.id, req.standby_epoch
            )));
        }
        self.switch(stream, node, req.standby_epoch, req.main_epoch, reason)
            .await
    }

    /// An operator's switch to the standby, on the records as stored now.
    pub(super) async fn switch_publisher(
        &self,
        req: v1::SwitchPublisherRequest,
    ) -> Result<v1::SwitchToStandbyResponse> {
        let s = &self.state;
        check_stream(s, &req.stream)?;
        let stream = req.stream.as_str();
        let held = versioned::<StandbyRecord>(s.kv().get(&s.keys().standby(stream)).await?);
        let main = versioned::<MainRecord>(s.kv().get(&s.keys().main(stream)).await?);
        let (Some(held), Some(main)) = (held, main) else {
            return Err(Error::NotFound(format!(
                "stream {stream:?} has no standby or is not live"
            )));
        };
        let Some(node) = s.node(&held.value.node_id).await? else {
            return Err(Error::FailedPrecondition(format!(
                "the standby's node {:?} is not registered",
                held.value.node_id
            )));
        };
        self.switch(stream, &node.value, held.epoch(), main.epoch(), "operator")
            .await
    }

    /// Makes `node`, the standby at `standby_epoch`, the main origin in place
    /// of the record at `main_epoch` (0: none), in one guarded transaction.
    async fn switch(
        &self,
        stream: &str,
        node: &NodeRecord,
        standby_epoch: i64,
        main_epoch: i64,
        reason: &str,
    ) -> Result<v1::SwitchToStandbyResponse> {
        let s = &self.state;
        let (key, main_key) = (s.keys().standby(stream), s.keys().main(stream));
        let then = vec![
            Op::Put {
                key: main_key.clone(),
                value: keys::encode(&main_record(node)),
                lease: node.lease,
            },
            Op::Delete(key.clone()),
            Op::Delete(s.keys().regional(stream, &node.region)),
            Op::Delete(s.keys().subscriber(stream, &node.id)),
            Op::Get(main_key.clone()),
        ];
        let guard = vec![
            Compare::ModRevision(key, standby_epoch),
            Compare::ModRevision(main_key.clone(), main_epoch),
        ];
        let out = s.kv().txn(guard, then, vec![Op::Get(main_key)]).await?;
        let current = versioned::<MainRecord>(out.gets.into_iter().last().flatten());
        let current = match current {
            Some(c) if out.succeeded => c,
            other => {
                return Err(Error::FailedPrecondition(format!(
                    "stream {stream:?}: the main origin moved (now {:?}) or the standby \
                     changed; look again",
                    other.map(|c| (c.value.node_id.clone(), c.epoch()))
                )));
            }
        };
        // As after a takeover: the replica's next resolve and GetStream see the switch.
        s.cache().wait_for(out.revision, s.config().lease_ttl).await;
        s.metrics().publishes.inc();
        s.metrics().standby_switches.inc();
        info!(%stream, node = %node.id, reason, old_epoch = main_epoch,
            epoch = current.epoch(), "main origin switched to the standby");
        Ok(v1::SwitchToStandbyResponse {
            origin: Some(convert::main_origin(stream, &current)),
        })
    }
}

/// A standby record as the API shows it.
pub(crate) fn standby_origin(stream: &str, r: &Versioned<StandbyRecord>) -> v1::StandbyOrigin {
    v1::StandbyOrigin {
        stream: stream.to_owned(),
        node_id: r.value.node_id.clone(),
        region: r.value.region.clone(),
        relay_addr: r.value.relay_addr.clone(),
        epoch: r.epoch(),
        started_at_ms: r.value.started_at_ms,
    }
}
