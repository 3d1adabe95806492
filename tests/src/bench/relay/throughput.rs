//! Highest throughput: the relay with the source pushing as fast as the
//! edge takes packets, beside raw quinn bulk transfer with the relay's
//! QUIC settings (same TLS, ALPN, transport), in the same process.
//!
//! The hub's source never waits and a sink that falls behind skips to the
//! next keyframe, so "as fast as possible" is closed loop: each stream keeps
//! at most a window of packets between its hub push and the edge's
//! `Subscription::recv` (well under the hub's sink queue, so nothing is
//! dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use strata_media::MediaPacket;
use strata_media::hub::Source;
use strata_relay::quinn;
use strata_relay::{RelayConfig, RelayStats, Subscription, SubscriptionEvent};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::cpu::Clocks;
use super::fixture::{self, Fixture, Tls, VIDEO, loopback_socket};
use super::latency::PACKET_BYTES;

/// Packets in flight per stream, summed over streams at most this: below the
/// edge's bound on held-back frames (`RelayConfig::group_order_max_bytes`),
/// since a group's first frames may overtake the previous group's tail.
const WINDOW_TOTAL: u64 = 512;
/// A new group every second, as for a live stream.
const GROUP: Duration = Duration::from_secs(1);

/// Bytes moved in a window of wall and CPU time.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub label: String,
    pub bytes: u64,
    pub wall: Duration,
    pub cpu: Duration,
    /// Time the process's threads waited for a CPU.
    pub wait: Duration,
    /// Groups the edge skipped (relay only).
    pub skipped: u64,
    /// QUIC packets the sender declared lost, and packets sent (raw quinn only:
    /// the relay does not expose its connections' statistics).
    pub quic_lost: Option<(u64, u64)>,
}

impl Throughput {
    /// Add another window of the same path.
    pub fn add(&mut self, other: &Throughput) {
        self.bytes += other.bytes;
        self.wall += other.wall;
        self.cpu += other.cpu;
        self.wait += other.wait;
        self.skipped += other.skipped;
        self.quic_lost = match (self.quic_lost, other.quic_lost) {
            (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1)),
            (a, b) => a.or(b),
        };
    }

    /// Payload MB (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }

    /// Process CPU seconds per second.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64()
    }

    /// Seconds per second the process's threads waited for a CPU.
    pub fn waiting(&self) -> f64 {
        self.wait.as_secs_f64() / self.wall.as_secs_f64()
    }

    /// Payload MB per CPU second: throughput per core.
    pub fn mb_per_cpu_s(&self) -> f64 {
        let cpu = self.cpu.as_secs_f64();
        if cpu > 0.0 {
            self.bytes as f64 / 1e6 / cpu
        } else {
            0.0
        }
    }
}

/// Count `bytes` over `measure` after `warmup`.
async fn window(
    bytes: &AtomicU64,
    label: String,
    warmup: Duration,
    measure: Duration,
) -> Throughput {
    tokio::time::sleep(warmup).await;
    let before = bytes.load(Ordering::Relaxed);
    let clocks = Clocks::now();
    tokio::time::sleep(measure).await;
    let usage = clocks.since();
    Throughput {
        label,
        bytes: bytes.load(Ordering::Relaxed) - before,
        wall: usage.wall,
        cpu: usage.cpu,
        wait: usage.wait,
        skipped: 0,
        quic_lost: None,
    }
}

/// One stream's closed loop.
#[derive(Debug, Default)]
struct Flow {
    delivered: AtomicU64,
    room: Notify,
}

/// The relay, `streams` streams with one subscription each, pushed as fast as
/// the edge takes them.
pub async fn relay(
    tls: &Tls,
    streams: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Throughput> {
    let mut fixture = Fixture::start(tls, streams, RelayStats::new())?;
    let subs = fixture.subscribe_all().await?;
    let window_per_stream = (WINDOW_TOTAL / streams.max(1) as u64).max(16);
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for (source, sub) in std::mem::take(&mut fixture.sources).into_iter().zip(subs) {
        let flow = Arc::new(Flow::default());
        tasks.push(tokio::spawn(drain(sub, flow.clone(), bytes.clone())));
        tasks.push(tokio::spawn(produce(source, flow, window_per_stream)));
    }
    let label = match streams {
        1 => "relay, 1 subscription".to_owned(),
        n => format!("relay, {n} subscriptions"),
    };
    let mut result = window(&bytes, label, warmup, measure).await;
    for task in &tasks {
        task.abort();
    }
    result.skipped = fixture.edge_stats.groups_skipped.load(Ordering::Relaxed);
    fixture.stop().await;
    ensure!(result.bytes > 0, "{}: nothing delivered", result.label);
    Ok(result)
}

async fn produce(source: Source, flow: Arc<Flow>, window: u64) {
    let rtp = Bytes::from(vec![0x80u8; PACKET_BYTES]);
    let mut pushed = 0u64;
    let mut group_started: Option<Instant> = None;
    loop {
        while pushed - flow.delivered.load(Ordering::Relaxed) < window {
            let keyframe = group_started.is_none_or(|at| at.elapsed() >= GROUP);
            if keyframe {
                group_started = Some(Instant::now());
            }
            source.push(MediaPacket {
                track: VIDEO,
                keyframe,
                ingest_us: fixture::wall_us(),
                rtp: rtp.clone(),
            });
            pushed += 1;
        }
        // A lost wake-up only costs this timeout.
        let _ = tokio::time::timeout(Duration::from_millis(100), flow.room.notified()).await;
    }
}

async fn drain(mut sub: Subscription, flow: Arc<Flow>, bytes: Arc<AtomicU64>) {
    while let Some(event) = sub.recv().await {
        if let SubscriptionEvent::Packet(pkt) = event {
            bytes.fetch_add(pkt.rtp.len() as u64, Ordering::Relaxed);
            let n = flow.delivered.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(16) {
                flow.room.notify_one();
            }
        }
    }
}

/// Raw quinn: one connection with the relay's configuration, one stream from
/// the server to the client (the relay's media direction), `write` bytes per
/// `write_all`.
pub async fn raw_quinn(
    tls: &Tls,
    write: usize,
    label: &str,
    warmup: Duration,
    measure: Duration,
) -> Result<Throughput> {
    let cfg = RelayConfig::default();
    let runtime = Arc::new(quinn::TokioRuntime);
    let server = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(strata_relay::quic_server_config(&tls.origin, &cfg)?),
        loopback_socket()?,
        runtime.clone(),
    )?;
    let mut client = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        loopback_socket()?,
        runtime,
    )?;
    client.set_default_client_config(strata_relay::quic_client_config(&tls.edge, &cfg)?);
    let addr = server.local_addr()?;
    let (accepted, connected) = tokio::join!(
        async {
            server
                .accept()
                .await
                .context("server endpoint closed")?
                .await
                .context("accepting")
        },
        async {
            client
                .connect(addr, fixture::ORIGIN)?
                .await
                .context("connecting")
        }
    );
    let (sender, receiver) = (accepted?, connected?);

    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    let stats = sender.clone();
    let reader = tokio::spawn(async move {
        let Ok(mut recv) = receiver.accept_uni().await else {
            return;
        };
        while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
            counted.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        }
    });
    let writer = tokio::spawn(async move {
        let Ok(mut send) = sender.open_uni().await else {
            return;
        };
        let buf = vec![0x80u8; write];
        while send.write_all(&buf).await.is_ok() {}
    });
    let before = stats.stats().path;
    let mut result = window(&bytes, label.to_owned(), warmup, measure).await;
    let after = stats.stats().path;
    result.quic_lost = Some((
        after.lost_packets - before.lost_packets,
        after.sent_packets - before.sent_packets,
    ));
    writer.abort();
    reader.abort();
    client.close(quinn::VarInt::from_u32(0), b"done");
    server.close(quinn::VarInt::from_u32(0), b"done");
    ensure!(result.bytes > 0, "{label}: nothing delivered");
    Ok(result)
}
