//! The node's `/metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use strata_relay::LATENCY_BUCKETS_US;

use crate::state::{NodeState, SessionKind};

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric of the node.
pub fn render(state: &NodeState) -> String {
    let mut out = String::new();
    let c = &state.counters;
    gauge(
        &mut out,
        "strata_node_players",
        "WHEP sessions now",
        state.session_count(SessionKind::Player) as f64,
    );
    gauge(
        &mut out,
        "strata_node_publishers",
        "WHIP sessions now",
        state.session_count(SessionKind::Publisher) as f64,
    );
    gauge(
        &mut out,
        "strata_node_streams",
        "Streams carried by this node",
        state.hub.streams().len() as f64,
    );
    gauge(
        &mut out,
        "strata_node_upstream_pulls",
        "Streams pulled from upstream",
        state.puller_count() as f64,
    );
    gauge(
        &mut out,
        "strata_node_draining",
        "1 while the node drains",
        if state.is_draining() { 1.0 } else { 0.0 },
    );
    counter(
        &mut out,
        "strata_node_publishers_total",
        "WHIP sessions accepted",
        c.publishers_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_players_total",
        "WHEP sessions accepted",
        c.players_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_refused_total",
        "WHIP/WHEP requests refused",
        c.refused_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_redirects_total",
        "Requests redirected elsewhere",
        c.redirects_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_player_keyframe_requests_total",
        "PLI/FIR received from players",
        c.player_keyframe_requests.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_player_bytes_out_total",
        "RTP bytes sent to players",
        c.player_bytes_out.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_publisher_bytes_in_total",
        "RTP bytes received from publishers",
        c.publisher_bytes_in.load(Relaxed),
    );

    let r = &state.relay_stats;
    counter(
        &mut out,
        "strata_relay_group_resets_total",
        "Relay groups reset for lateness",
        r.group_resets.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_relay_groups_skipped_total",
        "Relay groups skipped by receivers",
        r.groups_skipped.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_relay_keyframe_requests_in_total",
        "Keyframe requests from downstream nodes",
        r.keyframe_requests_in.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_relay_keyframe_requests_out_total",
        "Keyframe requests sent upstream",
        r.keyframe_requests_out.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_relay_subscriptions_served_total",
        "Relay subscriptions served",
        r.subscriptions_served.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_relay_subscriptions_refused_total",
        "Relay subscriptions refused",
        r.subscriptions_refused.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_relay_protocol_errors_total",
        "Relay connections closed for protocol errors",
        r.protocol_errors.load(Relaxed),
    );

    // Per peer node and per peer region, both directions.
    let mut regions: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let _ = writeln!(
        out,
        "# HELP strata_relay_bytes_total Relay media bytes by peer node and direction\n# TYPE strata_relay_bytes_total counter"
    );
    for (peer, st) in r.peers() {
        let region = state.peer_region(&peer);
        for (dir, v) in [
            ("in", st.bytes_in.load(Relaxed)),
            ("out", st.bytes_out.load(Relaxed)),
        ] {
            let _ = writeln!(
                out,
                "strata_relay_bytes_total{{peer=\"{}\",peer_region=\"{}\",direction=\"{dir}\"}} {v}",
                label(&peer),
                label(&region)
            );
            *regions.entry((region.clone(), dir)).or_default() += v;
        }
    }
    let _ = writeln!(
        out,
        "# HELP strata_relay_region_bytes_total Relay media bytes by peer region and direction\n# TYPE strata_relay_region_bytes_total counter"
    );
    for ((region, dir), v) in regions {
        let _ = writeln!(
            out,
            "strata_relay_region_bytes_total{{peer_region=\"{}\",direction=\"{dir}\"}} {v}",
            label(&region)
        );
    }

    let h = &r.hop_latency;
    let _ = writeln!(
        out,
        "# HELP strata_relay_hop_latency_seconds Per-hop relay latency (receiver clock minus sender clock)\n# TYPE strata_relay_hop_latency_seconds histogram"
    );
    let buckets = h.buckets();
    let mut cumulative = 0u64;
    for (i, le) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "strata_relay_hop_latency_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *le as f64 / 1e6
        );
    }
    let _ = writeln!(
        out,
        "strata_relay_hop_latency_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count()
    );
    let _ = writeln!(
        out,
        "strata_relay_hop_latency_seconds_sum {}",
        h.sum_us() as f64 / 1e6
    );
    let _ = writeln!(out, "strata_relay_hop_latency_seconds_count {}", h.count());
    out
}
