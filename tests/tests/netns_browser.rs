//! A real browser against a real cluster: headless Chromium (Debian's, driven by
//! `tests/browser/drive.mjs` through playwright-core) publishes its fake camera with the node's
//! `/publish` page on r1-a (three simulcast layers) and plays it back with the `/play` page on
//! r2-b (top layer) and on r2-a pinned to the low layer; it also plays a
//! stream the test publishes from the committed fixture. Runs inside a loopback-only network
//! namespace (scripts/test.sh). Needs `scripts/setup.sh --browser`; fails, not skips, without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser_common;

use std::time::Duration;

use browser_common::*;
use strata_tests::cluster::{Cluster, topology};
use strata_tests::media::{TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_browser_publishes_and_plays_across_regions() {
    require_netns("netns_browser_publishes_and_plays_across_regions");
    init();
    let (node, driver) = browser_tools();

    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let r1a = cluster.node("r1-a", "r1").await.unwrap();
    let r2a = cluster.node("r2-a", "r2").await.unwrap();
    let r2b = cluster.node("r2-b", "r2").await.unwrap();

    let fixture = TestPublisher::start(&r1a.http, "fixture", vp8_clip().unwrap())
        .await
        .unwrap();
    assert_eq!(fixture.node, "r1-a");

    let (child, res) = run_driver(
        &node,
        &driver,
        &[
            "--publish",
            &format!("{}/publish/browsercam", r1a.http),
            "--play",
            &format!("{}/play/browsercam", r2b.http),
            "--low",
            &format!("{}/play/browsercam?layer=low", r2a.http),
            "--fixture",
            &format!("{}/play/fixture", r2a.http),
            "--fixture-size",
            "640x360",
            "--frames",
            "30",
        ],
    )
    .await;

    // Camera: published on r1-a, decoded on r2-b at the resolution sent.
    assert_eq!(res["publish"]["node"], "r1-a", "{res}");
    assert_eq!(res["play"]["node"], "r2-b", "{res}");
    assert!(num(&res, "/play/framesDecoded") > 30.0, "{res}");
    let (w, h) = (num(&res, "/play/width"), num(&res, "/play/height"));
    assert!(w > 0.0 && h > 0.0, "{res}");
    assert_eq!(
        (w, h),
        (
            num(&res, "/play/expectedWidth"),
            num(&res, "/play/expectedHeight")
        ),
        "{res}"
    );
    assert!(num(&res, "/play/firstFrameMs") > 0.0, "{res}");
    // The publish page sends three simulcast layers: the top one is 1280x720 unless the
    // encoder adapted, and a player pinned to `low` decodes the 1/4 layer.
    assert!(num(&res, "/publish/finalWidth") >= 640.0, "{res}");
    assert_eq!(res["low"]["node"], "r2-a", "{res}");
    assert!(num(&res, "/low/framesDecoded") > 30.0, "{res}");
    let (lw, lh) = (num(&res, "/low/width"), num(&res, "/low/height"));
    // (The driver checked it against a quarter of the top layer sent at the time.) Smaller
    // than the top layer, not than the auto player's frame: that player may have been checked
    // while the publisher's estimate still allowed only its low layer.
    let (top_w, top_h) = (
        num(&res, "/publish/finalWidth"),
        num(&res, "/publish/finalHeight"),
    );
    assert!(lw > 0.0 && lw < top_w && lh < top_h, "{res}");
    // Fixture: 640x360 VP8 (tests/fixtures/README.md), played on r2-a.
    assert_eq!(res["fixture"]["node"], "r2-a", "{res}");
    assert!(num(&res, "/fixture/framesDecoded") > 30.0, "{res}");
    assert_eq!(
        (num(&res, "/fixture/width"), num(&res, "/fixture/height")),
        (640.0, 360.0),
        "{res}"
    );
    assert!(num(&res, "/fixture/firstFrameMs") > 0.0, "{res}");

    // While the browser still publishes: a second viewer of the camera in r2, on the other
    // node, must come from the same regional origin: one copy crosses into r2.
    let viewer = TestPlayer::start(&r2a.http, "browsercam").await.unwrap();
    viewer
        .wait_for(Duration::from_secs(15), "camera video on r2-a", |s| {
            s.video_packets >= 100
        })
        .await
        .unwrap();
    let tree = cluster.tree("browsercam").await.unwrap();
    assert_eq!(tree.main.as_ref().unwrap().node_id, "r1-a", "{tree:?}");
    let (regional, subs) = topology(&tree);
    let r2: Vec<_> = regional.iter().filter(|(r, _)| r == "r2").collect();
    assert_eq!(
        r2.len(),
        1,
        "region r2 must have one regional origin: {tree:?}"
    );
    assert_eq!(regional.len(), 1, "{tree:?}");
    let origin = r2[0].1.clone();
    let other = if origin == "r2-a" { "r2-b" } else { "r2-a" };
    assert!(
        subs.contains(&(other.to_owned(), origin.clone())),
        "{other} must pull from the regional origin {origin}: {tree:?}"
    );
    viewer.stop().await.unwrap();

    // Release the driver: it closes the browser (the pages DELETE their sessions) and exits.
    release_driver(child).await;

    fixture.stop().await.unwrap();
    for n in [r1a, r2a, r2b] {
        n.stop().await.unwrap();
    }
}
