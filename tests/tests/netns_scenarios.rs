//! The reference scenarios: Origin1, Edge11, Edge12 in Region1; Edge21,
//! Edge22 (later Edge23) in Region2; a third region joining at once. Real
//! etcd, control plane, nodes, WebRTC and QUIC; loopback-only namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use strata_tests::cluster::{Cluster, Pairs, TestNode, topology};
use strata_tests::http::metric_sum;
use strata_tests::media::{PlayStats, TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;

fn init() {
    strata_tests::init_test_tracing("warn,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error");
}

/// Every player gets decodable media: keyframe first, no sequence gaps.
async fn assert_decodable(p: &TestPlayer) -> PlayStats {
    let st = p
        .wait_for(Duration::from_secs(20), "2 s of media", |s| {
            s.video_packets >= 200 && s.audio_packets >= 60
        })
        .await
        .unwrap();
    assert_eq!(st.first_video_is_keyframe, Some(true), "{}: {st:?}", p.node);
    assert_eq!(st.seq_gaps, 0, "{}: {st:?}", p.node);
    assert_eq!(st.ssrc_changes, 0, "{}: {st:?}", p.node);
    st
}

fn first_frame_ms(p: &TestPlayer) -> f64 {
    let st = p.stats();
    st.first_video
        .map(|t| t.duration_since(p.requested_at).as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

fn sorted(mut v: Pairs) -> Pairs {
    v.sort();
    v
}

fn pairs(v: &[(&str, &str)]) -> Pairs {
    sorted(
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

async fn relay_out(node: &TestNode, labels: &[(&str, &str)]) -> f64 {
    let m = node.metrics().await.unwrap();
    metric_sum(
        &m,
        "strata_relay_bytes_total",
        &[labels, &[("direction", "out")]].concat(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_reference_scenarios_one_to_three() {
    require_netns("netns_reference_scenarios_one_to_three");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let origin1 = c.node("Origin1", "Region1").await.unwrap();
    let edge11 = c.node("Edge11", "Region1").await.unwrap();
    let _edge12 = c.node("Edge12", "Region1").await.unwrap();
    let edge21 = c.node("Edge21", "Region2").await.unwrap();
    let edge22 = c.node("Edge22", "Region2").await.unwrap();

    // 1. Publisher and players in the same region.
    let publisher = TestPublisher::start(&origin1.http, "live", vp8_clip().unwrap())
        .await
        .unwrap();
    assert_eq!(publisher.node, "Origin1");
    let player1 = TestPlayer::start(&edge11.http, "live").await.unwrap();
    assert_decodable(&player1).await;
    let tree = c.tree("live").await.unwrap();
    assert_eq!(tree.main.as_ref().unwrap().node_id, "Origin1");
    assert_eq!(topology(&tree), (vec![], pairs(&[("Edge11", "Origin1")])));

    // 2. Players in another region: Edge21 becomes Region2's origin, Edge22 pulls from it.
    let player2 = TestPlayer::start(&edge21.http, "live").await.unwrap();
    assert_decodable(&player2).await;
    let cold = first_frame_ms(&player2);
    let player3 = TestPlayer::start(&edge22.http, "live").await.unwrap();
    assert_decodable(&player3).await;
    let tree = c.tree("live").await.unwrap();
    assert_eq!(
        topology(&tree),
        (
            pairs(&[("Region2", "Edge21")]),
            pairs(&[("Edge11", "Origin1"), ("Edge22", "Edge21")])
        )
    );
    let warm_player = TestPlayer::start(&edge21.http, "live").await.unwrap();
    assert_decodable(&warm_player).await;
    let warm = first_frame_ms(&warm_player);
    eprintln!(
        "first frame: cold node {cold:.0} ms (Region2, stream not present), warm node {warm:.0} ms"
    );

    // 3. Scale inside Region2: Edge23 and ten more players across its nodes.
    let edge23 = c.node("Edge23", "Region2").await.unwrap();
    let region2 = [&edge21, &edge22, &edge23];
    let mut more = Vec::new();
    for i in 0..10 {
        more.push(
            TestPlayer::start(&region2[i % 3].http, "live")
                .await
                .unwrap(),
        );
    }
    for p in &more {
        assert_decodable(p).await;
    }
    let tree = c.tree("live").await.unwrap();
    assert_eq!(
        topology(&tree),
        (
            pairs(&[("Region2", "Edge21")]),
            pairs(&[
                ("Edge11", "Origin1"),
                ("Edge22", "Edge21"),
                ("Edge23", "Edge21")
            ])
        )
    );
    // Bytes crossing Region1 → Region2 over a window, against one copy of
    // the stream inside Region1 (Origin1 → Edge11) over the same window.
    let cross0 = relay_out(&origin1, &[("peer_region", "Region2")]).await;
    let local0 = relay_out(&origin1, &[("peer", "Edge11")]).await;
    let p_before = player1.stats().bytes;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(4);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cross = relay_out(&origin1, &[("peer_region", "Region2")]).await - cross0;
    let local = relay_out(&origin1, &[("peer", "Edge11")]).await - local0;
    let one_player = (player1.stats().bytes - p_before) as f64;
    let ratio = cross / local;
    eprintln!(
        "Region1→Region2 over {:.1} s: {cross:.0} B; one copy in Region1: {local:.0} B (ratio {ratio:.4}); \
         one player's RTP payload: {one_player:.0} B; 13 players and 3 nodes in Region2",
        started.elapsed().as_secs_f64()
    );
    assert!(
        (ratio - 1.0).abs() <= 0.02,
        "cross-region bytes {cross} vs one copy {local}"
    );
    // Only Edge21 receives from Region1.
    assert_eq!(relay_out(&origin1, &[("peer", "Edge22")]).await, 0.0);
    assert_eq!(relay_out(&origin1, &[("peer", "Edge23")]).await, 0.0);

    for p in [player1, player2, player3, warm_player]
        .into_iter()
        .chain(more)
    {
        p.stop().await.unwrap();
    }
    publisher.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_reference_scenario_four_simultaneous_region() {
    require_netns("netns_reference_scenario_four_simultaneous_region");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let origin1 = c.node("Origin1", "Region1").await.unwrap();
    let mut r3 = Vec::new();
    for i in 1..=3 {
        r3.push(c.node(&format!("Edge3{i}"), "Region3").await.unwrap());
    }
    let publisher = TestPublisher::start(&origin1.http, "live", vp8_clip().unwrap())
        .await
        .unwrap();
    // Three players arrive at the same moment on three Region3 nodes.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(3));
    let mut tasks = Vec::new();
    for n in &r3 {
        let (http, b) = (n.http.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            TestPlayer::start(&http, "live").await
        }));
    }
    let mut players = Vec::new();
    for t in tasks {
        players.push(t.await.unwrap().unwrap());
    }
    for p in &players {
        assert_decodable(p).await;
    }
    let tree = c.tree("live").await.unwrap();
    let (regional, subs) = topology(&tree);
    assert_eq!(regional.len(), 1, "{tree:?}");
    let holder = regional[0].1.clone();
    let expected: Pairs = r3
        .iter()
        .filter(|n| n.id != holder)
        .map(|n| (n.id.clone(), holder.clone()))
        .collect();
    assert_eq!(sorted(subs), sorted(expected));
    for p in players {
        p.stop().await.unwrap();
    }
    publisher.stop().await.unwrap();
}
