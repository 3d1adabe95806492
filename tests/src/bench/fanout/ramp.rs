//! One server's ramp: players added step by step, one measured window per step.

use std::time::{Duration, Instant};

use super::client::{LoadPeer, NodeFeedback, Tally};
use super::procstat::{self, CpuMark, rss_bytes};
use super::report::{self, Latency, ServerResult, StepResult};
use super::server::{Server, start_server};
use super::simulcast::Mode;
use super::source::Source;
use super::{Kind, RampConfig};
use anyhow::Result;

/// Players connected at once while a step adds players.
const CONNECT_CONCURRENCY: usize = 16;
/// How long a new player may take to receive its first packet.
const FIRST_PACKET_WITHIN: Duration = Duration::from_secs(20);

pub(super) async fn measure_server(
    kind: Kind,
    rtc_workers: Option<usize>,
    mode: Mode,
    source: &Source,
    cfg: &RampConfig,
    transport_feedback: &mut Vec<NodeFeedback>,
) -> Result<ServerResult> {
    let server = start_server(kind, rtc_workers, mode, source, cfg).await?;
    let label = report::label(kind, rtc_workers, mode);
    // Idle with the source flowing: the baseline for memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_mark = CpuMark::take(server.pid);
    tokio::time::sleep(Duration::from_secs(2).min(cfg.window)).await;
    let idle_cores = CpuMark::take(server.pid).cores_since(&base_mark);
    let base_rss = rss_bytes(server.pid);
    let mut peers: Vec<LoadPeer> = Vec::new();
    let mut steps: Vec<StepResult> = Vec::new();
    let mut connect_failures = 0usize;
    // Up the steps until one fails. Never down again: a server that was overloaded may carry
    // backlog into the next window, so every measured step starts from a lighter one.
    let mut pass: Option<usize> = None;
    for &target in &cfg.steps {
        let t0 = Instant::now();
        let mut first_packet = Vec::new();
        let failed_now = set_players(&server, &mut peers, target, &mut first_packet).await;
        connect_failures += failed_now;
        let setup = t0.elapsed();
        tokio::time::sleep(cfg.settle).await;
        let mut step = measure_step(&server, &peers, target, failed_now, setup, cfg.window).await;
        step.first_packet = Latency::of(first_packet);
        eprintln!("  {}", step.progress_line(&label));
        let failed = step.loss() > cfg.max_loss || step.failed * 50 > target.max(1);
        steps.push(step);
        if failed {
            break;
        }
        pass = Some(target);
    }
    let perf_report = match cfg.perf {
        true => Some(profile_at(&server, &mut peers, pass.unwrap_or(1), cfg.settle).await),
        false => None,
    };
    if server.transport_cc {
        transport_feedback.push(NodeFeedback::read(&label, &server.url, &peers).await);
    }
    for p in peers {
        tokio::spawn(p.close());
    }
    drop(server);
    Ok(ServerResult {
        kind,
        rtc_workers,
        mode,
        server_cores: cfg.server_cores,
        steps,
        idle_cores,
        base_rss,
        connect_failures,
        perf: perf_report,
    })
}

/// Profiled back at the capacity found, players connected: where the time goes under load.
async fn profile_at(
    server: &Server,
    peers: &mut Vec<LoadPeer>,
    at: usize,
    settle: Duration,
) -> String {
    set_players(server, peers, at, &mut Vec::new()).await;
    tokio::time::sleep(settle).await;
    match report::perf_profile(server.pid).await {
        Ok(p) => format!("at {at} players\n{p}"),
        Err(e) => format!("perf failed: {e:#}"),
    }
}

/// Adds or removes players until `target` are connected; returns how many failed to connect
/// or to receive media. New players' first-packet times go to `first_packet`.
async fn set_players(
    server: &Server,
    peers: &mut Vec<LoadPeer>,
    target: usize,
    first_packet: &mut Vec<Duration>,
) -> usize {
    while peers.len() > target {
        if let Some(p) = peers.pop() {
            // Closed in the background: ending sessions takes a while.
            tokio::spawn(p.close());
        }
    }
    let already = peers.len();
    let mut failed = 0;
    while peers.len() + failed < target {
        let batch = (target - peers.len() - failed).min(CONNECT_CONCURRENCY);
        let first = peers.len() + failed;
        let tasks: Vec<_> = (first..first + batch).map(|i| server.new_peer(i)).collect();
        for r in futures::future::join_all(tasks).await {
            match r {
                Ok(p) => peers.push(p),
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %format!("{e:#}"), "player failed to connect");
                }
            }
        }
    }
    let waits: Vec<_> = peers[already..]
        .iter()
        .map(|p| p.first_packet(FIRST_PACKET_WITHIN))
        .collect();
    for r in futures::future::join_all(waits).await {
        match r {
            Ok(d) => first_packet.push(d),
            Err(_) => failed += 1,
        }
    }
    failed
}

/// One measurement window with `peers` connected.
async fn measure_step(
    server: &Server,
    peers: &[LoadPeer],
    target: usize,
    failed: usize,
    setup: Duration,
    window_len: Duration,
) -> StepResult {
    let before: Vec<Tally> = peers.iter().map(|p| p.counters().tally()).collect();
    let fed_before = server.fed();
    let udp_before = procstat::udp_drops();
    let server_mark = CpuMark::take(server.pid);
    let client_mark = CpuMark::take(std::process::id());
    tokio::time::sleep(window_len).await;
    let after: Vec<Tally> = peers.iter().map(|p| p.counters().tally()).collect();
    let fed_after = server.fed();
    let cores = CpuMark::take(server.pid).cores_since(&server_mark);
    let client_cores = CpuMark::take(std::process::id()).cores_since(&client_mark);
    let udp_drops = procstat::udp_drops().saturating_sub(udp_before);
    let rss = rss_bytes(server.pid);
    let mut window = Tally::default();
    let mut starved = 0;
    for (a, b) in after.iter().zip(&before) {
        let d = a.since(b);
        if d.received == 0 {
            starved += 1;
        }
        window.received += d.received;
        window.expected += d.expected;
        window.bytes += d.bytes;
    }
    let offered: u64 = (0..peers.len())
        .map(|i| server.expected(i, &fed_before, &fed_after))
        .sum();
    StepResult {
        target,
        players: peers.len(),
        failed,
        starved,
        setup,
        cores,
        client_cores,
        rss,
        loss_seq: loss(window.lost(), window.expected),
        loss_rate: loss(offered.saturating_sub(window.received), offered),
        udp_drops,
        mbit_out: window.bytes as f64 * 8.0 / window_len.as_secs_f64() / 1e6,
        first_packet: None,
    }
}

fn loss(lost: u64, of: u64) -> f64 {
    if of == 0 {
        return 0.0;
    }
    lost as f64 / of as f64
}
