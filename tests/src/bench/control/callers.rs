//! The four calls the control-plane benchmark compares, each as a [`Caller`].

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use strata_control::keys::Keys;
use strata_proto::v1;
use strata_proto::v1::diagnostics_service_client::DiagnosticsServiceClient;
use strata_proto::v1::routing_service_client::RoutingServiceClient;
use tonic::transport::Channel;

use crate::bench::load::Caller;

/// How long one raw etcd call may take (the gRPC channels carry their own timeout).
const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `DiagnosticsService/Ping`: the floor.
pub struct Ping(pub DiagnosticsServiceClient<Channel>);

impl Caller for Ping {
    async fn call(&mut self) -> Result<()> {
        self.0.ping(v1::PingRequest {}).await?;
        Ok(())
    }
}

/// `RoutingService/Resolve` of a live stream by a node that already has its answer cached.
pub struct Resolve {
    /// The client.
    pub client: RoutingServiceClient<Channel>,
    /// The same request every time.
    pub request: v1::ResolveRequest,
}

impl Caller for Resolve {
    async fn call(&mut self) -> Result<()> {
        let resp = self
            .client
            .resolve(self.request.clone())
            .await?
            .into_inner();
        ensure!(
            resp.role != v1::Role::Unspecified as i32,
            "resolve answered without a role"
        );
        Ok(())
    }
}

/// Fresh stream names `bench-{tag}-{n}`: every call claims a name nobody holds.
pub struct FreshNames {
    tag: String,
    next: u64,
}

impl FreshNames {
    /// Names tagged `tag` (unique per caller and run).
    pub fn new(tag: String) -> Self {
        Self { tag, next: 0 }
    }

    fn next(&mut self) -> String {
        self.next += 1;
        format!("bench-{}-{}", self.tag, self.next)
    }
}

/// `RoutingService/Publish` of a fresh stream: one create-if-absent etcd transaction.
pub struct Claim {
    /// The client.
    pub client: RoutingServiceClient<Channel>,
    /// The registered node that publishes.
    pub node_id: String,
    /// Stream names.
    pub names: FreshNames,
}

impl Caller for Claim {
    async fn call(&mut self) -> Result<()> {
        let req = v1::PublishRequest {
            stream: self.names.next(),
            node_id: self.node_id.clone(),
            unreachable: None,
        };
        let resp = self.client.publish(req).await?.into_inner();
        let holder = resp.origin.map(|o| o.node_id).unwrap_or_default();
        ensure!(
            holder == self.node_id,
            "publish answered another holder {holder:?}"
        );
        Ok(())
    }
}

/// The claim's transaction sent to etcd directly: same compare, same operations, a key of the
/// same length and a value of the same size, bound to a lease.
pub struct RawTxn {
    /// The client (one HTTP/2 connection to etcd).
    pub client: etcd_client::Client,
    /// Keys under a prefix the control plane does not watch.
    pub keys: Keys,
    /// The lease the puts are bound to.
    pub lease: i64,
    /// The value put (a main origin record).
    pub value: Vec<u8>,
    /// Key names.
    pub names: FreshNames,
}

impl Caller for RawTxn {
    async fn call(&mut self) -> Result<()> {
        let key = self.keys.main(&self.names.next());
        let put = TxnOp::put(
            key.clone(),
            self.value.clone(),
            Some(PutOptions::new().with_lease(self.lease)),
        );
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put, TxnOp::get(key.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = tokio::time::timeout(ETCD_CALL_TIMEOUT, self.client.txn(txn))
            .await
            .map_err(|_| anyhow!("etcd txn did not answer within {ETCD_CALL_TIMEOUT:?}"))?
            .context("etcd txn")?;
        if !resp.succeeded() {
            bail!("etcd txn on a fresh key did not succeed");
        }
        Ok(())
    }
}
