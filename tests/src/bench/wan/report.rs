//! The WAN report.

use std::fmt::Write as _;
use std::time::Duration;

use super::graph::{GraphMode, Parent};
use super::proxy::DirTotals;
use super::{LINKS, REGIONS};
use crate::bench::machine::Machine;

/// First-frame times of one region, each a list over the repeats.
#[derive(Debug, Clone, Default)]
pub struct FirstFrames {
    /// The region.
    pub region: &'static str,
    /// The region's first node, the region not carrying the stream yet (pulls across the WAN).
    pub cold_region: Vec<Duration>,
    /// A second node of a region that already carries the stream (pulls inside the region).
    pub cold_node: Vec<Duration>,
    /// A node already playing the stream.
    pub warm: Vec<Duration>,
}

/// Glass-to-glass samples of one region.
#[derive(Debug, Clone)]
pub struct RegionLatency {
    /// The region.
    pub region: &'static str,
    /// One-way link delay on the relay path from the origin's region.
    pub floor: Duration,
    /// Sorted samples.
    pub samples: Vec<Duration>,
}

/// One link over the measurement window.
#[derive(Debug, Clone)]
pub struct LinkResult {
    /// One end.
    pub a: &'static str,
    /// The other end.
    pub b: &'static str,
    /// Emulated RTT.
    pub rtt: Duration,
    /// Emulated loss each way.
    pub loss: f64,
    /// Datagrams a → b.
    pub ab: DirTotals,
    /// Datagrams b → a.
    pub ba: DirTotals,
    /// Relay media bytes b's nodes received from a (their `/metrics`).
    pub relay_ab: f64,
    /// Relay media bytes a's nodes received from b.
    pub relay_ba: f64,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub struct WanResult {
    /// The machine.
    pub machine: Machine,
    /// Smoke run.
    pub quick: bool,
    /// Region graph on or off.
    pub graph: GraphMode,
    /// Where each remote region's regional origin pulled from in the window (`GetStream`).
    pub parents: Vec<Parent>,
    /// Nodes per region.
    pub nodes_per_region: usize,
    /// First-frame repeats.
    pub repeats: usize,
    /// Measurement window as it ran.
    pub window: Duration,
    /// The clip's RTP bit rate.
    pub stream_bps: f64,
    /// RTP bit rate the publisher sent in the window.
    pub stream_sent_bps: f64,
    /// First-frame times per region.
    pub first: Vec<FirstFrames>,
    /// Glass-to-glass per region.
    pub latency: Vec<RegionLatency>,
    /// Links.
    pub links: Vec<LinkResult>,
    /// Mean per-hop relay latency by receiving region (node histograms).
    pub hop: Vec<(&'static str, Option<Duration>)>,
    /// Wall time of the whole run.
    pub runtime: Duration,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// "median (min–max)" of a list, or "–".
fn spread(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(lo), Some(mid), Some(hi)) if v.len() > 1 => {
            format!("{} ({}–{})", ms(*mid), ms(*lo), ms(*hi))
        }
        (Some(one), ..) => ms(*one),
        _ => "–".into(),
    }
}

fn pct(v: &[Duration], p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

fn kbit(bytes: f64, secs: f64) -> f64 {
    bytes * 8.0 / secs / 1e3
}

impl WanResult {
    /// The markdown report.
    pub fn render(&self) -> String {
        render(self)
    }
}

fn render(r: &WanResult) -> String {
    let mut out = String::new();
    render_setup(&mut out, r);
    render_first_frames(&mut out, r);
    render_latency(&mut out, r);
    render_links(&mut out, r);
    out
}

/// What ran where: machine, regions, the links and the tree the control plane built.
fn render_setup(out: &mut String, r: &WanResult) {
    let _ = writeln!(
        out,
        "### Regions over a WAN\n\n\
         Machine: {}; {} build{}; **{}**. {} regions ({}) in network namespaces, {} node(s) each; \
         control plane, publisher and players in the bench's own namespace, one veth to each \
         region without delay. **Links are emulated by a user-space UDP proxy** (the kernel has \
         no `netem`): constant one-way delay of RTT/2, independent loss per datagram, no \
         bandwidth limit. Stream: VP8 + Opus fixture, {:.0} kbit/s of RTP, published to eu-1. \
         Whole run: {:.1} s.\n",
        r.machine,
        r.machine.profile(),
        if r.quick { ", --quick" } else { "" },
        r.graph.label(),
        REGIONS.len(),
        REGIONS.join(", "),
        r.nodes_per_region,
        r.stream_bps / 1e3,
        r.runtime.as_secs_f64()
    );
    let _ = writeln!(out, "| link | RTT | loss each way |\n|---|---:|---:|");
    for (a, b, rtt, loss) in LINKS {
        let _ = writeln!(
            out,
            "| {} – {} | {rtt} ms | {:.1} % |",
            REGIONS[a],
            REGIONS[b],
            loss * 100.0
        );
    }

    let _ = writeln!(
        out,
        "\n#### The tree (`GetStream` during the window)\n\n\
         | region | pulls from | depth | link cost (control plane) |\n|---|---|---:|---:|"
    );
    for p in &r.parents {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ms |",
            p.region, p.from, p.depth, p.link_cost_ms
        );
    }
}

/// First-frame times per region, cold and warm.
fn render_first_frames(out: &mut String, r: &WanResult) {
    let _ = writeln!(
        out,
        "\n#### First frame (WHEP POST → last packet of the first keyframe), median (min–max) of {} run(s)\n",
        r.repeats
    );
    let _ = writeln!(
        out,
        "| region | cold: first node of the region | cold: node in a region that has the stream | warm node |\n|---|---:|---:|---:|"
    );
    for f in &r.first {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            f.region,
            if f.region == REGIONS[0] {
                "(origin region)".into()
            } else {
                spread(&f.cold_region)
            },
            spread(&f.cold_node),
            spread(&f.warm),
        );
    }
}

/// Glass-to-glass latency per region, and the nodes' relay hop latency.
fn render_latency(out: &mut String, r: &WanResult) {
    let secs = r.window.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "\n#### Glass-to-glass (publisher's stack → player's stack, stamped audio, one clock), {:.0} s window\n",
        secs
    );
    let _ = writeln!(
        out,
        "| region | link delay on the path | p50 | p95 | max | p50 − link delay | samples |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for l in &r.latency {
        let p50 = pct(&l.samples, 0.5);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            l.region,
            ms(l.floor),
            p50.map_or("–".into(), ms),
            pct(&l.samples, 0.95).map_or("–".into(), ms),
            l.samples.last().copied().map_or("–".into(), ms),
            p50.map_or("–".into(), |p| format!(
                "{:.1} ms",
                (p.as_secs_f64() - l.floor.as_secs_f64()) * 1e3
            )),
            l.samples.len()
        );
    }
    let hops: Vec<String> = r
        .hop
        .iter()
        .map(|(region, d)| {
            format!(
                "{region} {}",
                d.map_or("–".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nMean relay hop latency over all hops into a region's nodes (its WAN hop and its in-region hop; `strata_relay_hop_latency_seconds`): {}.",
        hops.join(", ")
    );
}

/// Bytes over each link and direction, on the wire and per the nodes.
fn render_links(out: &mut String, r: &WanResult) {
    let secs = r.window.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "\n#### Bytes crossing each link, one stream ({:.0} kbit/s sent by the publisher in the window)\n",
        r.stream_sent_bps / 1e3
    );
    let _ = writeln!(
        out,
        "| link | direction | on the wire (IP+UDP) | ÷ stream | relay media (nodes' metrics) | datagrams lost |\n|---|---|---:|---:|---:|---:|"
    );
    for l in &r.links {
        for (from, to, d, relay) in [(l.a, l.b, &l.ab, l.relay_ab), (l.b, l.a, &l.ba, l.relay_ba)] {
            let wire = kbit(d.wire_bytes() as f64, secs);
            let _ = writeln!(
                out,
                "| {} – {} | {from} → {to} | {:.0} kbit/s | {:.2}× | {:.0} kbit/s | {} of {} |",
                l.a,
                l.b,
                wire,
                wire * 1e3 / r.stream_sent_bps.max(1.0),
                kbit(relay, secs),
                d.dropped,
                d.datagrams,
            );
        }
    }
}
