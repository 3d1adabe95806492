//! Control-plane replicas for tests, started in-process on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use strata_control::kv::{Kv, memory::MemoryKv};
use strata_control::{Config, StoreKind};
use strata_proto::v1;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::etcd::EtcdProcess;

/// Which store a test runs against.
pub enum Store {
    /// A real etcd at these endpoints.
    Etcd(Vec<String>),
    /// A shared in-memory store.
    Memory(MemoryKv),
}

impl Store {
    /// A fresh etcd process and a store spec pointing at it.
    pub async fn etcd() -> Result<(EtcdProcess, Store)> {
        let etcd = EtcdProcess::start().await?;
        let spec = Store::Etcd(vec![etcd.endpoint()]);
        Ok((etcd, spec))
    }

    /// A fresh in-memory store.
    pub fn memory() -> Store {
        Store::Memory(MemoryKv::new())
    }
}

/// Extras for [`ControlPlane::start_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve the HTTP side (front door, dashboard, `/metrics`) on a free loopback port.
    pub http: bool,
    /// The front door's `--default-region`.
    pub default_region: Option<String>,
    /// `--operator-tokens`: the HTTP side then shows `/api/v1/topology` only with one of them.
    pub operator_tokens: Option<std::path::PathBuf>,
    /// `--http-header-timeout`, when not the default.
    pub http_header_timeout: Option<Duration>,
    /// `--link-costs` (`FROM:TO=MS`), this replica's pinned link costs.
    pub link_costs: Vec<String>,
    /// `--claims-in-flight`, when not the default.
    pub claims_in_flight: Option<usize>,
}

/// One control-plane replica running in this process.
pub struct ControlPlane {
    addr: SocketAddr,
    http: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl ControlPlane {
    /// Starts a replica over `store` with this lease TTL and waits until it
    /// serves (its health reports SERVING).
    pub async fn start(store: &Store, lease_ttl: Duration) -> Result<Self> {
        Self::start_with(store, lease_ttl, Options::default()).await
    }

    /// Like [`ControlPlane::start`], with the HTTP side and other extras.
    pub async fn start_with(store: &Store, lease_ttl: Duration, options: Options) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let http_listener = match options.http {
            // A deep accept queue, as the binary has: a burst of connections (the slow-loris
            // test opens 5,000) must reach the server's limits, not overflow the kernel's queue.
            true => {
                let any = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
                Some(strata_control::server::bind_http(any)?)
            }
            false => None,
        };
        let http = match &http_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let mut config = Config {
            listen: addr,
            http_listen: http,
            default_region: options.default_region,
            lease_ttl,
            etcd_timeout: Duration::from_millis(1000),
            operator_tokens: options.operator_tokens,
            link_costs: options.link_costs,
            ..Config::default()
        };
        if let Some(t) = options.http_header_timeout {
            config.http_header_timeout = t;
        }
        if let Some(n) = options.claims_in_flight {
            config.claims_in_flight = n;
        }
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = match store {
            Store::Etcd(endpoints) => {
                config.store = StoreKind::Etcd;
                config.etcd_endpoints = endpoints.clone();
                let span = tracing::info_span!("cp", etcd = %endpoints.join(","));
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let kv = strata_control::server::open_store(&config).await?;
                        strata_control::run_with_listeners(
                            config,
                            kv,
                            listener,
                            http_listener,
                            shutdown,
                        )
                        .await
                    },
                    span,
                ))
            }
            Store::Memory(kv) => {
                config.store = StoreKind::Memory;
                let kv = Kv::Memory(kv.clone());
                tokio::spawn(strata_control::run_with_listeners(
                    config,
                    kv,
                    listener,
                    http_listener,
                    shutdown,
                ))
            }
        };
        let cp = Self {
            addr,
            http,
            shutdown: Some(tx),
            task,
        };
        cp.wait_serving(Duration::from_secs(20)).await?;
        Ok(cp)
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR` of the HTTP side, when started with [`Options::http`].
    pub fn http_url(&self) -> Option<String> {
        self.http.map(|a| format!("http://{a}"))
    }

    /// A channel to this replica.
    pub async fn channel(&self) -> Result<Channel> {
        Ok(Endpoint::from_shared(self.url())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?)
    }

    /// Typed clients on one channel.
    pub async fn clients(&self) -> Result<Clients> {
        Clients::new(self.channel().await?)
    }

    /// Polls the gRPC health service until it reports `want` or the deadline passes.
    pub async fn wait_health(&self, want: ServingStatus, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Ok(ch) = self.channel().await {
                let mut h = tonic_health_client(ch);
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(resp) = h.check(req).await {
                    let status = resp.into_inner().status;
                    if status == want as i32 {
                        return Ok(());
                    }
                    last = Some(status);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("health did not become {want:?} within {within:?} (last: {last:?})")
    }

    async fn wait_serving(&self, within: Duration) -> Result<()> {
        self.wait_health(ServingStatus::Serving, within)
            .await
            .context("control plane did not start")
    }

    /// Stops the replica and waits for it to end.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(10), &mut self.task).await {
            Ok(r) => r?,
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub use health::{HealthCheckRequest, ServingStatus, tonic_health_client};

mod health {
    //! A minimal `grpc.health.v1` client (the messages are tiny; no extra crate).

    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;

    /// `grpc.health.v1.HealthCheckRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckRequest {
        /// Service name, empty for the whole server.
        #[prost(string, tag = "1")]
        pub service: String,
    }

    /// `grpc.health.v1.HealthCheckResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckResponse {
        /// A `ServingStatus`.
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    /// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ServingStatus {
        /// Serving.
        Serving = 1,
        /// Not serving.
        NotServing = 2,
    }

    /// A client of `grpc.health.v1.Health/Check`.
    pub struct HealthClient(tonic::client::Grpc<Channel>);

    /// A health client on a channel.
    pub fn tonic_health_client(ch: Channel) -> HealthClient {
        HealthClient(tonic::client::Grpc::new(ch))
    }

    impl HealthClient {
        /// `Check`.
        pub async fn check(
            &mut self,
            req: HealthCheckRequest,
        ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
            self.0
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let path = PathAndQuery::from_static("/grpc.health.v1.Health/Check");
            let codec = tonic_prost::ProstCodec::default();
            self.0.unary(tonic::Request::new(req), path, codec).await
        }
    }
}

/// The Strata clients on one channel.
#[derive(Clone)]
pub struct Clients {
    /// NodeService.
    pub nodes: v1::node_service_client::NodeServiceClient<Channel>,
    /// RoutingService.
    pub routing: v1::routing_service_client::RoutingServiceClient<Channel>,
    /// PlacementService.
    pub placement: v1::placement_service_client::PlacementServiceClient<Channel>,
    /// DiagnosticsService.
    pub diag: v1::diagnostics_service_client::DiagnosticsServiceClient<Channel>,
}

impl Clients {
    /// Clients on `ch`.
    pub fn new(ch: Channel) -> Result<Self> {
        Ok(Self {
            nodes: v1::node_service_client::NodeServiceClient::new(ch.clone()),
            routing: v1::routing_service_client::RoutingServiceClient::new(ch.clone()),
            placement: v1::placement_service_client::PlacementServiceClient::new(ch.clone()),
            diag: v1::diagnostics_service_client::DiagnosticsServiceClient::new(ch),
        })
    }

    /// Registers a node `id` in `region` with made-up addresses; returns its lease.
    pub async fn register(&mut self, id: &str, region: &str) -> Result<v1::RegisterResponse> {
        let info = v1::NodeInfo {
            id: id.into(),
            region: region.into(),
            relay_addr: "127.0.0.1:4433".into(),
            http_url: format!("http://127.0.0.1:8080/{id}"),
            capacity: 100,
            version: "test".into(),
        };
        let req = v1::RegisterRequest { node: Some(info) };
        Ok(self.nodes.register(req).await?.into_inner())
    }

    /// Resolves `stream` for node `node` of `region`.
    pub async fn resolve(
        &mut self,
        stream: &str,
        region: &str,
        node: &str,
    ) -> std::result::Result<v1::ResolveResponse, tonic::Status> {
        let req = v1::ResolveRequest {
            stream: stream.into(),
            region: region.into(),
            node_id: node.into(),
            unreachable: None,
        };
        Ok(self.routing.resolve(req).await?.into_inner())
    }

    /// Claims the main origin of `stream` for `node`.
    pub async fn publish(
        &mut self,
        stream: &str,
        node: &str,
    ) -> std::result::Result<v1::PublishResponse, tonic::Status> {
        self.publish_over(stream, node, None).await
    }

    /// Claims the main origin of `stream` for `node`, reporting the current
    /// holder dead (`unreachable`) if given.
    pub async fn publish_over(
        &mut self,
        stream: &str,
        node: &str,
        unreachable: Option<v1::Upstream>,
    ) -> std::result::Result<v1::PublishResponse, tonic::Status> {
        let req = v1::PublishRequest {
            stream: stream.into(),
            node_id: node.into(),
            unreachable,
        };
        Ok(self.routing.publish(req).await?.into_inner())
    }

    /// Ends `stream`'s main origin record of epoch `epoch`, held by `node`.
    pub async fn unpublish(
        &mut self,
        stream: &str,
        node: &str,
        epoch: i64,
    ) -> std::result::Result<v1::UnpublishResponse, tonic::Status> {
        let req = v1::UnpublishRequest {
            stream: stream.into(),
            node_id: node.into(),
            epoch,
        };
        Ok(self.routing.unpublish(req).await?.into_inner())
    }
}
