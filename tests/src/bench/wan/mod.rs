//! `strata-bench wan`: three regions over emulated WAN links.
//!
//! Each region is a network namespace holding its nodes (`strata-node` processes started with
//! `ip netns exec`); the benchmark's own (private) namespace holds the control plane, the
//! publisher and the players, and reaches every region over a veth pair without delay (the
//! "last mile" is not what is measured). Between regions, relay traffic crosses a delaying,
//! lossy UDP proxy ([`proxy`]): the kernel here has no `netem`, so the links are emulated in
//! user space and the report says so.
//!
//! | link | RTT | loss |
//! |---|---|---|
//! | eu – use | 80 ms | 0 |
//! | use – usw | 30 ms | 0 |
//! | eu – usw | 150 ms | 0.5 % each way |
//!
//! The stream is published to `eu-1`. Measured:
//! 1. first-frame time (WHEP POST to the last packet of the first keyframe) for the first node
//!    of a region (the region is cold: a regional origin is claimed and pulls across the WAN),
//!    for a second node of a region that already has the stream (pulls inside the region),
//!    and for a node already playing it (warm);
//! 2. glass-to-glass latency of stamped audio packets, publisher to player, per region;
//! 3. bytes crossing each link per stream (proxy counters, and the nodes' own
//!    `strata_relay_region_bytes_total`), with the per-hop latency the nodes report.
//!
//! Needs root (namespaces). Namespaces are deleted on exit, including on failure and Ctrl-C;
//! ones left by a killed run are deleted by the next.

mod cluster;
pub mod graph;
pub mod launch;
pub(crate) mod netns;
pub(crate) mod probe;
mod proxy;
mod report;
mod util;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use strata_control::config::parse_duration;

pub use self::graph::{GraphMode, Parent};
use self::launch::{ClusterDir, InProcessControl, NodeProcess};
use self::netns::Namespaces;
use self::probe::{ProbePlayer, StampedPublisher};
pub use self::proxy::DirTotals;
use self::proxy::Link;
pub use self::report::{FirstFrames, LinkResult, RegionLatency, WanResult};
use self::util::{LoAddr, hop_latency, node_metrics, wait_cold};
use crate::bench::machine::Machine;

/// The benchmark's address in its own namespace (control plane, publisher, players).
const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The stream.
const STREAM: &str = "wan";

/// Regions, in order; the stream is published in the first.
pub const REGIONS: [&str; 4] = ["eu", "use", "usw", "ap"];
/// Links as (region a, region b, RTT, loss each way). Regions without a link cannot reach each
/// other (use – ap).
pub const LINKS: [(usize, usize, u64, f64); 5] = [
    (0, 1, 80, 0.0),
    (1, 2, 30, 0.0),
    (0, 2, 150, 0.005),
    (2, 3, 60, 0.0),
    (0, 3, 250, 0.005),
];

/// `strata-bench wan` options.
#[derive(Debug, Clone, clap::Args)]
pub struct WanArgs {
    /// CI smoke run: one node per region, one repeat, a 1 s window.
    #[arg(long, env = "STRATA_BENCH_QUICK")]
    pub quick: bool,
    /// Nodes per region [default: 2; 1 with --quick].
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Cold/warm first-frame measurements per region [default: 3; 1 with --quick].
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Window of the latency and bytes measurement [default: 10s; 1s with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<Duration>,
    /// The region graph: `off` pins every link at the unknown cost (every region pulls from
    /// the main origin), `on` pins each at its one-way delay plus 20 ms per % loss.
    #[arg(long, value_enum, default_value = "on")]
    pub graph: GraphMode,
}

impl WanArgs {
    /// The `--quick` run with every other option at its default.
    pub fn quick() -> Self {
        Self {
            quick: true,
            nodes: None,
            repeats: None,
            window: None,
            graph: GraphMode::On,
        }
    }
}

impl WanArgs {
    /// Nodes per region, repeats and window, defaults filled in.
    fn resolved(&self) -> (usize, usize, Duration) {
        let quick = self.quick;
        let per_region = self.nodes.unwrap_or(if quick { 1 } else { 2 }).clamp(1, 9);
        let repeats = self.repeats.unwrap_or(if quick { 1 } else { 3 }).max(1);
        let window = self.window.unwrap_or(if quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        });
        (per_region, repeats, window)
    }
}

/// The clip's RTP rate, bit/s.
fn clip_bps(clip: &strata_rtc::fixture::Clip) -> f64 {
    let bytes: usize = clip.packets().iter().map(|p| p.rtp.len()).sum();
    bytes as f64 * 8.0 / clip.duration().as_secs_f64()
}

/// Why the benchmark cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !netns::is_root() {
        return Some("needs root for network namespaces".into());
    }
    if let Err(e) = netns::ip_command() {
        return Some(format!("{e:#}"));
    }
    if let Err(e) = crate::procs::Binaries::locate() {
        return Some(format!("{e:#}"));
    }
    None
}

/// Runs the benchmark and prints the report (or "skipped: …" and succeeds).
pub async fn run(args: WanArgs) -> Result<()> {
    if let Some(why) = unavailable() {
        println!("### Regions over a WAN\n\nskipped: {why}");
        return Ok(());
    }
    match netns::isolate("wan")? {
        netns::Isolation::Ready => {}
        netns::Isolation::Done(code) => std::process::exit(code),
        netns::Isolation::Unavailable(why) => {
            println!("### Regions over a WAN\n\nskipped: no private network namespace ({why})");
            return Ok(());
        }
    }
    let result = tokio::select! {
        r = measure(args) => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    println!("{}", result.render());
    Ok(())
}

/// One region's namespace and nodes.
pub(crate) struct Region {
    name: &'static str,
    ns: String,
    nodes: Vec<NodeProcess>,
}

/// Runs the benchmark in this (private) namespace; cleans up everything it made.
pub async fn measure(args: WanArgs) -> Result<WanResult> {
    let quick = args.quick;
    let (per_region, repeats, window) = args.resolved();
    let machine = Machine::detect();
    let started = Instant::now();

    // Declared first, dropped last: the namespaces outlive everything that runs in them.
    let mut namespaces = Namespaces::new("wan");
    let _hub = LoAddr::add(HUB_IP)?;
    let mut regions = cluster::regions(&mut namespaces, per_region)?;
    let control = InProcessControl::start(HUB_IP.into(), Duration::from_secs(3)).await?;
    let mut dir = ClusterDir::new("wan")?;
    cluster::spawn_nodes(&dir, &control, &mut regions, per_region)?;
    let links = cluster::links();
    let proxies = cluster::proxies(&links, &regions).await?;
    cluster::wait_ready(&mut regions, &mut dir).await?;
    eprintln!(
        "wan: {} nodes up in {:.1}s",
        REGIONS.len() * per_region,
        started.elapsed().as_secs_f64()
    );

    let channel = tonic::transport::Endpoint::from_shared(control.url())?
        .connect()
        .await?;
    graph::pin_costs(channel.clone(), args.graph).await?;
    let clip = crate::media::vp8_clip()?;
    let stream_bps = clip_bps(&clip);
    let origin = &regions[0].nodes[0];
    let publisher =
        StampedPublisher::start(&origin.http, STREAM, Arc::clone(&clip), HUB_IP.into()).await?;
    // Let the GOP cache fill (keyframe every second).
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut clients = crate::control::Clients::new(channel.clone())?;
    let (first, mut playing) = first_frames(&regions, repeats, &mut clients).await?;

    // Steady state: every region plays. Glass-to-glass and bytes over one window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let parents = graph::parents(channel.clone()).await?;
    let w = measure_window(&regions, &links, &publisher, &playing, window).await;
    let latency = region_latency(&playing, &parents);
    let link_results = link_results(&links, &w, &regions);
    let hop = hop_latency(&w.metrics_before, &w.metrics_after, &regions);

    for (_, p) in playing.drain(..) {
        p.stop().await;
    }
    drop(publisher);
    drop(proxies);
    for region in &mut regions {
        region.nodes.clear();
    }
    drop(control);
    drop(namespaces);
    Ok(WanResult {
        machine,
        quick,
        graph: args.graph,
        parents,
        nodes_per_region: per_region,
        repeats,
        window: w.elapsed,
        stream_bps,
        stream_sent_bps: w.sent as f64 * 8.0 / w.elapsed.as_secs_f64(),
        first,
        latency,
        links: link_results,
        hop,
        runtime: started.elapsed(),
    })
}

/// First-frame times, `repeats` rounds over every region (each round after the last one's
/// players stopped and the cluster went cold); returns them with the last round's players,
/// each with its region's index.
async fn first_frames(
    regions: &[Region],
    repeats: usize,
    clients: &mut crate::control::Clients,
) -> Result<(Vec<FirstFrames>, Vec<(usize, ProbePlayer)>)> {
    let within = Duration::from_secs(20);
    let mut first: Vec<FirstFrames> = REGIONS
        .iter()
        .map(|r| FirstFrames {
            region: r,
            ..Default::default()
        })
        .collect();
    let mut playing: Vec<(usize, ProbePlayer)> = Vec::new();
    for round in 0..repeats {
        if round > 0 {
            for (_, p) in playing.drain(..) {
                p.stop().await;
            }
            wait_cold(clients, within).await?;
        }
        for (i, region) in regions.iter().enumerate() {
            first_frames_in(i, region, &mut first[i], &mut playing, within).await?;
        }
    }
    Ok((first, playing))
}

/// One round's first-frame times in region `i`; the players started are added to `playing`.
async fn first_frames_in(
    i: usize,
    region: &Region,
    f: &mut FirstFrames,
    playing: &mut Vec<(usize, ProbePlayer)>,
    within: Duration,
) -> Result<()> {
    // The first node of a region; in the origin's region it already has the stream.
    let n1 = &region.nodes[0];
    let p1 = ProbePlayer::start(&n1.id, &n1.http, STREAM, HUB_IP.into()).await?;
    let t1 = p1.first_frame(within).await?;
    if i == 0 {
        f.warm.push(t1);
    } else {
        f.cold_region.push(t1);
    }
    playing.push((i, p1));
    if let Some(n2) = region.nodes.get(1) {
        let p2 = ProbePlayer::start(&n2.id, &n2.http, STREAM, HUB_IP.into()).await?;
        f.cold_node.push(p2.first_frame(within).await?);
        playing.push((i, p2));
    }
    if i != 0 {
        let p3 = ProbePlayer::start(&n1.id, &n1.http, STREAM, HUB_IP.into()).await?;
        f.warm.push(p3.first_frame(within).await?);
        playing.push((i, p3));
    }
    Ok(())
}

/// Counters on both sides of the steady-state window.
struct Window {
    elapsed: Duration,
    /// Bytes the publisher sent in the window.
    sent: u64,
    metrics_before: Vec<String>,
    metrics_after: Vec<String>,
    links_before: Vec<(DirTotals, DirTotals)>,
    links_after: Vec<(DirTotals, DirTotals)>,
}

/// Collects the players' latencies over one window and snapshots the counters around it.
async fn measure_window(
    regions: &[Region],
    links: &[Arc<Link>],
    publisher: &StampedPublisher,
    playing: &[(usize, ProbePlayer)],
    window: Duration,
) -> Window {
    let totals = || -> Vec<(DirTotals, DirTotals)> {
        links
            .iter()
            .map(|l| (l.ab.totals(), l.ba.totals()))
            .collect()
    };
    let metrics_before = node_metrics(regions).await;
    let links_before = totals();
    let sent_before = publisher.sent_bytes.load(Ordering::Relaxed);
    for (_, p) in playing {
        p.collect(true);
    }
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    for (_, p) in playing {
        p.collect(false);
    }
    let elapsed = t0.elapsed();
    let sent = publisher.sent_bytes.load(Ordering::Relaxed) - sent_before;
    let links_after = totals();
    let metrics_after = node_metrics(regions).await;
    Window {
        elapsed,
        sent,
        metrics_before,
        metrics_after,
        links_before,
        links_after,
    }
}

/// Glass-to-glass samples per region, sorted, with the region's path floor.
fn region_latency(playing: &[(usize, ProbePlayer)], parents: &[Parent]) -> Vec<RegionLatency> {
    REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut samples: Vec<Duration> = playing
                .iter()
                .filter(|(ri, _)| *ri == i)
                .flat_map(|(_, p)| p.latencies())
                .collect();
            samples.sort();
            RegionLatency {
                region: r,
                floor: graph::path_one_way(parents, r),
                samples,
            }
        })
        .collect()
}

/// Bytes over each link in the window: the proxy's counters and the nodes' own.
fn link_results(links: &[Arc<Link>], w: &Window, regions: &[Region]) -> Vec<LinkResult> {
    links
        .iter()
        .zip(w.links_before.iter().zip(&w.links_after))
        .map(|(l, ((ab0, ba0), (ab1, ba1)))| LinkResult {
            a: REGIONS[l.a],
            b: REGIONS[l.b],
            rtt: l.one_way * 2,
            loss: l.loss,
            ab: ab1.since(ab0),
            ba: ba1.since(ba0),
            relay_ab: relay_bytes(w, regions, l.a, l.b),
            relay_ba: relay_bytes(w, regions, l.b, l.a),
        })
        .collect()
}

/// Media bytes region `to`'s nodes received from region `from` in the window, per the nodes.
fn relay_bytes(w: &Window, regions: &[Region], from: usize, to: usize) -> f64 {
    let sum = |m: &[String]| -> f64 {
        regions[to]
            .nodes
            .iter()
            .zip(m)
            .map(|(_, text)| {
                crate::http::metric_sum(
                    text,
                    "strata_relay_region_bytes_total",
                    &[("peer_region", REGIONS[from]), ("direction", "in")],
                )
            })
            .sum()
    };
    let i0 = regions[..to].iter().map(|r| r.nodes.len()).sum::<usize>();
    let n = regions[to].nodes.len();
    (sum(&w.metrics_after[i0..i0 + n]) - sum(&w.metrics_before[i0..i0 + n])).max(0.0)
}
