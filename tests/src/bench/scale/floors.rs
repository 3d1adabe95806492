//! Floors measured in the same run, under the same background load: a no-op RPC (`Ping`) on the
//! same replica, and a raw etcd transaction like a claim's, beside a settled resolve and a
//! claim through the control plane. One caller, calls one after another.

use std::time::Duration;

use anyhow::Result;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::Serialize;
use strata_proto::v1;
use tokio::time::Instant;

use super::hist::{Hist, Summary};
use super::sim::{Counters, SimNode};
use super::streams;
use super::world::World;

/// Keys of the raw transactions: outside the control plane's prefix, so no cache follows them.
const RAW_PREFIX: &str = "/strata-bench-raw/";

/// The floors and what they are floors of.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Floors {
    /// `DiagnosticsService/Ping` through a simulated node's connection.
    pub ping: Summary,
    /// A settled resolve through the same connection.
    pub resolve: Summary,
    /// A create-if-absent etcd transaction sent directly.
    pub raw_txn: Summary,
    /// A claim (Publish of a fresh stream) through the control plane.
    pub claim: Summary,
    /// Floor calls that failed (a stream or node gone meanwhile).
    pub failed: usize,
}

/// Measures `calls` of each.
pub async fn measure(world: &World, etcd: &str, calls: usize) -> Result<Floors> {
    let Some((node, stream)) = world.sample_pull() else {
        return Ok(Floors::default());
    };
    let counters = Counters::default();
    let mut etcd = etcd_client::Client::connect([etcd], None).await?;
    let mut diag =
        v1::diagnostics_service_client::DiagnosticsServiceClient::new(node.channel.clone());
    let (ping, resolve, raw, claim) = (
        Hist::default(),
        Hist::default(),
        Hist::default(),
        Hist::default(),
    );
    let value =
        br#"{"node_id":"floor","region":"r0","relay_addr":"127.0.0.1:4433","started_at_ms":0}"#;
    let mut failed = 0;
    for i in 0..calls {
        let t0 = Instant::now();
        match diag.ping(v1::PingRequest {}).await {
            Ok(_) => ping.record(t0.elapsed()),
            Err(_) => failed += 1,
        }

        let t0 = Instant::now();
        match streams::resolve(&node, &stream, &counters, true).await {
            Ok(_) => resolve.record(t0.elapsed()),
            Err(_) => failed += 1,
        }

        let key = format!("{RAW_PREFIX}{i}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key.clone(), value.to_vec(), None),
                TxnOp::get(key.clone(), None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let t0 = Instant::now();
        match etcd.txn(txn).await {
            Ok(_) => raw.record(t0.elapsed()),
            Err(_) => failed += 1,
        }

        if claim_once(&node, i, &claim).await.is_err() {
            failed += 1;
        }
    }
    // The raw keys are not the control plane's; leave etcd as the phases found it.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        etcd.delete(
            RAW_PREFIX,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        ),
    )
    .await;
    Ok(Floors {
        ping: ping.take(),
        resolve: resolve.take(),
        raw_txn: raw.take(),
        claim: claim.take(),
        failed,
    })
}

/// Publishes a fresh stream (timed) and unpublishes it again.
async fn claim_once(node: &SimNode, i: usize, hist: &Hist) -> Result<(), tonic::Status> {
    let name = format!("floor-{i}");
    let t0 = Instant::now();
    let req = v1::PublishRequest {
        stream: name.clone(),
        node_id: node.id.clone(),
        unreachable: None,
    };
    let origin = node.routing().publish(req).await?.into_inner().origin;
    hist.record(t0.elapsed());
    let end = v1::UnpublishRequest {
        stream: name,
        node_id: node.id.clone(),
        epoch: origin.map(|o| o.epoch).unwrap_or(0),
    };
    node.routing().unpublish(end).await?;
    Ok(())
}
