//! The node's `/metrics`: its own, the egress loops' and the relay's families, read at
//! scrape time from the atomics their owners keep (nothing is counted twice) into a
//! `prometheus-client` registry, and exposed in the Prometheus text format
//! (`strata_common::metrics`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use strata_common::metrics::{ConstFamily, HistogramSnapshot, counter_name};
use strata_relay::{LATENCY_BUCKETS_US, RelayStats};
use strata_rtc::{Counter as EgressCounter, EgressCounters};

use crate::counters::NodeCounters;
use crate::session_table::SessionKind;
use crate::state::NodeState;

/// Registers a counter exposed as `name` (ending in `_total`) with its current value.
fn counter(r: &mut Registry, name: &'static str, help: &str, v: u64) {
    r.register(counter_name(name), help, ConstCounter::new(v));
}

fn gauge(r: &mut Registry, name: &'static str, help: &str, v: i64) {
    r.register(name, help, ConstGauge::new(v));
}

/// Registers a counter family with one label: (label value, counter value) series.
fn labelled<const N: usize>(
    r: &mut Registry,
    name: &'static str,
    help: &str,
    key: &'static str,
    series: [(&'static str, u64); N],
) {
    let series = series.map(|(v, n)| ([(key, v)], ConstCounter::new(n)));
    r.register(counter_name(name), help, ConstFamily::new(series.into()));
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A counter of a table: exposed name, help, where in its owner `T` the count is kept.
type Row<T, C> = (&'static str, &'static str, fn(&T) -> &C);

/// The node's counters: exposed name, help, where the count is kept.
const NODE_COUNTERS: [Row<NodeCounters, AtomicU64>; 9] = [
    (
        "strata_node_publishers_total",
        "Publishers accepted (WHIP and RTMP)",
        |c| &c.publishers_total,
    ),
    (
        "strata_node_rtmp_connections_total",
        "RTMP connections accepted",
        |c| &c.rtmp_connections_total,
    ),
    (
        "strata_node_rtmp_publishers_total",
        "RTMP publishers that went live",
        |c| &c.rtmp_publishers_total,
    ),
    (
        "strata_node_rtmp_refused_total",
        "RTMP connections and publishes refused",
        |c| &c.rtmp_refused_total,
    ),
    (
        "strata_node_srt_publishers_total",
        "SRT publishers that went live",
        |c| &c.srt_publishers_total,
    ),
    (
        "strata_node_srt_refused_total",
        "SRT connections refused",
        |c| &c.srt_refused_total,
    ),
    ("strata_node_players_total", "WHEP sessions accepted", |c| {
        &c.players_total
    }),
    (
        "strata_node_refused_total",
        "WHIP/WHEP requests refused",
        |c| &c.refused_total,
    ),
    (
        "strata_node_redirects_total",
        "Requests redirected elsewhere",
        |c| &c.redirects_total,
    ),
];

/// The egress loops' counters: exposed name, help, where the count is kept.
const EGRESS_COUNTERS: [Row<EgressCounters, EgressCounter>; 22] = [
    (
        "strata_node_player_keyframe_requests_total",
        "PLI/FIR received from players",
        |e| &e.keyframe_requests,
    ),
    (
        "strata_node_player_bytes_out_total",
        "SRTP and SRTCP bytes sent to players, retransmissions included",
        |e| &e.bytes_out,
    ),
    (
        "strata_egress_packets_out_total",
        "RTP packets sent to players (first transmissions)",
        |e| &e.packets_out,
    ),
    (
        "strata_egress_nacked_packets_total",
        "Packets players asked for again (generic NACK)",
        |e| &e.nacked_packets,
    ),
    (
        "strata_egress_retransmitted_packets_total",
        "Packets resent in answer to NACKs",
        |e| &e.retransmitted_packets,
    ),
    (
        "strata_egress_retransmitted_bytes_total",
        "Bytes resent in answer to NACKs",
        |e| &e.retransmitted_bytes,
    ),
    (
        "strata_egress_nack_over_budget_total",
        "NACKed packets not resent: the player's retransmission budget was spent",
        |e| &e.nack_over_budget,
    ),
    (
        "strata_egress_nack_duplicates_total",
        "NACKed packets not resent: resent to that player within about one RTT",
        |e| &e.nack_duplicates,
    ),
    (
        "strata_egress_nack_unknown_total",
        "NACKed packets not resent: not in the stream's history",
        |e| &e.nack_unknown,
    ),
    (
        "strata_egress_refused_stun_total",
        "STUN requests refused: wrong username or MESSAGE-INTEGRITY",
        |e| &e.refused_stun,
    ),
    (
        "strata_egress_refused_datagrams_total",
        "Datagrams refused: unverified address or failed SRTCP",
        |e| &e.refused_datagrams,
    ),
    (
        "strata_egress_connect_timeouts_total",
        "Players that did not complete DTLS within the connect timeout",
        |e| &e.connect_timeouts,
    ),
    (
        "strata_egress_dtls_failures_total",
        "DTLS handshakes that failed",
        |e| &e.dtls_failures,
    ),
    (
        "strata_egress_refused_candidates_total",
        "Remote candidates ignored: over the cap or outside allowed ranges",
        |e| &e.refused_candidates,
    ),
    (
        "strata_egress_layer_switches_total",
        "Simulcast layer switches made for players (at a keyframe of the new layer)",
        |e| &e.layer_switches,
    ),
    (
        "strata_egress_transport_feedback_total",
        "Transport-cc feedback packets read from players",
        |e| &e.transport_feedback,
    ),
    (
        "strata_egress_transport_feedback_refused_total",
        "Transport-cc feedback packets refused as malformed",
        |e| &e.transport_feedback_refused,
    ),
    (
        "strata_egress_probes_total",
        "Padding probes started before a move up",
        |e| &e.probes,
    ),
    (
        "strata_egress_probes_passed_total",
        "Padding probes that passed",
        |e| &e.probes_passed,
    ),
    (
        "strata_egress_probes_failed_total",
        "Padding probes that failed",
        |e| &e.probes_failed,
    ),
    (
        "strata_egress_probes_refused_total",
        "Padding probes refused by the per-player budget",
        |e| &e.probes_refused,
    ),
    (
        "strata_egress_probe_padding_bytes_total",
        "Padding bytes sent by probes",
        |e| &e.probe_padding_bytes,
    ),
];

/// The relay's counters: exposed name, help, where the count is kept.
const RELAY_COUNTERS: [Row<RelayStats, AtomicU64>; 9] = [
    (
        "strata_relay_group_resets_total",
        "Relay groups reset for lateness",
        |s| &s.group_resets,
    ),
    (
        "strata_relay_groups_skipped_total",
        "Relay groups skipped by receivers",
        |s| &s.groups_skipped,
    ),
    (
        "strata_relay_keyframe_requests_in_total",
        "Keyframe requests from downstream nodes",
        |s| &s.keyframe_requests_in,
    ),
    (
        "strata_relay_keyframe_requests_out_total",
        "Keyframe requests sent upstream",
        |s| &s.keyframe_requests_out,
    ),
    (
        "strata_relay_layer_interest_in_total",
        "Simulcast layer-interest messages from downstream nodes",
        |s| &s.layer_interest_in,
    ),
    (
        "strata_relay_layer_interest_out_total",
        "Simulcast layer-interest messages sent upstream",
        |s| &s.layer_interest_out,
    ),
    (
        "strata_relay_subscriptions_served_total",
        "Relay subscriptions served",
        |s| &s.subscriptions_served,
    ),
    (
        "strata_relay_subscriptions_refused_total",
        "Relay subscriptions refused",
        |s| &s.subscriptions_refused,
    ),
    (
        "strata_relay_protocol_errors_total",
        "Relay connections closed for protocol errors",
        |s| &s.protocol_errors,
    ),
];

/// Renders every metric of the node.
pub fn render(state: &NodeState) -> Result<String, fmt::Error> {
    let mut r = Registry::default();
    node_metrics(&mut r, state);
    egress_metrics(&mut r, state);
    let c = &state.counters;
    counter(
        &mut r,
        "strata_node_publisher_bytes_in_total",
        "RTP bytes received from publishers",
        c.publisher_bytes_in.load(Relaxed),
    );
    relay_metrics(&mut r, state);
    strata_common::metrics::encode(&[&r])
}

/// Sessions, streams and what the node accepted, refused and redirected.
fn node_metrics(r: &mut Registry, state: &NodeState) {
    let gauges = [
        (
            "strata_node_players",
            "WHEP sessions now",
            count(state.sessions.count(SessionKind::Player)),
        ),
        (
            "strata_node_publishers",
            "Publishers (WHIP and RTMP) now",
            count(state.sessions.count(SessionKind::Publisher)),
        ),
        (
            "strata_node_streams",
            "Streams carried by this node",
            count(state.hub.streams().len()),
        ),
        (
            "strata_node_upstream_pulls",
            "Streams pulled from upstream",
            count(state.pullers.count()),
        ),
        (
            "strata_node_draining",
            "1 while the node drains",
            i64::from(state.is_draining()),
        ),
    ];
    for (name, help, v) in gauges {
        gauge(r, name, help, v);
    }
    let c = &state.counters;
    for (name, help, at) in NODE_COUNTERS {
        counter(r, name, help, at(c).load(Relaxed));
    }
    let probes = &c.takeover_probes;
    labelled(
        r,
        "strata_node_takeover_probes_total",
        "Probes of a main origin holder's relay port after a refused publish, by result",
        "result",
        [
            ("refused", probes[0].load(Relaxed)),
            ("listening", probes[1].load(Relaxed)),
            ("no_answer", probes[2].load(Relaxed)),
        ],
    );
    let switches = &c.backup_switches;
    labelled(
        r,
        "strata_node_backup_switches_total",
        "Streams switched to this node's backup publisher, by reason",
        "reason",
        [
            ("gone", switches[0].load(Relaxed)),
            ("silent", switches[1].load(Relaxed)),
        ],
    );
    counter(
        r,
        "strata_node_backup_publishers_total",
        "WHIP backup publishers accepted (standby registered)",
        c.backup_publishers_total.load(Relaxed),
    );
}

/// The egress loops: what players cost and what they tried.
fn egress_metrics(r: &mut Registry, state: &NodeState) {
    let egress = state.rtc.egress();
    let e = egress.counters();
    for (name, help, at) in EGRESS_COUNTERS {
        counter(r, name, help, at(e).get());
    }
    gauge(
        r,
        "strata_egress_pending_sessions",
        "Players still connecting",
        count(egress.pending()),
    );
    gauge(
        r,
        "strata_egress_loops",
        "Egress loops",
        count(egress.loop_loads().len()),
    );
    let layers = strata_media::Layer::ALL.map(|layer| {
        let n = e.players_on_layer[layer.index()].get();
        (
            [("layer", layer.as_str())],
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)),
        )
    });
    r.register(
        "strata_egress_players_on_layer",
        "Players of simulcast streams on each layer",
        ConstFamily::new(layers.into()),
    );
}

/// The relay's counters, its traffic per peer node and per peer region, and the hop
/// latency histogram.
fn relay_metrics(r: &mut Registry, state: &NodeState) {
    let s = &state.relay_stats;
    for (name, help, at) in RELAY_COUNTERS {
        counter(r, name, help, at(s).load(Relaxed));
    }

    // Per peer node and per peer region, both directions.
    let mut peers = Vec::new();
    let mut regions: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for (peer, st) in s.peers() {
        let region = state.peers.region(&peer);
        for (dir, v) in [
            ("in", st.bytes_in.load(Relaxed)),
            ("out", st.bytes_out.load(Relaxed)),
        ] {
            *regions.entry((region.clone(), dir)).or_default() += v;
            let labels = [
                ("peer", peer.clone()),
                ("peer_region", region.clone()),
                ("direction", dir.to_owned()),
            ];
            peers.push((labels, ConstCounter::new(v)));
        }
    }
    r.register(
        counter_name("strata_relay_bytes_total"),
        "Relay media bytes by peer node and direction",
        ConstFamily::new(peers),
    );
    let regions = regions
        .into_iter()
        .map(|((region, dir), v)| {
            let labels = [("peer_region", region), ("direction", dir.to_owned())];
            (labels, ConstCounter::new(v))
        })
        .collect();
    r.register(
        counter_name("strata_relay_region_bytes_total"),
        "Relay media bytes by peer region and direction",
        ConstFamily::new(regions),
    );

    let h = &s.hop_latency;
    let bounds = LATENCY_BUCKETS_US
        .iter()
        .map(|us| *us as f64 / 1e6)
        .chain([f64::INFINITY]);
    r.register(
        "strata_relay_hop_latency_seconds",
        "Per-hop relay latency (receiver clock minus sender clock)",
        HistogramSnapshot {
            sum: h.sum_us() as f64 / 1e6,
            buckets: bounds.zip(h.buckets()).collect(),
        },
    );
}
