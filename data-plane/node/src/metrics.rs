//! The node's `/metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use strata_relay::LATENCY_BUCKETS_US;

use crate::session_table::SessionKind;
use crate::state::NodeState;

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
        state.sessions.count(SessionKind::Player) as f64,
    );
    gauge(
        &mut out,
        "strata_node_publishers",
        "Publishers (WHIP and RTMP) now",
        state.sessions.count(SessionKind::Publisher) as f64,
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
        state.pullers.count() as f64,
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
        "Publishers accepted (WHIP and RTMP)",
        c.publishers_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_rtmp_connections_total",
        "RTMP connections accepted",
        c.rtmp_connections_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_rtmp_publishers_total",
        "RTMP publishers that went live",
        c.rtmp_publishers_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_rtmp_refused_total",
        "RTMP connections and publishes refused",
        c.rtmp_refused_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_srt_publishers_total",
        "SRT publishers that went live",
        c.srt_publishers_total.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_node_srt_refused_total",
        "SRT connections refused",
        c.srt_refused_total.load(Relaxed),
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
    let _ = writeln!(
        out,
        "# HELP strata_node_takeover_probes_total Probes of a main origin holder's relay port after a refused publish, by result\n\
         # TYPE strata_node_takeover_probes_total counter"
    );
    for (i, result) in ["refused", "listening", "no_answer"].iter().enumerate() {
        let v = c.takeover_probes[i].load(Relaxed);
        let _ = writeln!(
            out,
            "strata_node_takeover_probes_total{{result=\"{result}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP strata_node_backup_switches_total Streams switched to this node's backup publisher, by reason\n\
         # TYPE strata_node_backup_switches_total counter"
    );
    for (i, reason) in ["gone", "silent"].iter().enumerate() {
        let v = c.backup_switches[i].load(Relaxed);
        let _ = writeln!(
            out,
            "strata_node_backup_switches_total{{reason=\"{reason}\"}} {v}"
        );
    }
    counter(
        &mut out,
        "strata_node_backup_publishers_total",
        "WHIP backup publishers accepted (standby registered)",
        c.backup_publishers_total.load(Relaxed),
    );
    egress_metrics(&mut out, state);
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
        "strata_relay_layer_interest_in_total",
        "Simulcast layer-interest messages from downstream nodes",
        r.layer_interest_in.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_relay_layer_interest_out_total",
        "Simulcast layer-interest messages sent upstream",
        r.layer_interest_out.load(Relaxed),
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
        let region = state.peers.region(&peer);
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

/// The egress loops: what players cost and what they tried.
fn egress_metrics(out: &mut String, state: &NodeState) {
    let egress = state.rtc.egress();
    let e = egress.counters();
    let rows: &[(&str, &str, u64)] = &[
        (
            "strata_node_player_keyframe_requests_total",
            "PLI/FIR received from players",
            e.keyframe_requests.get(),
        ),
        (
            "strata_node_player_bytes_out_total",
            "SRTP and SRTCP bytes sent to players, retransmissions included",
            e.bytes_out.get(),
        ),
        (
            "strata_egress_packets_out_total",
            "RTP packets sent to players (first transmissions)",
            e.packets_out.get(),
        ),
        (
            "strata_egress_nacked_packets_total",
            "Packets players asked for again (generic NACK)",
            e.nacked_packets.get(),
        ),
        (
            "strata_egress_retransmitted_packets_total",
            "Packets resent in answer to NACKs",
            e.retransmitted_packets.get(),
        ),
        (
            "strata_egress_retransmitted_bytes_total",
            "Bytes resent in answer to NACKs",
            e.retransmitted_bytes.get(),
        ),
        (
            "strata_egress_nack_over_budget_total",
            "NACKed packets not resent: the player's retransmission budget was spent",
            e.nack_over_budget.get(),
        ),
        (
            "strata_egress_nack_duplicates_total",
            "NACKed packets not resent: resent to that player within about one RTT",
            e.nack_duplicates.get(),
        ),
        (
            "strata_egress_nack_unknown_total",
            "NACKed packets not resent: not in the stream's history",
            e.nack_unknown.get(),
        ),
        (
            "strata_egress_refused_stun_total",
            "STUN requests refused: wrong username or MESSAGE-INTEGRITY",
            e.refused_stun.get(),
        ),
        (
            "strata_egress_refused_datagrams_total",
            "Datagrams refused: unverified address or failed SRTCP",
            e.refused_datagrams.get(),
        ),
        (
            "strata_egress_connect_timeouts_total",
            "Players that did not complete DTLS within the connect timeout",
            e.connect_timeouts.get(),
        ),
        (
            "strata_egress_dtls_failures_total",
            "DTLS handshakes that failed",
            e.dtls_failures.get(),
        ),
        (
            "strata_egress_refused_candidates_total",
            "Remote candidates ignored: over the cap or outside allowed ranges",
            e.refused_candidates.get(),
        ),
        (
            "strata_egress_layer_switches_total",
            "Simulcast layer switches made for players (at a keyframe of the new layer)",
            e.layer_switches.get(),
        ),
        (
            "strata_egress_transport_feedback_total",
            "Transport-cc feedback packets read from players",
            e.transport_feedback.get(),
        ),
        (
            "strata_egress_transport_feedback_refused_total",
            "Transport-cc feedback packets refused as malformed",
            e.transport_feedback_refused.get(),
        ),
        (
            "strata_egress_probes_total",
            "Padding probes started before a move up",
            e.probes.get(),
        ),
        (
            "strata_egress_probes_passed_total",
            "Padding probes that passed",
            e.probes_passed.get(),
        ),
        (
            "strata_egress_probes_failed_total",
            "Padding probes that failed",
            e.probes_failed.get(),
        ),
        (
            "strata_egress_probes_refused_total",
            "Padding probes refused by the per-player budget",
            e.probes_refused.get(),
        ),
        (
            "strata_egress_probe_padding_bytes_total",
            "Padding bytes sent by probes",
            e.probe_padding_bytes.get(),
        ),
        (
            "strata_egress_pending_sessions",
            "Players still connecting (gauge)",
            egress.pending() as u64,
        ),
        (
            "strata_egress_loops",
            "Egress loops (gauge)",
            egress.loop_loads().len() as u64,
        ),
    ];
    for &(name, help, value) in rows {
        if name.ends_with("_total") {
            counter(out, name, help, value);
        } else {
            gauge(out, name, help, value as f64);
        }
    }
    let _ = writeln!(
        out,
        "# HELP strata_egress_players_on_layer Players of simulcast streams on each layer\n\
         # TYPE strata_egress_players_on_layer gauge"
    );
    for layer in strata_media::Layer::ALL {
        let _ = writeln!(
            out,
            "strata_egress_players_on_layer{{layer=\"{}\"}} {}",
            layer.as_str(),
            e.players_on_layer[layer.index()].get()
        );
    }
}
