//! Per-hop latency: N live-like streams, origin → edge.
//!
//! Each stream is 2 Mbit/s of 1200-byte packets (one every 4.8 ms, phases
//! spread over the streams) with a keyframe, hence a new group and QUIC
//! stream, about every second. Two clocks per packet:
//!
//! - **wire**: the frame's `send_us` (stamped by the origin's sender just
//!   before it writes the frame to its QUIC stream) to the edge's group reader
//!   decoding it, through [`RelayStats::with_hop_observer`];
//! - **end to end**: the origin's hub push to the edge's `Subscription::recv`
//!   returning it (the packet's `ingest_us` is the push time): adds the origin's
//!   sink queue and session task, and the edge's group ordering and hand-over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use strata_media::hub::Source;
use strata_relay::{RelayStats, Subscription, SubscriptionEvent};
use tokio::sync::oneshot;

use super::cpu::Clocks;
use super::fixture::{Fixture, Tls, packet, seq_of, wall_us};
use super::histogram::UsHistogram;

/// RTP bytes per packet.
pub const PACKET_BYTES: usize = 1200;
/// One packet per period: 1200 B × 8 / 4.8 ms = 2 Mbit/s.
pub const PERIOD: Duration = Duration::from_micros(4800);
/// Packets per group: about one second.
const KEYFRAME_EVERY: u64 = 208;

/// What one latency run measured.
#[derive(Debug)]
pub struct LatencyResult {
    pub streams: usize,
    /// Packets delivered per second in the measured window.
    pub delivered_rate: f64,
    /// `send_us` → decoded at the edge.
    pub wire: Arc<UsHistogram>,
    /// Hub push at the origin → `Subscription::recv` at the edge.
    pub end_to_end: Arc<UsHistogram>,
    /// CPU cores busy during the window (process CPU seconds per second).
    pub cores: f64,
    /// Threads waiting for a CPU during the window (seconds per second).
    pub waiting: f64,
    /// Packets pushed at the origin, over the whole run.
    pub sent: u64,
    /// Sequence numbers missing at the edge, over the whole run.
    pub lost: u64,
    /// Groups the edge skipped.
    pub groups_skipped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    lost: AtomicU64,
}

/// Run `streams` streams for `warmup`, then measure for `measure`.
pub async fn run(
    tls: &Tls,
    streams: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<LatencyResult> {
    let wire = Arc::new(UsHistogram::default());
    let end_to_end = Arc::new(UsHistogram::default());
    let observed = wire.clone();
    let edge_stats = RelayStats::with_hop_observer(move |s| {
        observed.record(s.recv_us.saturating_sub(s.send_us));
    });
    let mut fixture = Fixture::start(tls, streams, edge_stats)?;
    let subs = fixture.subscribe_all().await?;
    let counters = Arc::new(Counters::default());
    let consumers: Vec<_> = subs
        .into_iter()
        .map(|sub| tokio::spawn(consume(sub, end_to_end.clone(), counters.clone())))
        .collect();
    let sent = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = oneshot::channel();
    let pacer = tokio::spawn(pace(
        std::mem::take(&mut fixture.sources),
        sent.clone(),
        stopped,
    ));

    tokio::time::sleep(warmup).await;
    let received_before = counters.received.load(Ordering::Relaxed);
    wire.set_recording(true);
    end_to_end.set_recording(true);
    let clocks = Clocks::now();
    tokio::time::sleep(measure).await;
    let usage = clocks.since();
    let wall = usage.wall;
    wire.set_recording(false);
    end_to_end.set_recording(false);
    let received = counters.received.load(Ordering::Relaxed) - received_before;

    let _ = stop.send(());
    let _ = pacer.await;
    for consumer in &consumers {
        consumer.abort();
    }
    let groups_skipped = fixture.edge_stats.groups_skipped.load(Ordering::Relaxed);
    fixture.stop().await;
    Ok(LatencyResult {
        streams,
        delivered_rate: received as f64 / wall.as_secs_f64(),
        wire,
        end_to_end,
        cores: usage.cpu.as_secs_f64() / wall.as_secs_f64(),
        waiting: usage.wait.as_secs_f64() / wall.as_secs_f64(),
        sent: sent.load(Ordering::Relaxed),
        lost: counters.lost.load(Ordering::Relaxed),
        groups_skipped,
    })
}

/// Push every stream's packets on time until `stop`; one task for all
/// streams, waking every millisecond (tokio's timer resolution).
async fn pace(sources: Vec<Source>, sent: Arc<AtomicU64>, mut stop: oneshot::Receiver<()>) {
    let n = sources.len().max(1) as u32;
    let phases: Vec<Duration> = (0..n).map(|i| PERIOD * i / n).collect();
    let mut next = vec![0u64; sources.len()];
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let elapsed = start.elapsed();
        for ((source, next), phase) in sources.iter().zip(&mut next).zip(&phases) {
            let Some(since) = elapsed.checked_sub(*phase) else {
                continue;
            };
            let due = (since.as_micros() / PERIOD.as_micros()) as u64 + 1;
            while *next < due {
                let keyframe = *next % KEYFRAME_EVERY == 0;
                source.push(packet(*next, PACKET_BYTES, keyframe, wall_us()));
                *next += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Receive until aborted, recording end-to-end latency and sequence gaps.
async fn consume(mut sub: Subscription, end_to_end: Arc<UsHistogram>, counters: Arc<Counters>) {
    let mut expected = None;
    while let Some(event) = sub.recv().await {
        let pkt = match event {
            SubscriptionEvent::Packet(pkt) => pkt,
            SubscriptionEvent::CatalogChanged(_) => continue,
            SubscriptionEvent::Ended { .. } | SubscriptionEvent::Lost(_) => return,
        };
        end_to_end.record(wall_us().saturating_sub(pkt.ingest_us));
        counters.received.fetch_add(1, Ordering::Relaxed);
        if let Some(seq) = seq_of(&pkt) {
            if let Some(expected) = expected
                && seq > expected
            {
                counters.lost.fetch_add(seq - expected, Ordering::Relaxed);
            }
            expected = Some(seq + 1);
        }
    }
}
