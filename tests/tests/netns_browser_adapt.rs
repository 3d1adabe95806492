//! A real browser publishing simulcast, and per-player adaptation: headless Chromium (driven
//! by `tests/browser/drive.mjs`) publishes three layers on r1-a; on r2-a a Chromium player on
//! a clean path gets the top layer and a player behind a rate-limited path
//! (`strata_tests::shaper`) adapts down and back up. A binary of its own, so that no other
//! browser test runs beside it. Loopback-only namespace (scripts/test.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser_common;

use std::time::{Duration, Instant};

use browser_common::*;
use strata_tests::cluster::Cluster;
use strata_tests::media::TestPlayer;
use strata_tests::ports::require_netns;

/// Chromium publishes three layers on r1-a; on r2-a a Chromium player on a clean path gets
/// the top layer, and a player behind a 600 kbit/s path moves to a lower layer within 5 s
/// without a freeze over 1 s, then climbs back to the top within 15 s of the limit being
/// lifted, its stream keyframe-first, on one SSRC and gap-free across the switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_browser_simulcast_adapts_to_a_limited_path() {
    require_netns("netns_browser_simulcast_adapts_to_a_limited_path");
    init();
    let (node, driver) = browser_tools();
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let r1a = cluster.node("r1-a", "r1").await.unwrap();
    let r2a = cluster.node("r2-a", "r2").await.unwrap();
    let (child, res) = run_driver(
        &node,
        &driver,
        &[
            "--publish",
            &format!("{}/publish/simcam", r1a.http),
            // Chromium adds the upper layers as its estimate of the publishing path grows.
            "--min-publish-width",
            "640",
            "--play",
            &format!("{}/play/simcam", r2a.http),
            "--frames",
            "30",
        ],
    )
    .await;
    assert_eq!(res["play"]["node"], "r2-a", "{res}");
    assert!(num(&res, "/publish/finalWidth") >= 640.0, "{res}");
    assert_eq!(
        num(&res, "/play/width"),
        num(&res, "/play/expectedWidth"),
        "the clean player decodes the top layer: {res}"
    );

    // Chromium adds layers as its own bandwidth estimate grows: the clean player climbs to
    // the top layer once the publisher sends it.
    let metrics_url = format!("{}/metrics", r2a.http);
    let on_layer = |metrics: &str, l: &str| {
        strata_tests::http::metric_sum(metrics, "strata_egress_players_on_layer", &[("layer", l)])
    };
    let start = Instant::now();
    loop {
        let metrics = strata_tests::http::get(&metrics_url).await.unwrap().text();
        if on_layer(&metrics, "high") == 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the clean player never reached the top layer:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "clean player on the top layer {} ms after its check",
        start.elapsed().as_millis()
    );

    let (limited, link) = TestPlayer::start_with(&r2a.http, "simcam", "", Some(600_000))
        .await
        .unwrap();
    let link = link.unwrap();
    assert_eq!(limited.node, "r2-a");
    limited
        .wait_for(Duration::from_secs(15), "first video", |s| {
            s.video_packets > 0
        })
        .await
        .unwrap();
    let down = wait_layer(&limited, Duration::from_secs(5), "lower layer", |l| {
        l != "high"
    })
    .await;
    // Settled on a lower layer: video keeps coming, no freeze over 1 s.
    limited.reset_gap();
    let before = limited.stats().video_packets;
    tokio::time::timeout(Duration::from_secs(10), async {
        while limited.stats().video_packets < before + 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("video kept flowing on the lower layer");
    let st = limited.stats();
    assert!(
        st.longest_video_gap < Duration::from_secs(1),
        "freeze on the lower layer: {st:?}"
    );
    let metrics = strata_tests::http::get(&metrics_url).await.unwrap().text();
    let on = |l: &str| on_layer(&metrics, l);
    assert_eq!(on("high"), 1.0, "the clean player stays on top:\n{metrics}");
    assert_eq!(on("low") + on("mid"), 1.0, "{metrics}");
    eprintln!(
        "limited path: dropped {} datagrams",
        link.stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    // Lift the limit: back to the top, without gaps on the way up.
    link.set_limit(0);
    let gaps = limited.stats().seq_gaps;
    let up = wait_layer(&limited, Duration::from_secs(15), "top layer", |l| {
        l == "high"
    })
    .await;
    let settle = limited.stats().video_packets + 60;
    limited
        .wait_for(Duration::from_secs(10), "video on the top layer", |s| {
            s.video_packets >= settle
        })
        .await
        .unwrap();
    let st = limited.stats();
    assert_eq!(st.first_video_is_keyframe, Some(true), "{st:?}");
    assert_eq!(st.ssrc_changes, 0, "one SSRC across layers: {st:?}");
    assert_eq!(st.seq_gaps, gaps, "gap-free switches up: {st:?}");
    let metrics = strata_tests::http::get(&metrics_url).await.unwrap().text();
    let switches =
        strata_tests::http::metric_sum(&metrics, "strata_egress_layer_switches_total", &[]);
    assert!(switches >= 2.0, "{metrics}");
    eprintln!(
        "simulcast adaptation: down in {} ms, up in {} ms after the limit was lifted, {switches} switches",
        down.as_millis(),
        up.as_millis()
    );

    limited.stop().await.unwrap();
    release_driver(child).await;
    for n in [r1a, r2a] {
        n.stop().await.unwrap();
    }
}
