//! The egress loops under attack, with real WebRTC players on a real node: a NACK flood, a
//! forged STUN request, an offer naming a thousand candidates, and players that never finish
//! connecting. Loopback-only namespace (scripts/test.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_media::TrackKind;
use strata_rtc::client::{ClientConfig, Player, PlayerOptions};
use strata_tests::cluster::{Cluster, TestNode};
use strata_tests::http::{self, metric_sum};
use strata_tests::media::{TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;
use tokio::net::UdpSocket;

fn init() {
    strata_tests::init_test_tracing("warn,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error");
}

async fn metric(node: &TestNode, name: &str) -> f64 {
    let text = http::get(&format!("{}/metrics", node.http))
        .await
        .unwrap()
        .text();
    metric_sum(&text, name, &[])
}

/// A raw WHEP player (the client stack), connected, and the node's answer.
async fn raw_player(node: &TestNode, stream: &str) -> (Player, String) {
    let player = Player::new(&PlayerOptions::default(), &ClientConfig::default())
        .await
        .unwrap();
    let offer = player.offer().await.unwrap();
    let resp = http::post_sdp(&format!("{}/whep/{stream}", node.http), &offer)
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let answer = resp.text();
    player.set_answer(&answer).await.unwrap();
    player.connected(Duration::from_secs(10)).await.unwrap();
    (player, answer)
}

/// Counts what a player receives (bytes with a 12-byte header each) in the background.
fn spawn_counter(mut player: Player, bytes: Arc<AtomicU64>, newest: Arc<AtomicU64>) {
    tokio::spawn(async move {
        while let Some(p) = player.recv().await {
            bytes.fetch_add(p.payload.len() as u64 + 12, Ordering::Relaxed);
            if p.kind == TrackKind::Video {
                newest.store(u64::from(p.sequence_number), Ordering::Relaxed);
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_nack_flood_is_held_to_the_budget() {
    require_netns("netns_nack_flood_is_held_to_the_budget");
    init();
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let node = cluster.node("e1", "r").await.unwrap();
    let publisher = TestPublisher::start(&node.http, "cam", vp8_clip().unwrap())
        .await
        .unwrap();
    let honest = TestPlayer::start(&node.http, "cam").await.unwrap();
    honest
        .wait_for(Duration::from_secs(10), "media", |s| s.video_packets > 50)
        .await
        .unwrap();

    // The hostile player: the client stack; one task owns it, counts and sends the NACKs.
    let (hostile, _) = raw_player(&node, "cam").await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(TrackKind, Vec<u16>)>(64);
    let bytes = Arc::new(AtomicU64::new(0));
    let newest = Arc::new(AtomicU64::new(u64::MAX));
    {
        let (bytes, newest) = (Arc::clone(&bytes), Arc::clone(&newest));
        let mut hostile = hostile;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    p = hostile.recv() => {
                        let Some(p) = p else { break };
                        bytes.fetch_add(p.payload.len() as u64 + 12, Ordering::Relaxed);
                        if p.kind == TrackKind::Video {
                            newest.store(u64::from(p.sequence_number), Ordering::Relaxed);
                        }
                    }
                    Some((kind, seqs)) = rx.recv() => {
                        if let Err(e) = hostile.send_nack(kind, &seqs).await {
                            eprintln!("NACK not sent: {e}");
                        }
                    }
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while newest.load(Ordering::Relaxed) == u64::MAX {
        assert!(Instant::now() < deadline, "hostile player got no video");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Five seconds of 20 NACKs a second, each naming the 4,000 newest packets.
    let honest_before = honest.stats();
    let hostile_before = bytes.load(Ordering::Relaxed);
    let over_budget_before = metric(&node, "strata_egress_nack_over_budget_total").await;
    let resent_bytes_before = metric(&node, "strata_egress_retransmitted_bytes_total").await;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while started.elapsed() < Duration::from_secs(5) {
        tick.tick().await;
        let top = newest.load(Ordering::Relaxed) as u16;
        // Ascending, as a NACK lists them: ~240 pairs, one datagram of about 1 KB.
        let seqs: Vec<u16> = (0..4000u16).rev().map(|i| top.wrapping_sub(i)).collect();
        tx.send((TrackKind::Video, seqs)).await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let honest_after = honest.stats();
    let hostile_bytes = bytes.load(Ordering::Relaxed) - hostile_before;
    let honest_bytes = honest_after.bytes - honest_before.bytes;
    let over_budget = metric(&node, "strata_egress_nack_over_budget_total").await;
    let nacked = metric(&node, "strata_egress_nacked_packets_total").await;
    let resent = metric(&node, "strata_egress_retransmitted_packets_total").await;
    let resent_bytes =
        metric(&node, "strata_egress_retransmitted_bytes_total").await - resent_bytes_before;
    let over = over_budget - over_budget_before;
    eprintln!(
        "NACK flood over {elapsed:.1} s: honest player received {honest_bytes} B, hostile {hostile_bytes} B; \
         NACKed {nacked}, resent {resent} ({resent_bytes} B, {:.2} of the stream), over budget {over}",
        resent_bytes / honest_bytes.max(1) as f64,
    );
    // The hostile player's egress is the stream plus its retransmissions: at most 2× the
    // stream (the budget is 15 % of it).
    assert!(
        resent_bytes <= honest_bytes as f64,
        "resent {resent_bytes} B vs stream {honest_bytes} B"
    );
    assert!(
        hostile_bytes > honest_bytes / 2,
        "the hostile player still plays"
    );
    assert!(over > 1_000.0, "the flood shows in /metrics: {over}");
    // The egress families, NACK refusals included, pass Prometheus' own linter.
    let text = node.metrics().await.unwrap();
    strata_tests::promtool::check_metrics(&text)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    // The honest player on the same node lost nothing.
    assert_eq!(
        honest_after.seq_gaps, honest_before.seq_gaps,
        "{honest_after:?}"
    );
    assert!(honest_after.video_packets > honest_before.video_packets + 100);
    honest.stop().await.unwrap();
    publisher.stop().await.unwrap();
    node.stop().await.unwrap();
}

/// A STUN Binding request naming `username` with a MESSAGE-INTEGRITY that is not the
/// session's (an attacker does not know the password).
fn forged_binding_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&0x0025u16.to_be_bytes()); // USE-CANDIDATE
    attrs.extend_from_slice(&0u16.to_be_bytes());
    attrs.extend_from_slice(&0x0008u16.to_be_bytes()); // MESSAGE-INTEGRITY
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[0x5a; 20]);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    msg.extend_from_slice(&[7; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

fn sdp_attr<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(name))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_forged_stun_and_candidate_floods_steer_nothing() {
    require_netns("netns_forged_stun_and_candidate_floods_steer_nothing");
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let node = cluster.node("e2", "r").await.unwrap();
    let publisher = TestPublisher::start(&node.http, "cam", vp8_clip().unwrap())
        .await
        .unwrap();
    let (player, answer) = raw_player(&node, "cam").await;
    let bytes = Arc::new(AtomicU64::new(0));
    spawn_counter(player, Arc::clone(&bytes), Arc::new(AtomicU64::new(0)));
    let node_port: u16 = sdp_attr(&answer, "a=candidate:1 1 udp ")
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .expect("candidate port");
    let victim_ufrag = sdp_attr(&answer, "a=ice-ufrag:").to_owned();

    // The attacker knows the victim's ufrag and sends checks that would nominate its own
    // address, from a socket on another loopback address.
    let attacker = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let refused_before = metric(&node, "strata_egress_refused_stun_total").await;
    for _ in 0..20 {
        attacker
            .send_to(
                &forged_binding_request(&format!("{victim_ufrag}:whatever")),
                ("127.0.0.1", node_port),
            )
            .await
            .unwrap();
    }
    let mut buf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_millis(800), attacker.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the attacker received something: {got:?}");
    let refused = metric(&node, "strata_egress_refused_stun_total").await - refused_before;
    assert!(refused >= 20.0, "refused {refused}");
    // The victim's media did not move.
    let before = bytes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        bytes.load(Ordering::Relaxed) > before,
        "the victim still receives"
    );

    // An offer naming 1,000 candidates, some on refused addresses: accepted, the candidates
    // beyond the cap are counted, and the node (ICE-lite) sends no check to any of them.
    let probe = UdpSocket::bind("127.0.0.10:0").await.unwrap();
    let probe_addr = probe.local_addr().unwrap();
    let flooder = Player::new(&PlayerOptions::default(), &ClientConfig::default())
        .await
        .unwrap();
    let mut offer = flooder.offer().await.unwrap();
    let mut extra = String::new();
    for i in 0..1000u32 {
        let host = match i % 3 {
            0 => probe_addr.ip().to_string(),
            1 => "0.0.0.0".into(),
            _ => "224.0.0.251".into(),
        };
        extra.push_str(&format!(
            "a=candidate:{i} 1 udp 2130706431 {host} {} typ host\r\n",
            probe_addr.port()
        ));
    }
    // After the first media section's attributes: candidates are media-level.
    let at = offer.find("a=mid:").expect("a mid");
    offer.insert_str(at, &extra);
    let refused_before = metric(&node, "strata_egress_refused_candidates_total").await;
    let resp = http::post_sdp(&format!("{}/whep/cam", node.http), &offer)
        .await
        .unwrap();
    assert!(
        resp.status == 201 || resp.status == 413 || resp.status == 400,
        "{} {}",
        resp.status,
        resp.text()
    );
    if resp.status == 201 {
        let refused =
            metric(&node, "strata_egress_refused_candidates_total").await - refused_before;
        assert!(refused >= 984.0, "refused {refused} of 1,000 candidates");
    }
    let got = tokio::time::timeout(Duration::from_millis(800), probe.recv_from(&mut buf)).await;
    assert!(got.is_err(), "a check reached a named candidate: {got:?}");
    publisher.stop().await.unwrap();
    node.stop().await.unwrap();
}

/// A WHEP offer that will never connect: valid SDP, nobody behind it.
fn dead_offer(i: u32) -> String {
    format!(
        "v=0\r\no=- {i} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
         a=rtcp-mux\r\na=ice-ufrag:dead{i}\r\na=ice-pwd:deaddeaddeaddeaddeaddead{i}\r\n\
         a=fingerprint:sha-256 {fp}\r\na=setup:actpass\r\na=rtpmap:96 VP8/90000\r\n",
        fp = ["AB"; 32].join(":")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_pending_players_leave_capacity_alone_and_are_reaped() {
    require_netns("netns_pending_players_leave_capacity_alone_and_are_reaped");
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut cfg = cluster.node_config("e3", "r");
    cfg.capacity = 5;
    cfg.rtc_connect_timeout = Duration::from_secs(3);
    let node = cluster.node_with(cfg).await.unwrap();
    let publisher = TestPublisher::start(&node.http, "cam", vp8_clip().unwrap())
        .await
        .unwrap();
    // Wait until the stream is live on the node.
    let first = TestPlayer::start(&node.http, "cam").await.unwrap();
    first
        .wait_for(Duration::from_secs(10), "media", |s| s.video_packets > 10)
        .await
        .unwrap();
    for i in 0..200 {
        let resp = http::post_sdp(&format!("{}/whep/cam", node.http), &dead_offer(i))
            .await
            .unwrap();
        assert_eq!(resp.status, 201, "offer {i}: {}", resp.text());
    }
    assert_eq!(metric(&node, "strata_egress_pending_sessions").await, 200.0);
    // Capacity (5) counts connected players only: a real one still gets in.
    let second = TestPlayer::start(&node.http, "cam").await.unwrap();
    second
        .wait_for(Duration::from_secs(10), "media", |s| s.video_packets > 10)
        .await
        .unwrap();
    // Reaped at the connect timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = metric(&node, "strata_egress_pending_sessions").await;
        if pending == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} sessions still pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&node, "strata_egress_connect_timeouts_total").await >= 200.0);
    let players = metric(&node, "strata_node_players").await;
    assert_eq!(players, 2.0, "only the two real players remain");
    first.stop().await.unwrap();
    second.stop().await.unwrap();
    publisher.stop().await.unwrap();
    node.stop().await.unwrap();
}
