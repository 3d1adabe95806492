//! A real browser publishing simulcast, and pulling only the watched layers across regions:
//! region r2's only player pins `low` and the inter-region link carries the low layer only,
//! until a player pinned `high` joins. A binary of its own, so that no other browser test
//! runs beside it. Loopback-only namespace (scripts/test.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser_common;

use std::time::{Duration, Instant};

use browser_common::simulcast::{PlayOn, start_simulcast};
use strata_tests::media::TestPlayer;
use strata_tests::ports::require_netns;

/// Relay media bytes r2-a has received from region r1 so far.
async fn link_bytes_into(metrics_url: &str) -> f64 {
    let metrics = strata_tests::http::get(metrics_url).await.unwrap().text();
    let labels = [("peer_region", "r1"), ("direction", "in")];
    strata_tests::http::metric_sum(&metrics, "strata_relay_bytes_total", &labels)
}

/// Bytes per second crossing into r2 and reaching `players` while they receive `packets`
/// more video packets each.
async fn rates_over(metrics_url: &str, players: &[&TestPlayer], packets: u64) -> (f64, Vec<f64>) {
    let (t0, link0) = (Instant::now(), link_bytes_into(metrics_url).await);
    let got0: Vec<_> = players.iter().map(|p| p.stats()).collect();
    for (p, s0) in players.iter().zip(&got0) {
        let want = s0.video_packets + packets;
        p.wait_for(Duration::from_secs(30), "video for the window", |s| {
            s.video_packets >= want
        })
        .await
        .unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let link = (link_bytes_into(metrics_url).await - link0) / secs;
    let got = players
        .iter()
        .zip(&got0)
        .map(|(p, s0)| (p.stats().bytes - s0.bytes) as f64 / secs)
        .collect();
    (link, got)
}

/// Chromium publishes three layers on r1-a; region r2's only player pins `low`: the
/// inter-region link carries the low layer only. A player pinned `high` then joins on r2-a:
/// r2-a starts pulling high, and that player's video starts on a keyframe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_browser_pulls_only_the_watched_layers() {
    require_netns("netns_browser_pulls_only_the_watched_layers");
    let sim = start_simulcast("layercam", PlayOn::R1a).await;
    let (r1a, r2a) = (&sim.r1a, &sim.r2a);

    let (low, _) = TestPlayer::start_with(&r2a.http, "layercam", "layer=low", None)
        .await
        .unwrap();
    assert_eq!(low.node, "r2-a");
    // r2-a tells r1-a it wants the low layer once the removal of the others held (2 s).
    let metrics_url = format!("{}/metrics", r2a.http);
    let start = Instant::now();
    loop {
        let metrics = strata_tests::http::get(&metrics_url).await.unwrap().text();
        let sent =
            strata_tests::http::metric_sum(&metrics, "strata_relay_layer_interest_out_total", &[]);
        if sent >= 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "r2-a never sent its layer interest:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let what was in flight land, then measure.
    let settle = low.stats().video_packets + 30;
    low.wait_for(Duration::from_secs(15), "low video", |s| {
        s.video_packets >= settle
    })
    .await
    .unwrap();
    let (link_low, got) = rates_over(&metrics_url, &[&low], 300).await;
    let low_rate = got[0];
    eprintln!("link {link_low:.0} B/s, low player {low_rate:.0} B/s");
    // The link carries the low layer (and audio) with RTP headers and relay framing.
    assert!(
        link_low < 1.5 * low_rate,
        "the link carries {link_low:.0} B/s for a low layer of {low_rate:.0} B/s"
    );

    // A player pinned high joins r2-a: r2-a pulls high, starting at a keyframe.
    let (high, _) = TestPlayer::start_with(&r2a.http, "layercam", "layer=high", None)
        .await
        .unwrap();
    assert_eq!(high.node, "r2-a");
    let first = high
        .wait_for(Duration::from_secs(15), "high video", |s| {
            s.video_packets >= 30
        })
        .await
        .unwrap();
    assert_eq!(first.first_video_is_keyframe, Some(true), "{first:?}");
    let (link_both, got) = rates_over(&metrics_url, &[&low, &high], 300).await;
    let high_rate = got[1];
    eprintln!(
        "link {link_both:.0} B/s, low {:.0} B/s, high {high_rate:.0} B/s",
        got[0]
    );
    // High is bigger than low (so the first window would have seen it), and crosses now.
    assert!(
        high_rate > 1.5 * low_rate,
        "high {high_rate:.0} B/s, low {low_rate:.0} B/s"
    );
    assert!(
        link_both > 0.9 * high_rate,
        "link {link_both:.0} B/s, high {high_rate:.0} B/s"
    );
    let r1_metrics = strata_tests::http::get(&format!("{}/metrics", r1a.http))
        .await
        .unwrap()
        .text();
    let applied =
        strata_tests::http::metric_sum(&r1_metrics, "strata_relay_layer_interest_in_total", &[]);
    assert!(applied >= 2.0, "{r1_metrics}");

    low.stop().await.unwrap();
    high.stop().await.unwrap();
    sim.stop().await;
}
