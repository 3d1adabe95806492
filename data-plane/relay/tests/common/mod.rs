//! Harness: nodes on 127.0.0.1 port 0, certificates from a fresh CA.

#![allow(dead_code, clippy::unwrap_used)] // test harness: failing fast is the point

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_media::hub::{Hub, HubConfig};
use strata_media::{Catalog, MediaPacket, TrackInfo, TrackKind};
use strata_relay::certs::{DevCa, NodeCredentials};
use strata_relay::{Authorizer, RelayClient, RelayConfig, RelayServer, RelayStats, RelayTls};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod lossy;

pub const AUDIO: u8 = 0;
pub const VIDEO: u8 = 1;
pub const DEADLINE: Duration = Duration::from_secs(5);

pub fn udp() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

pub fn creds(ca: &DevCa, node: &str) -> NodeCredentials {
    ca.issue(node, &["127.0.0.1".parse().unwrap()]).unwrap()
}

pub fn catalog() -> Catalog {
    Catalog {
        tracks: vec![
            TrackInfo {
                id: AUDIO,
                kind: TrackKind::Audio,
                mime: "audio/opus".into(),
                clock_rate: 48000,
                channels: 2,
                fmtp: String::new(),
                payload_type: 111,
                layer: None,
            },
            TrackInfo {
                id: VIDEO,
                kind: TrackKind::Video,
                mime: "video/VP8".into(),
                clock_rate: 90000,
                channels: 0,
                fmtp: String::new(),
                payload_type: 96,
                layer: None,
            },
        ],
    }
}

pub fn pkt(track: u8, keyframe: bool, seq: u64) -> MediaPacket {
    let mut rtp = vec![0x80u8; 200];
    rtp[..8].copy_from_slice(&seq.to_be_bytes());
    MediaPacket {
        track,
        keyframe,
        ingest_us: seq,
        rtp: Bytes::from(rtp),
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub stats: Arc<RelayStats>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Subscriptions the server has served so far.
    pub fn subscriptions_served(&self) -> u64 {
        self.stats
            .subscriptions_served
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn start(tls: &RelayTls, authorizer: Option<Arc<dyn Authorizer>>) -> Self {
        Self::start_with(tls, authorizer, RelayConfig::default())
    }

    pub fn start_with(
        tls: &RelayTls,
        authorizer: Option<Arc<dyn Authorizer>>,
        cfg: RelayConfig,
    ) -> Self {
        let hub = Hub::new(HubConfig::default());
        let stats = RelayStats::new();
        let mut server = RelayServer::new(udp(), tls, cfg, hub.clone(), stats.clone()).unwrap();
        if let Some(a) = authorizer {
            server = server.with_authorizer(a);
        }
        let addr = server.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Upstream {
            addr,
            hub,
            stats,
            shutdown: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(DEADLINE, &mut self.task).await;
    }
}

/// A client that refuses datagrams, so audio rides the group streams and the
/// tests can check the order across tracks (`datagrams.rs` and
/// `first_frame.rs` use datagrams).
pub fn client(tls: &RelayTls) -> (RelayClient, Arc<RelayStats>) {
    let cfg = RelayConfig {
        audio_datagrams: false,
        ..RelayConfig::default()
    };
    client_with(tls, cfg)
}

pub fn client_with(tls: &RelayTls, cfg: RelayConfig) -> (RelayClient, Arc<RelayStats>) {
    let stats = RelayStats::new();
    let client = RelayClient::new(udp(), tls, cfg, stats.clone()).unwrap();
    (client, stats)
}

/// A bare quinn client with the given ALPN and node credentials (datagrams accepted), to
/// speak to a relay server without the relay client.
pub fn raw_endpoint(creds: &NodeCredentials, alpn: &[u8]) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(creds.ca.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}
