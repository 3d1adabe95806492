//! Assembles and runs the control plane: store, cache, gRPC services with
//! reflection and health, and the HTTP side.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_common::limits::ConnectionLimiter;
use tokio::net::TcpListener;
use tonic::transport::server::Router;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing::info;

use strata_proto::v1;

use crate::auth::{OperatorTokens, Policy};
use crate::cache;
use crate::config::{Config, StoreKind};
use crate::keys::Keys;
use crate::kv::{Kv, etcd::EtcdKv, memory::MemoryKv};
use crate::metrics::Metrics;
use crate::service::{
    DiagnosticsApi, GraphApi, NodeApi, PlacementApi, RoutingApi, ServiceConfig, State,
};

/// gRPC services this server reports in `grpc.health.v1`.
const SERVICES: [&str; 5] = [
    "strata.v1.NodeService",
    "strata.v1.RoutingService",
    "strata.v1.GraphService",
    "strata.v1.PlacementService",
    "strata.v1.DiagnosticsService",
];

/// Who may call what (see [`crate::auth`]). Without TLS the server runs in
/// plaintext development mode: no authentication, logged loudly.
fn policy(config: &Config, cache: &cache::Cache) -> anyhow::Result<Policy> {
    let operators = match &config.operator_tokens {
        Some(path) => OperatorTokens::load(path)?,
        None => OperatorTokens::default(),
    };
    let plaintext = config.tls_cert.is_none();
    if plaintext {
        tracing::warn!(
            "!!! gRPC in PLAINTEXT without authentication: anyone who reaches this port can \
             register nodes, claim streams and drain the cluster. Local development only; use \
             --tls-cert, --tls-key and --client-ca in production !!!"
        );
    } else {
        info!(operators = ?operators, "gRPC over TLS: nodes by client certificate, operators by token");
    }
    Ok(Policy {
        plaintext,
        operators,
        revocations: Some(cache.clone()),
    })
}

/// The TLS settings, when `--tls-cert` is given.
fn server_tls(config: &Config) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key), Some(ca)) = (&config.tls_cert, &config.tls_key, &config.client_ca)
    else {
        anyhow::ensure!(
            config.tls_cert.is_none(),
            "--tls-cert needs --tls-key and --client-ca"
        );
        return Ok(None);
    };
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
    };
    Ok(Some(
        ServerTlsConfig::new()
            .identity(Identity::from_pem(read(cert)?, read(key)?))
            .client_ca_root(Certificate::from_pem(read(ca)?))
            // Operators come with a token instead of a certificate.
            .client_auth_optional(true)
            // A client that opens a socket and stalls in the handshake would otherwise
            // hold it (and a task) for as long as it likes.
            .timeout(config.grpc_tls_handshake_timeout),
    ))
}

/// Builds the store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Kv> {
    Ok(match config.store {
        StoreKind::Etcd => Kv::Etcd(Box::new(
            EtcdKv::connect(&config.etcd_endpoints, config.etcd_timeout)
                .await?
                .with_lease_streams(config.etcd_lease_streams)?,
        )),
        StoreKind::Memory => {
            tracing::warn!("using the in-memory store: single replica only, NOT highly available");
            Kv::Memory(MemoryKv::new())
        }
    })
}

/// Runs the control plane on an already bound gRPC listener until `shutdown`
/// resolves. The store is opened from `config`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let kv = open_store(&config).await?;
    run_with_store(config, kv, listener, shutdown).await
}

/// Like [`run`], over a store the caller opened (tests share one memory store
/// between replicas this way). The HTTP side, if any, is bound from
/// `config.http_listen`.
pub async fn run_with_store(
    config: Config,
    kv: Kv,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let http = match config.http_listen {
        Some(addr) => Some(bind_http(addr)?),
        None => None,
    };
    run_with_listeners(config, kv, listener, http, shutdown).await
}

/// Accept queue of the HTTP listener. A burst of connections (a slow-loris
/// client opening thousands at once) then meets the per-address share and the
/// cap, which close them, instead of overflowing the kernel's queue and
/// leaving honest clients' handshakes waiting on SYN retransmissions.
/// Linux caps it at `net.core.somaxconn` (4096 by default).
pub const HTTP_BACKLOG: u32 = 4096;

/// Binds the HTTP listener with [`HTTP_BACKLOG`].
pub fn bind_http(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)
}

/// Like [`run_with_store`], on an already bound HTTP listener (tests bind
/// `127.0.0.1:0`); `config.http_listen` is not used.
pub async fn run_with_listeners(
    config: Config,
    kv: Kv,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (state, cache) = start_state(&config, kv)?;
    let health_service = health_service(&cache).await;

    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
    let reflection_v1alpha =
        reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;

    let policy = Arc::new(policy(&config, &cache)?);
    let shutdown = spawn_http(&config, http, &state, &policy, shutdown)?;

    info!(addr = %listener.local_addr()?, store = ?config.store, prefix = %config.prefix,
        lease_ttl = ?config.lease_ttl, "control plane listening");
    let mut builder = Server::builder();
    if let Some(tls) = server_tls(&config)? {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    add_apis(router, &state, &policy)
        // Capped, with TCP_NODELAY (see `incoming`).
        .serve_with_incoming_shutdown(
            crate::incoming::limited(
                listener,
                ConnectionLimiter::new(config.grpc_max_connections, 0),
            ),
            shutdown,
        )
        .await?;
    Ok(())
}

/// The services' shared state over `kv`, and the cache it reads from (started here).
fn start_state(config: &Config, kv: Kv) -> anyhow::Result<(State, cache::Cache)> {
    let keys = Keys::new(&config.prefix);
    let mut link_costs = BTreeMap::new();
    for l in &config.link_costs {
        let (from, to, ms) = crate::config::link_cost(l).map_err(anyhow::Error::msg)?;
        link_costs.insert((from, to), ms);
    }
    let probe_every =
        (config.etcd_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let cache = cache::spawn(kv.clone(), keys.clone(), probe_every);
    let metrics = Arc::new(Metrics::default());
    let state = State::new(
        kv,
        keys,
        cache.clone(),
        ServiceConfig {
            lease_ttl: config.lease_ttl,
            load_tolerance: config.load_report_tolerance,
            max_region_hops: config.max_region_hops,
            link_costs,
            claims_in_flight: config.claims_in_flight,
        },
        metrics,
    );
    Ok((state, cache))
}

/// `grpc.health.v1`, following the cache's health: every service reports
/// SERVING while the cache is in sync with the store, NOT_SERVING otherwise.
async fn health_service(
    cache: &cache::Cache,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // The reporter starts at SERVING; nothing is served until the cache has
    // synced with the store.
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for s in SERVICES {
        reporter
            .set_service_status(s, ServingStatus::NotServing)
            .await;
    }
    let mut health = cache.health();
    tokio::spawn(async move {
        loop {
            let status = if *health.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            for s in SERVICES {
                reporter.set_service_status(s, status).await;
            }
            if health.changed().await.is_err() {
                return;
            }
        }
    });
    health_service
}

/// Starts the HTTP side on `http`, if any; returns `shutdown` extended to stop
/// it too. The HTTP side also stops when the returned future is dropped (the
/// sender with it).
fn spawn_http(
    config: &Config,
    http: Option<TcpListener>,
    state: &State,
    policy: &Arc<Policy>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    if let Some(http) = http {
        info!(addr = %http.local_addr()?, "HTTP listening");
        let options = crate::http::HttpOptions {
            default_region: config.default_region.clone(),
            limits: strata_common::limits::HttpLimits {
                header_timeout: config.http_header_timeout,
                max_connections: config.http_max_connections,
                max_connections_per_address: config.http_max_connections_per_ip,
            },
            request_timeout: config.http_request_timeout,
            policy: policy.clone(),
        };
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::http::serve(http, state.clone(), options, stopped));
    }
    Ok(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
}

/// The Strata gRPC services, each behind the authorization interceptor.
fn add_apis(router: Router, state: &State, policy: &Arc<Policy>) -> Router {
    let intercept = || policy.clone().interceptor();
    router
        .add_service(
            v1::node_service_server::NodeServiceServer::with_interceptor(
                NodeApi::new(state.clone()),
                intercept(),
            ),
        )
        .add_service(
            v1::routing_service_server::RoutingServiceServer::with_interceptor(
                RoutingApi::new(state.clone()),
                intercept(),
            ),
        )
        .add_service(
            v1::graph_service_server::GraphServiceServer::with_interceptor(
                GraphApi::new(state.clone()),
                intercept(),
            ),
        )
        .add_service(
            v1::placement_service_server::PlacementServiceServer::with_interceptor(
                PlacementApi::new(state.clone()),
                intercept(),
            ),
        )
        .add_service(
            v1::diagnostics_service_server::DiagnosticsServiceServer::with_interceptor(
                DiagnosticsApi,
                intercept(),
            ),
        )
}
