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
use super::sim::Counters;
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
    for i in 0..calls {
        let t0 = Instant::now();
        diag.ping(v1::PingRequest {}).await?;
        ping.record(t0.elapsed());

        let t0 = Instant::now();
        streams::resolve(&node, &stream, &counters, true).await?;
        resolve.record(t0.elapsed());

        let key = format!("{RAW_PREFIX}{i}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key.clone(), value.to_vec(), None),
                TxnOp::get(key.clone(), None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let t0 = Instant::now();
        etcd.txn(txn).await?;
        raw.record(t0.elapsed());

        let name = format!("floor-{i}");
        let t0 = Instant::now();
        let epoch = node
            .routing()
            .publish(v1::PublishRequest {
                stream: name.clone(),
                node_id: node.id.clone(),
            })
            .await?
            .into_inner()
            .origin
            .map(|o| o.epoch)
            .unwrap_or(0);
        claim.record(t0.elapsed());
        let end = v1::UnpublishRequest {
            stream: name,
            node_id: node.id.clone(),
            epoch,
        };
        node.routing().unpublish(end).await?;
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
    })
}
