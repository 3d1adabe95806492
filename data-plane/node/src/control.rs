//! The node's client of the control plane: one channel per endpoint, used in
//! turn (any live replica answers), bounded request times, registration and
//! the keep-alive loop.
//!
//! Requests go to one replica until it fails to answer (UNAVAILABLE: down,
//! unreachable, or cut off from etcd; or a timeout); the request is then sent
//! to the next replica at once, which serves the following requests. (One
//! balanced channel over every endpoint kept sending a share of requests to a
//! dead replica: keep-alives failed at random and leases expired.)

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strata_common::backoff::Backoff;
use strata_proto::v1;
use strata_proto::v1::graph_service_client::GraphServiceClient as GraphClient;
use strata_proto::v1::node_service_client::NodeServiceClient as NodesClient;
use strata_proto::v1::placement_service_client::PlacementServiceClient as PlacementClient;
use strata_proto::v1::routing_service_client::RoutingServiceClient as RoutingClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

/// Deadline of one control-plane request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Failures talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// An endpoint URL is malformed.
    #[error("invalid control-plane endpoint {0:?}: {1}")]
    Endpoint(String, String),
    /// No endpoint was given.
    #[error("no control-plane endpoint configured")]
    NoEndpoint,
    /// The control plane answered with an error status.
    #[error("control plane: {0}")]
    Status(#[from] tonic::Status),
}

impl ControlError {
    /// The gRPC code, `Unavailable` for transport failures.
    pub fn code(&self) -> tonic::Code {
        match self {
            ControlError::Status(s) => s.code(),
            _ => tonic::Code::Unavailable,
        }
    }
}

/// Whether a failed request should be sent to the next replica: this one is
/// down or unreachable, cut off from etcd, or did not answer in time.
fn try_next_replica(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

/// One unary call through [`ControlClient::call`]: the answer's message.
macro_rules! rpc {
    ($self:ident, $client:ident, $method:ident, $req:expr) => {{
        let req = $req;
        $crate::control::pushback::retrying(|| {
            $self.call(|ch| {
                let req = req.clone();
                async move { Ok($client::new(ch).$method(req).await?.into_inner()) }
            })
        })
        .await
    }};
}

pub mod pushback;
mod standby;

/// A cheap-to-clone client of every control-plane service.
#[derive(Clone)]
pub struct ControlClient {
    /// The endpoint URLs, to build the channels again with new TLS settings.
    endpoints: Arc<[String]>,
    /// One lazily connected channel per endpoint; replaced as a whole when the
    /// node's certificate is renewed ([`ControlClient::set_tls`]).
    channels: Arc<RwLock<Arc<[Channel]>>>,
    /// The replica requests go to first: the last one that answered.
    current: Arc<AtomicUsize>,
}

impl ControlClient {
    /// A client over these endpoints (lazy: none needs to be up yet).
    pub fn new(endpoints: &[String]) -> Result<Self, ControlError> {
        Self::with_tls(endpoints, None)
    }

    /// Like [`ControlClient::new`], with TLS for the `https://` endpoints
    /// (see [`crate::control_tls::client_tls`]).
    pub fn with_tls(
        endpoints: &[String],
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, ControlError> {
        if endpoints.is_empty() {
            return Err(ControlError::NoEndpoint);
        }
        let channels = Self::channels(endpoints, tls.as_ref())?;
        // Spread nodes over the replicas: start at a random one.
        let start = (std::collections::hash_map::RandomState::new().hash_one(std::process::id())
            % channels.len() as u64) as usize;
        Ok(Self {
            endpoints: endpoints.into(),
            channels: Arc::new(RwLock::new(channels)),
            current: Arc::new(AtomicUsize::new(start)),
        })
    }

    /// Connects through new channels built with `tls` (a renewed certificate)
    /// from the next request on. Requests under way finish on the old ones;
    /// the old connections close when the last of them is done.
    pub fn set_tls(
        &self,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<(), ControlError> {
        let channels = Self::channels(&self.endpoints, tls.as_ref())?;
        *self.channels.write().unwrap_or_else(|p| p.into_inner()) = channels;
        Ok(())
    }

    fn channels(
        endpoints: &[String],
        tls: Option<&tonic::transport::ClientTlsConfig>,
    ) -> Result<Arc<[Channel]>, ControlError> {
        let mut channels = Vec::new();
        for e in endpoints {
            let ep = Endpoint::from_shared(e.clone())
                .map_err(|err| ControlError::Endpoint(e.clone(), err.to_string()))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(REQUEST_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true);
            let ep = match tls {
                Some(tls) if e.starts_with("https://") => ep
                    .tls_config(tls.clone())
                    .map_err(|err| ControlError::Endpoint(e.clone(), err.to_string()))?,
                _ => ep,
            };
            channels.push(ep.connect_lazy());
        }
        Ok(channels.into())
    }

    /// Sends a request to the current replica and, if it fails to answer, to
    /// each other replica in turn; the one that answers becomes current.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, ControlError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let channels = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let n = channels.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let at = (first + i) % n;
            match f(channels[at].clone()).await {
                Err(status) if try_next_replica(&status) => last = Some(status),
                result => {
                    if i > 0 {
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(result?);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| tonic::Status::unavailable("no control-plane replica"))
            .into())
    }

    /// Opens a `WatchStream` (server streaming) on the first replica that
    /// accepts it.
    pub async fn watch_stream(
        &self,
        req: v1::WatchStreamRequest,
    ) -> Result<tonic::Streaming<v1::StreamTopology>, ControlError> {
        self.call(|ch| {
            let req = req.clone();
            async move { Ok(RoutingClient::new(ch).watch_stream(req).await?.into_inner()) }
        })
        .await
    }

    /// Reports the node's relay links per peer region (the region graph's
    /// measured costs).
    pub async fn report_links(
        &self,
        id: &str,
        links: Vec<v1::LinkReport>,
    ) -> Result<(), ControlError> {
        let req = v1::ReportLinksRequest {
            node_id: id.into(),
            links,
        };
        rpc!(self, GraphClient, report_links, req).map(drop)
    }

    /// Registers the node.
    pub async fn register(&self, info: v1::NodeInfo) -> Result<v1::RegisterResponse, ControlError> {
        let req = v1::RegisterRequest { node: Some(info) };
        rpc!(self, NodesClient, register, req)
    }

    /// Renews the lease with a load report; answers whether the node is
    /// marked draining.
    pub async fn keep_alive(
        &self,
        id: &str,
        lease: i64,
        load: v1::Load,
    ) -> Result<bool, ControlError> {
        let req = v1::KeepAliveRequest {
            node_id: id.into(),
            lease_id: lease,
            load: Some(load),
        };
        rpc!(self, NodesClient, keep_alive, req).map(|r| r.draining)
    }

    /// Marks the node draining.
    pub async fn drain(&self, id: &str) -> Result<(), ControlError> {
        rpc!(
            self,
            NodesClient,
            drain,
            v1::DrainRequest { node_id: id.into() }
        )
        .map(drop)
    }

    /// Removes the node and every record it holds.
    pub async fn deregister(&self, id: &str) -> Result<(), ControlError> {
        let req = v1::DeregisterRequest { node_id: id.into() };
        rpc!(self, NodesClient, deregister, req).map(drop)
    }

    /// Live nodes.
    pub async fn list_nodes(&self) -> Result<Vec<v1::Node>, ControlError> {
        let r = rpc!(
            self,
            NodesClient,
            list_nodes,
            v1::ListNodesRequest::default()
        )?;
        Ok(r.nodes)
    }

    /// The registry view: live nodes and revoked certificates.
    pub async fn registry(&self) -> Result<v1::ListNodesResponse, ControlError> {
        rpc!(
            self,
            NodesClient,
            list_nodes,
            v1::ListNodesRequest::default()
        )
    }

    /// Claims the main origin of a stream; `dead` reports its current holder
    /// dead (see `takeover.rs`).
    pub async fn publish(
        &self,
        stream: &str,
        node: &str,
        dead: Option<v1::Upstream>,
    ) -> Result<v1::MainOrigin, ControlError> {
        let req = v1::PublishRequest {
            stream: stream.into(),
            node_id: node.into(),
            unreachable: dead,
        };
        let r = rpc!(self, RoutingClient, publish, req)?;
        r.origin
            .ok_or_else(|| tonic::Status::internal("publish answer without origin").into())
    }

    /// Ends a stream this node ingests, if its main origin record still has
    /// `epoch` (a newer claim is left alone).
    pub async fn unpublish(
        &self,
        stream: &str,
        node: &str,
        epoch: i64,
    ) -> Result<(), ControlError> {
        let req = v1::UnpublishRequest {
            stream: stream.into(),
            node_id: node.into(),
            epoch,
        };
        rpc!(self, RoutingClient, unpublish, req).map(drop)
    }

    /// Where to pull a stream from.
    pub async fn resolve(
        &self,
        stream: &str,
        region: &str,
        node: &str,
        unreachable: Option<v1::Upstream>,
    ) -> Result<v1::ResolveResponse, ControlError> {
        let req = v1::ResolveRequest {
            stream: stream.into(),
            region: region.into(),
            node_id: node.into(),
            unreachable,
        };
        rpc!(self, RoutingClient, resolve, req)
    }

    /// Drops this node's claims on a stream.
    pub async fn release(&self, stream: &str, node: &str) -> Result<(), ControlError> {
        let req = v1::ReleaseRequest {
            stream: stream.into(),
            node_id: node.into(),
        };
        rpc!(self, RoutingClient, release, req).map(drop)
    }

    /// Another node for a client this node turns away.
    pub async fn place(
        &self,
        region: &str,
        stream: &str,
        purpose: v1::Purpose,
        exclude: &str,
    ) -> Result<v1::PlaceResponse, ControlError> {
        let req = v1::PlaceRequest {
            region: region.into(),
            stream: stream.into(),
            purpose: purpose as i32,
            exclude_node_id: exclude.into(),
        };
        rpc!(self, PlacementClient, place, req)
    }
}

/// The node's registration: its lease, renewed in the background, and a
/// counter that moves whenever the node had to register again (its records
/// were lost, so it must claim its streams again).
#[derive(Clone)]
pub struct Registration {
    lease: Arc<AtomicI64>,
    generation: watch::Receiver<u64>,
    draining: watch::Receiver<bool>,
}

impl Registration {
    /// The current lease id.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// Changes each time the node registers again.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// Whether the control plane marks the node draining, as its last
    /// keep-alive answer said (an operator's Drain and Undrain arrive here).
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.clone()
    }
}

/// Registers (retrying until it works or `give_up` passes) and spawns the
/// keep-alive loop, which reports `load()` and registers again when the lease
/// was lost.
pub async fn register_and_keep_alive(
    client: ControlClient,
    info: v1::NodeInfo,
    give_up: Duration,
    load: impl Fn() -> v1::Load + Send + Sync + 'static,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Registration> {
    let deadline = tokio::time::Instant::now() + give_up;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let first = loop {
        match client.register(info.clone()).await {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!(error = %e, "registration failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "could not register with the control plane: {e}"
                ));
            }
        }
    };
    info!(node = %info.id, lease = first.lease_id, ttl_ms = first.ttl_ms, "registered");
    let lease = Arc::new(AtomicI64::new(first.lease_id));
    let (gen_tx, gen_rx) = watch::channel(0u64);
    let (draining_tx, draining_rx) = watch::channel(false);
    let reg = Registration {
        lease: lease.clone(),
        generation: gen_rx,
        draining: draining_rx,
    };
    let interval = Duration::from_millis(u64::from(first.keepalive_interval_ms.max(100)));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let current = lease.load(Ordering::Relaxed);
            match client.keep_alive(&info.id, current, load()).await {
                Ok(draining) => {
                    draining_tx.send_if_modified(|d| std::mem::replace(d, draining) != draining);
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    warn!(node = %info.id, "lease lost; registering again");
                    match client.register(info.clone()).await {
                        Ok(r) => {
                            lease.store(r.lease_id, Ordering::Relaxed);
                            // A new registration starts undrained: a drained
                            // node marks itself again, so that losing its
                            // lease does not undo an operator's Drain.
                            if *draining_tx.borrow()
                                && let Err(e) = client.drain(&info.id).await
                            {
                                warn!(error = %e, "could not mark the node draining again");
                            }
                            gen_tx.send_modify(|g| *g += 1);
                            info!(node = %info.id, lease = r.lease_id, "registered again");
                        }
                        Err(e) => warn!(error = %e, "registering again failed"),
                    }
                }
                Err(e) => warn!(error = %e, "keep-alive failed; keeping last routing"),
            }
        }
    });
    Ok(reg)
}
