//! An origin (relay server + hub) and a downstream node (relay client) in this
//! process, on 127.0.0.1, with mutual TLS from a fresh development CA.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use strata_media::hub::{Hub, HubConfig, Source};
use strata_media::{Catalog, MediaPacket, TrackInfo, TrackKind};
use strata_relay::certs::DevCa;
use strata_relay::{RelayClient, RelayConfig, RelayServer, RelayStats, RelayTls, Subscription};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The one track of the benchmark's streams.
pub const VIDEO: u8 = 0;
/// Node ids in the certificates.
pub const ORIGIN: &str = "bench-origin";
const EDGE: &str = "bench-edge";

/// A VP8-only catalog: groups start at keyframes, as for a camera.
pub fn catalog() -> Catalog {
    Catalog {
        tracks: vec![TrackInfo {
            id: VIDEO,
            kind: TrackKind::Video,
            mime: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
            payload_type: 96,
            layer: None,
        }],
    }
}

/// A packet of `len` bytes whose first 8 bytes are `seq`.
pub fn packet(seq: u64, len: usize, keyframe: bool, ingest_us: u64) -> MediaPacket {
    let mut rtp = vec![0u8; len.max(8)];
    rtp[..8].copy_from_slice(&seq.to_be_bytes());
    MediaPacket {
        track: VIDEO,
        keyframe,
        ingest_us,
        rtp: Bytes::from(rtp),
    }
}

/// The sequence number [`packet`] put in.
pub fn seq_of(pkt: &MediaPacket) -> Option<u64> {
    Some(u64::from_be_bytes(*pkt.rtp.first_chunk::<8>()?))
}

/// Wall clock in µs since the Unix epoch, the clock of `send_us` and `ingest_us`.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Certificates of both nodes.
pub struct Tls {
    pub origin: RelayTls,
    pub edge: RelayTls,
}

impl Tls {
    pub fn generate() -> Result<Self> {
        let ca = DevCa::generate().context("dev CA")?;
        let ip = [Ipv4Addr::LOCALHOST.into()];
        Ok(Tls {
            origin: RelayTls::Mutual(ca.issue(ORIGIN, &ip).context("origin cert")?),
            edge: RelayTls::Mutual(ca.issue(EDGE, &ip).context("edge cert")?),
        })
    }
}

pub fn loopback_socket() -> Result<UdpSocket> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")
}

/// Origin and edge, with `streams` streams attached at the origin.
pub struct Fixture {
    pub sources: Vec<Source>,
    pub client: RelayClient,
    pub edge_stats: Arc<RelayStats>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Fixture {
    /// Start both nodes; `edge_stats` may carry a hop observer.
    pub fn start(tls: &Tls, streams: usize, edge_stats: Arc<RelayStats>) -> Result<Self> {
        let cfg = RelayConfig::default();
        let hub = Hub::new(HubConfig::default());
        let server = RelayServer::new(
            loopback_socket()?,
            &tls.origin,
            cfg.clone(),
            hub.clone(),
            RelayStats::new(),
        )
        .context("relay server")?;
        let addr = server.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let sources = (0..streams)
            .map(|i| hub.attach_source(&stream_name(i), catalog()))
            .collect::<Result<Vec<_>, _>>()?;
        let client = RelayClient::new(loopback_socket()?, &tls.edge, cfg, edge_stats.clone())
            .context("relay client")?;
        Ok(Fixture {
            sources,
            client,
            edge_stats,
            addr,
            shutdown: Some(tx),
            server: Some(server),
        })
    }

    /// Subscribe to every stream, in order.
    pub async fn subscribe_all(&self) -> Result<Vec<Subscription>> {
        let mut subs = Vec::with_capacity(self.sources.len());
        for i in 0..self.sources.len() {
            let sub = self
                .client
                .subscribe(self.addr, ORIGIN, &stream_name(i), 1)
                .await
                .with_context(|| format!("subscribing to {}", stream_name(i)))?;
            subs.push(sub);
        }
        Ok(subs)
    }

    /// Close the client and stop the server.
    pub async fn stop(mut self) {
        self.client.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

fn stream_name(i: usize) -> String {
    format!("bench-{i}")
}
