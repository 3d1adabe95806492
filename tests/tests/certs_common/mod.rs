//! What the certificate suite (`certs.rs`) stands on: a TLS control plane on a real etcd
//! with a CA and certificates in a directory, channels presenting a node's certificate,
//! register and keep-alive calls, and a relay handshake between two credentials.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_control::kv::Kv;
use strata_proto::v1;
use strata_proto::v1::node_service_client::NodeServiceClient;
use strata_relay::certs::{CertKind, DevCa, IssueOptions, NodeCredentials};
use strata_relay::{LiveTls, RelayClient, RelayConfig, RelayServer, RelayStats, RelayTls};
use strata_tests::etcd::EtcdProcess;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const TOKEN: &str = "alice-token-0123456789";
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A TLS control plane on a real etcd, a CA, and certificates in `dir`.
pub struct Setup {
    pub _etcd: EtcdProcess,
    pub dir: PathBuf,
    pub ca: DevCa,
    pub addr: std::net::SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub fn localhost() -> Vec<IpAddr> {
    vec!["127.0.0.1".parse().unwrap()]
}

impl Setup {
    pub async fn start(name: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("strata-certs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = DevCa::generate().unwrap();
        ca.write(&dir).unwrap();
        // The control plane's certificate is server-only, as `certs-issue --server-only` makes it.
        ca.issue_with(
            "cp",
            &localhost(),
            &IssueOptions {
                kind: CertKind::Server,
                ..IssueOptions::default()
            },
        )
        .unwrap()
        .write(&dir)
        .unwrap();
        let ops = dir.join("operators");
        std::fs::write(&ops, format!("alice={TOKEN}\n")).unwrap();
        let etcd = EtcdProcess::start().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = strata_control::Config {
            listen: addr,
            store: strata_control::StoreKind::Etcd,
            etcd_endpoints: vec![etcd.endpoint()],
            tls_cert: Some(dir.join("cp.pem")),
            tls_key: Some(dir.join("cp.key")),
            client_ca: Some(dir.join("ca.pem")),
            operator_tokens: Some(ops),
            lease_ttl: Duration::from_secs(3),
            // Short, so the stalled-handshake test waits little; real handshakes on loopback
            // take milliseconds.
            grpc_tls_handshake_timeout: Duration::from_secs(1),
            ..strata_control::Config::default()
        };
        config.check_transport().unwrap();
        let kv: Kv = strata_control::server::open_store(&config).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(strata_control::run_with_store(
            config,
            kv,
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        Setup {
            _etcd: etcd,
            dir,
            ca,
            addr,
            stop: Some(stop),
        }
    }

    pub fn issue(&self, id: &str, options: &IssueOptions) -> NodeCredentials {
        let creds = self.ca.issue_with(id, &localhost(), options).unwrap();
        creds.write(&self.dir).unwrap();
        creds
    }

    /// A channel presenting `id`'s certificate files from the directory.
    pub async fn node_channel(&self, id: &str) -> Result<Channel, tonic::transport::Error> {
        channel_with(self.addr, &self.dir, Some(id)).await
    }

    pub fn operator(
        &self,
        ch: Channel,
    ) -> NodeServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor>,
    > {
        NodeServiceClient::with_interceptor(ch, |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            Ok(req)
        })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn channel_with(
    addr: std::net::SocketAddr,
    dir: &Path,
    id: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("cp");
    if let Some(id) = id {
        let cert = std::fs::read(dir.join(format!("{id}.pem"))).unwrap();
        let key = std::fs::read(dir.join(format!("{id}.key"))).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

pub fn info(id: &str) -> v1::NodeInfo {
    v1::NodeInfo {
        id: id.into(),
        region: "eu".into(),
        relay_addr: "127.0.0.1:4433".into(),
        http_url: "http://127.0.0.1:8080".into(),
        capacity: 0,
        version: "test".into(),
    }
}

/// Registers once the replica serves (its cache syncs after start).
pub async fn register(
    ch: Channel,
    info: v1::NodeInfo,
) -> Result<v1::RegisterResponse, tonic::Status> {
    let mut c = NodeServiceClient::new(ch);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match c
            .register(v1::RegisterRequest {
                node: Some(info.clone()),
            })
            .await
        {
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r.map(tonic::Response::into_inner),
        }
    }
}

pub async fn keep_alive(ch: Channel, id: &str, lease: i64) -> Result<(), tonic::Status> {
    NodeServiceClient::new(ch)
        .keep_alive(v1::KeepAliveRequest {
            node_id: id.into(),
            lease_id: lease,
            load: None,
        })
        .await
        .map(drop)
}

/// Whether a relay client with `client` can subscribe at a relay server with `server`
/// (the server names the stream; a refused handshake is an error).
pub async fn relay_accepts(server: &LiveTls, client: &NodeCredentials) -> bool {
    let hub = strata_media::hub::Hub::new(strata_media::hub::HubConfig::default());
    let relay = RelayServer::new(
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        &RelayTls::Live(server.clone()),
        RelayConfig::default(),
        hub.clone(),
        RelayStats::new(),
    )
    .unwrap();
    let addr = relay.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    let _source = hub
        .attach_source("cam", strata_media::Catalog { tracks: Vec::new() })
        .unwrap();
    let c = RelayClient::new(
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        &RelayTls::Mutual(client.clone()),
        RelayConfig::default(),
        RelayStats::new(),
    )
    .unwrap();
    let result = tokio::time::timeout(DEADLINE, c.subscribe(addr, "n2", "cam", 1))
        .await
        .expect("relay answered in time");
    let _ = stop.send(());
    let _ = tokio::time::timeout(DEADLINE, task).await;
    result.is_ok()
}
