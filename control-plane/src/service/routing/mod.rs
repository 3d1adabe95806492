//! `strata.v1.RoutingService`: publish, resolve, release, watch, list.
//!
//! - `publish.rs`: a stream's main origin: Publish (and taking over from a dead holder),
//!   Unpublish;
//! - `resolve.rs`: Resolve: the steady state from the cache, the general path, and the
//!   subscriber records it keeps;
//! - `claim.rs`: a region's origin: the guarded claim (and re-parenting in place), Release;
//! - `standby.rs`: the standby record and the switch to it;
//! - `upstream.rs`: the region graph's choice of upstream, and the trees operators read;
//! - `grpc.rs`: authorization, then the handlers.
//!
//! Here: the service, the record helpers those share, and the checks requests start with.

use std::sync::Arc;

use strata_proto::v1;

use super::{State, convert, now_ms};
use crate::cache::Versioned;
use crate::error::{Error, Result};
use crate::keys::{self, MainRecord, NodeRecord, RegionalRecord};
use crate::kv::{Compare, KeyValue, Op};
use strata_common::names::{self, NameKind};

mod claim;
mod grpc;
mod publish;
mod resolve;
mod standby;
pub(crate) use standby::standby_origin;
#[cfg(test)]
mod tests;
pub(crate) mod upstream;

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

/// A main origin record held by `node`, from now.
pub(super) fn main_record(node: &NodeRecord) -> MainRecord {
    MainRecord {
        node_id: node.id.clone(),
        region: node.region.clone(),
        relay_addr: node.relay_addr.clone(),
        started_at_ms: now_ms(),
    }
}

/// The first checks of every request about a stream: a store this replica can reach,
/// and a well-formed stream name.
pub(super) fn check_stream(s: &State, stream: &str) -> Result<()> {
    s.ensure_healthy()?;
    names::validate(NameKind::Stream, stream)?;
    Ok(())
}

/// [`check_stream`], and a well-formed node name.
pub(super) fn check_stream_node(s: &State, stream: &str, node_id: &str) -> Result<()> {
    check_stream(s, stream)?;
    names::validate(NameKind::Node, node_id)?;
    Ok(())
}

/// The checks of a request ending a record at the epoch it was handed out with
/// (Unpublish, ReleaseStandby): [`check_stream_node`], and an epoch. `record` names the
/// record and `rpc` the call that returned its epoch, for the error.
pub(super) fn check_end(
    s: &State,
    stream: &str,
    node_id: &str,
    epoch: i64,
    (record, rpc): (&str, &str),
) -> Result<()> {
    check_stream_node(s, stream, node_id)?;
    if epoch <= 0 {
        return Err(Error::InvalidArgument(format!(
            "epoch is required: the {record}'s epoch as {rpc} returned it"
        )));
    }
    Ok(())
}

impl RoutingApi {
    /// [`check_stream`], then the calling node as registered: the start of a request
    /// that makes its caller hold a record (Publish, Standby).
    pub(super) async fn checked_caller(
        &self,
        stream: &str,
        node_id: &str,
    ) -> Result<Arc<Versioned<NodeRecord>>> {
        check_stream(&self.state, stream)?;
        self.state.caller(node_id).await
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
