//! End to end with real parts: etcd, the control plane, four nodes in two
//! regions, a WHIP publisher and WHEP players speaking WebRTC, QUIC with
//! mutual TLS between nodes. Runs inside a loopback-only network namespace
//! (scripts/test.sh), like every test that opens WebRTC connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_tests::cluster::{Cluster, topology};
use strata_tests::media::{TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;

fn init() {
    strata_tests::init_test_tracing("warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_publish_in_a_play_everywhere() {
    require_netns("netns_publish_in_a_play_everywhere");
    init();
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let a1 = cluster.node("a1", "ra").await.unwrap();
    let a2 = cluster.node("a2", "ra").await.unwrap();
    let b1 = cluster.node("b1", "rb").await.unwrap();
    let b2 = cluster.node("b2", "rb").await.unwrap();

    let publisher = TestPublisher::start(&a1.http, "cam", vp8_clip().unwrap())
        .await
        .unwrap();
    assert_eq!(publisher.node, "a1");

    let mut players = Vec::new();
    for n in [&a1, &a2, &b1, &b2] {
        players.push(TestPlayer::start(&n.http, "cam").await.unwrap());
    }
    for p in &players {
        let st = p
            .wait_for(Duration::from_secs(15), "3 s of media", |s| {
                s.video_packets >= 300 && s.audio_packets >= 100
            })
            .await
            .unwrap();
        assert_eq!(st.first_video_is_keyframe, Some(true), "{}: {st:?}", p.node);
        assert_eq!(st.seq_gaps, 0, "{}: {st:?}", p.node);
        assert_eq!(st.ssrc_changes, 0, "{}: {st:?}", p.node);
    }

    let tree = cluster.tree("cam").await.unwrap();
    assert_eq!(tree.main.as_ref().unwrap().node_id, "a1");
    let (regional, subs) = topology(&tree);
    assert_eq!(regional.len(), 1, "{tree:?}");
    assert_eq!(regional[0].0, "rb");
    let rb_origin = regional[0].1.clone();
    let rb_other = if rb_origin == "b1" { "b2" } else { "b1" };
    let mut expected = vec![
        ("a2".to_owned(), "a1".to_owned()),
        (rb_other.to_owned(), rb_origin.clone()),
    ];
    expected.sort();
    let mut subs = subs;
    subs.sort();
    assert_eq!(subs, expected);

    // One copy crossed into rb: the regional origin received it from a1,
    // the other rb node from the regional origin.
    let m = a1.metrics().await.unwrap();
    // Every family the node exports, relay ones included, passes Prometheus' own linter.
    strata_tests::promtool::check_metrics(&m)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{m}"));
    let to_rb = strata_tests::http::metric_sum(
        &m,
        "strata_relay_bytes_total",
        &[("peer_region", "rb"), ("direction", "out")],
    );
    let to_origin = strata_tests::http::metric_sum(
        &m,
        "strata_relay_bytes_total",
        &[("peer", &rb_origin), ("direction", "out")],
    );
    assert!(
        to_rb > 0.0 && (to_rb - to_origin).abs() < 1.0,
        "a1 sent to rb nodes other than {rb_origin}:\n{m}"
    );

    // A picture-loss report from a player two hops away reaches the
    // publisher as a PLI (coalesced at each hop, so a burst yields few).
    let before = publisher
        .keyframe_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..10 {
        players[3].request_keyframe().await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let after = loop {
        let n = publisher
            .keyframe_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        if n > before || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(after > before, "no PLI reached the publisher");
    assert!(
        after - before <= 4,
        "PLIs were not coalesced: {}",
        after - before
    );

    for p in players {
        p.stop().await.unwrap();
    }
    // With no players left, every node lets go after `linger` (2 s here):
    // the regional origin and the subscribers disappear from the tree.
    let started = std::time::Instant::now();
    loop {
        let tree = cluster.tree("cam").await.unwrap();
        let (regional, subs) = topology(&tree);
        if regional.is_empty() && subs.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "still held after linger: {tree:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "released {:?} after the last player left",
        started.elapsed()
    );
    publisher.stop().await.unwrap();
    for n in [a1, a2, b1, b2] {
        n.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_http_bad_input_gets_status_codes() {
    require_netns("netns_http_bad_input_gets_status_codes");
    init();
    use strata_tests::http::{self, request};
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let a1 = cluster.node("a1", "ra").await.unwrap();
    let a2 = cluster.node("a2", "ra").await.unwrap();
    let sdp = [("Content-Type", "application/sdp")];
    let url = |n: &strata_tests::cluster::TestNode, p: &str| format!("{}{p}", n.http);

    let r = request(
        "POST",
        &url(&a1, "/whip/s1"),
        &[("Content-Type", "text/plain")],
        b"v=0",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    let r = request("POST", &url(&a1, "/whip/s1"), &sdp, b"hello")
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        "POST",
        &url(&a1, "/whip/s1"),
        &sdp,
        b"v=0\r\no=- 0 0 IN IP4 0\r\ngarbage\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request("POST", &url(&a1, "/whep/bad%2Fname"), &sdp, b"v=0")
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let big = vec![b'a'; 70 * 1024];
    let r = request("POST", &url(&a1, "/whip/s1"), &sdp, &big)
        .await
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    let r = request(
        "PATCH",
        &url(&a1, "/whip/s1/nosuch"),
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        b"a=x",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    let r = request("DELETE", &url(&a1, "/whep/s1/nosuch"), &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = request("OPTIONS", &url(&a1, "/whip/s1"), &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert!(
        r.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );

    // A real offer for a stream that is not live: 404.
    let player = strata_rtc::client::Player::new(&Default::default(), &Default::default())
        .await
        .unwrap();
    let offer = player.offer().await.unwrap();
    let r = http::post_sdp(&url(&a2, "/whep/nothing"), &offer)
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());

    // Live on a1: publishing the same stream on a2 is a conflict.
    let publisher = TestPublisher::start(&a1.http, "s1", vp8_clip().unwrap())
        .await
        .unwrap();
    let p2 = strata_rtc::client::Publisher::new(vp8_clip().unwrap().tracks(), &Default::default())
        .await
        .unwrap();
    let r = http::post_sdp(&url(&a2, "/whip/s1"), &p2.offer().await.unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    // PATCH with a stale ETag on a live session: 412.
    let r = request(
        "PATCH",
        &publisher.session_url,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", "\"nope\""),
        ],
        b"a=end-of-candidates\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 412, "{}", r.text());
    publisher.stop().await.unwrap();
    // Nothing crashed.
    assert_eq!(http::get(&url(&a1, "/healthz")).await.unwrap().status, 200);
    assert_eq!(http::get(&url(&a2, "/healthz")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_full_node_redirects_to_another() {
    require_netns("netns_full_node_redirects_to_another");
    init();
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let a1 = cluster.node("a1", "ra").await.unwrap();
    let mut cfg = cluster.node_config("a2", "ra");
    cfg.capacity = 1;
    let a2 = cluster.node_with(cfg).await.unwrap();
    let publisher = TestPublisher::start(&a1.http, "s", vp8_clip().unwrap())
        .await
        .unwrap();
    let first = TestPlayer::start(&a2.http, "s").await.unwrap();
    assert_eq!(first.node, "a2");
    // Capacity counts connected players (one still connecting is pending, not counted):
    // wait until the first one plays.
    first
        .wait_for(Duration::from_secs(15), "media", |s| s.video_packets >= 1)
        .await
        .unwrap();
    // a2 is full: its answer is a 307 to the node placement picks.
    let second = TestPlayer::start(&a2.http, "s").await.unwrap();
    assert_eq!(second.node, "a1");
    for p in [&first, &second] {
        let st = p
            .wait_for(Duration::from_secs(15), "media", |s| s.video_packets >= 100)
            .await
            .unwrap();
        assert_eq!(st.first_video_is_keyframe, Some(true));
    }
    let m = a2.metrics().await.unwrap();
    assert_eq!(
        strata_tests::http::metric_sum(&m, "strata_node_redirects_total", &[]),
        1.0
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
    publisher.stop().await.unwrap();
}
