//! A real browser publishing simulcast, and per-player adaptation: headless Chromium (driven
//! by `tests/browser/drive.mjs`) publishes three layers on r1-a; on r2-a a Chromium player on
//! a clean path gets the top layer and a Chromium player behind a rate-limited path
//! (`strata_tests::shaper`; the driver points the page's WHEP answer at it) adapts down and
//! back up, followed from the page's own `getStats()`; then a `webrtc`-crate player behind
//! the same kind of path checks what the browser's counters cannot (one SSRC, exact sequence
//! numbers). A binary of its own, so that no other browser test runs beside it. Loopback-only
//! namespace (scripts/test.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser_common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use browser_common::limited::{LimitedPage, candidate_address, open_limited};
use browser_common::simulcast::{PlayOn, start_simulcast};
use browser_common::timeline::{Sample, longest_freeze, longest_stall, since, size_changes};
use browser_common::*;
use strata_tests::media::TestPlayer;
use strata_tests::ports::require_netns;
use strata_tests::shaper::ShapedLink;

/// Chromium publishes three layers on r1-a; on r2-a a Chromium player on a clean path gets
/// the top layer, and a Chromium player behind a 600 kbit/s path moves to a lower layer
/// within 5 s of its first packet without a freeze over 1 s, then climbs back to the top
/// within 15 s of the limit being lifted, without a freeze over 1 s. Then a `webrtc`-crate
/// player behind the same kind of path does the same, its stream keyframe-first, on one SSRC
/// and with no sequence number missing after the lift.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_browser_simulcast_adapts_to_a_limited_path() {
    require_netns("netns_browser_simulcast_adapts_to_a_limited_path");
    let mut sim = start_simulcast("simcam", PlayOn::R2a).await;
    let res = sim.res.clone();
    let r2a = sim.r2a.http.clone();
    assert_eq!(res["play"]["node"], "r2-a", "{res}");
    assert_eq!(
        num(&res, "/play/width"),
        num(&res, "/play/expectedWidth"),
        "the clean player decodes the top layer: {res}"
    );

    // Chromium adds layers as its own bandwidth estimate grows: the clean player climbs to
    // the top layer once the publisher sends it.
    let metrics_url = format!("{}/metrics", r2a);
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

    // The Chromium player behind a limited path to the node's RTC address (the clean
    // player's remote candidate).
    let ice = res["play"]["video"]["ice"]["remote"]
        .as_str()
        .unwrap_or_default();
    let rtc = candidate_address(ice).unwrap_or_else(|| panic!("no node address in {res}"));
    let link = ShapedLink::start(rtc, LIMIT_BPS).await.unwrap();
    let page = format!("{}/play/simcam", r2a);
    let out = sim.out.take().unwrap();
    let browser = open_limited(&mut sim.child, out, &page, link.front()).await;
    assert_eq!(browser.node, "r2-a");
    assert_eq!(browser.answer_candidate, rtc.to_string());
    chromium_adapts(&browser, &link, &metrics_url).await;

    webrtc_player_adapts(&browser, &r2a, &metrics_url).await;

    drop(browser);
    sim.stop().await;
}

/// The limit of the limited path, bit/s (the figure).
const LIMIT_BPS: u64 = 600_000;

/// The players r2-a's `/metrics` counts on any layer, and its layer switches so far.
async fn players_and_switches(metrics_url: &str) -> (f64, f64) {
    let metrics = strata_tests::http::get(metrics_url).await.unwrap().text();
    let on = strata_tests::http::metric_sum(&metrics, "strata_egress_players_on_layer", &[]);
    let switches =
        strata_tests::http::metric_sum(&metrics, "strata_egress_layer_switches_total", &[]);
    (on, switches)
}

fn rank(layer: &str) -> u8 {
    match layer {
        "low" => 0,
        "mid" => 1,
        _ => 2,
    }
}

/// Waits until the node's layer for WHEP `session` and the clean player's (as its page last
/// heard it from the node) satisfy `cond(rank of session, rank of clean)`. The clean player
/// is the witness of the top layer: on a loaded machine the publisher may stop sending its
/// top layer for a while, and then the node moves everybody to the highest layer that flows.
async fn wait_relative(
    pages: &LimitedPage,
    session: &str,
    deadline: Instant,
    what: &str,
    cond: impl Fn(u8, u8) -> bool,
) -> Instant {
    loop {
        let layer = session_layer(session).await;
        let clean = pages.last("play").and_then(|s| s.layer);
        if let (Some(l), Some(c)) = (&layer, &clean)
            && cond(rank(l), rank(c))
        {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in time: {session} on {layer:?}, the clean player on {clean:?}\n{}",
            pages.timelines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Samples of the limited page from `from` up to and including `to`.
fn window(limited: &LimitedPage, from: Instant, to: Instant) -> Vec<Sample> {
    let all = limited.samples("limited");
    since(&all, from)
        .iter()
        .filter(|s| s.seen.is_some_and(|t| t <= to))
        .cloned()
        .collect()
}

/// The Chromium player behind the limited path: below the clean player within 5 s of its
/// first packet, no freeze over 1 s on the lower layer, back on the clean player's layer
/// (and frame size) within 15 s of the limit being lifted, no freeze over 1 s after; one
/// peer connection, through the proxy, throughout.
async fn chromium_adapts(limited: &LimitedPage, link: &ShapedLink, metrics_url: &str) {
    // The clock starts when media reaches the page (connecting through the proxy may take a
    // while on a loaded machine; the limit matters from the first packet).
    limited
        .wait(
            limited.answered,
            limited.answered + Duration::from_secs(20),
            "first video packet",
            |_, l| l.packets_received > 0,
        )
        .await;
    let t0 = limited.media_start().unwrap();
    let five = t0 + Duration::from_secs(5);
    let below = |l: u8, c: u8| l < c;
    let down_node = wait_relative(limited, &limited.session, five, "lower layer", below)
        .await
        .duration_since(t0);
    let first = limited
        .wait(t0, five, "first decoded frame", |_, l| l.frames_decoded > 0)
        .await;
    let lower = limited
        .wait(t0, five, "a lower layer decoded", |c, l| {
            l.frames_decoded > 0 && l.frame_width > 0 && l.frame_width < c.frame_width
        })
        .await;
    // Sitting on the lower layer: 90 more frames (3 s at 30 frames/s).
    let frames = limited.last("limited").unwrap().frames_decoded;
    let held = limited
        .wait(
            lower,
            lower + Duration::from_secs(20),
            "90 frames on the lower layer",
            |_, l| l.frames_decoded >= frames + 90,
        )
        .await;
    let low = window(limited, lower, held);
    let (on_layers, _) = players_and_switches(metrics_url).await;
    let still_below = Instant::now() + Duration::from_secs(2);
    wait_relative(limited, &limited.session, still_below, "lower layer", below).await;
    let dropped = link.stats().dropped.load(Ordering::Relaxed);
    let low_sizes = size_changes(&low);
    let (low_stall, low_freeze) = (longest_stall(&low), longest_freeze(&low));
    eprintln!(
        "limited Chromium: media {} ms after the answer; since: node below the clean player after {} ms, \
         first frame after {} ms, lower layer decoded after {} ms; on the lower layer for {} ms: longest stall {} ms, longest \
         freeze {} ms, sizes {low_sizes:?}; {dropped} datagrams dropped by the limit",
        t0.duration_since(limited.answered).as_millis(),
        down_node.as_millis(),
        first.duration_since(t0).as_millis(),
        lower.duration_since(t0).as_millis(),
        held.duration_since(lower).as_millis(),
        low_stall.as_millis(),
        low_freeze.as_millis(),
    );
    assert!(dropped > 0, "the limit never bit");
    assert_eq!(on_layers, 2.0, "both players counted on a layer");
    // The waits check their deadline only while the condition fails; the figures must meet
    // the bound too.
    let lower_after = lower.duration_since(t0);
    assert!(
        down_node <= Duration::from_secs(5) && lower_after <= Duration::from_secs(5),
        "not below within 5 s:\n{}",
        limited.timelines()
    );
    let one = Duration::from_secs(1);
    let trace = limited.timelines();
    assert!(
        low_stall < one && low_freeze < one,
        "froze on the lower layer:\n{trace}"
    );
    chromium_climbs_back(limited, link, metrics_url).await;
}

/// After the lift: back on the clean player's layer (and frame size) within 15 s, no freeze
/// over 1 s after; one peer connection, through the proxy, throughout.
async fn chromium_climbs_back(limited: &LimitedPage, link: &ShapedLink, metrics_url: &str) {
    let one = Duration::from_secs(1);
    // Lift the limit while the browser keeps playing.
    let lifted_counts = limited.last("limited").unwrap();
    link.set_limit(0);
    let lifted = Instant::now();
    let fifteen = lifted + Duration::from_secs(15);
    let up_node = wait_relative(limited, &limited.session, fifteen, "top layer", |l, c| {
        l >= c
    })
    .await
    .duration_since(lifted);
    let up = limited
        .wait(lifted, fifteen, "the top layer decoded", |c, l| {
            l.frame_width > 0 && l.frame_width >= c.frame_width
        })
        .await;
    let frames = limited.last("limited").unwrap().frames_decoded;
    let settled = limited
        .wait(
            up,
            up + Duration::from_secs(20),
            "60 frames on the top layer",
            |_, l| l.frames_decoded >= frames + 60,
        )
        .await;
    let top = window(limited, up, settled);
    let after = window(limited, lifted, settled);
    let end = after.last().cloned().unwrap_or_default();
    let (_, switches) = players_and_switches(metrics_url).await;
    eprintln!(
        "limited Chromium: node on the clean player's layer {} ms after the lift, top layer decoded after {} ms; \
         then longest stall {} ms, longest freeze {} ms; since the lift: sizes {:?}, PLI +{}, \
         NACK +{}, packets lost {:+}; {switches} layer switches on r2-a",
        up_node.as_millis(),
        up.duration_since(lifted).as_millis(),
        longest_stall(&top).as_millis(),
        longest_freeze(&top).as_millis(),
        size_changes(&after),
        end.pli_count - lifted_counts.pli_count,
        end.nack_count - lifted_counts.nack_count,
        end.packets_lost - lifted_counts.packets_lost,
    );
    eprintln!("{}", limited.timelines());
    assert_eq!(end.reconnects, Some(0), "{end:?}");
    let up_after = up.duration_since(lifted);
    assert!(
        up_node <= Duration::from_secs(15) && up_after <= Duration::from_secs(15),
        "not back on top within 15 s"
    );
    assert!(
        longest_stall(&top) < one && longest_freeze(&top) < one,
        "froze after the climb"
    );
    assert!(switches >= 2.0, "{switches} layer switches");

    // Throughout: one peer connection, through the proxy. The clean player is the witness
    // of the top layer; what it went through is printed.
    let via = link.front().to_string();
    for s in limited.samples("limited") {
        assert_eq!(s.reconnects, Some(0), "{s:?}");
        assert!(
            s.remote.is_none() || s.remote.as_deref() == Some(&via),
            "{s:?}"
        );
    }
    let clean = since(&limited.samples("play"), limited.answered).to_vec();
    for s in &clean {
        assert_eq!(s.reconnects, Some(0), "clean: {s:?}");
    }
    let layers: BTreeSet<_> = clean.iter().filter_map(|s| s.layer.clone()).collect();
    eprintln!(
        "the clean player was on {layers:?}, sizes {:?}, longest freeze {} ms",
        size_changes(&clean),
        longest_freeze(&clean).as_millis()
    );
}

/// A `webrtc`-crate player behind its own limited path, while both Chromium players play on:
/// below the clean player within 5 s of its first packet, back within 15 s of the lift; its
/// stream keyframe-first, on one SSRC, no sequence number missing after the lift.
async fn webrtc_player_adapts(browser: &LimitedPage, r2a: &str, metrics_url: &str) {
    let (limited, link) = TestPlayer::start_with(r2a, "simcam", "", Some(LIMIT_BPS))
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
    let first_video = Instant::now();
    let five = first_video + Duration::from_secs(5);
    let below = |l: u8, c: u8| l < c;
    let down = wait_relative(browser, &limited.session_url, five, "lower layer", below)
        .await
        .duration_since(first_video);
    assert!(down <= Duration::from_secs(5), "below after {down:?}");
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
    let (on_layers, _) = players_and_switches(metrics_url).await;
    assert_eq!(on_layers, 3.0, "three players counted on a layer");
    eprintln!(
        "limited path: dropped {} datagrams",
        link.stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    // Lift the limit: back to the top, without gaps on the way up.
    link.set_limit(0);
    let lifted = Instant::now();
    // Whatever the limit dropped was sent before the first packet that passed after it.
    let passed = limited.stats().video_packets + 1;
    let lift_top = limited
        .wait_for(Duration::from_secs(5), "video after the lift", |s| {
            s.video_packets >= passed
        })
        .await
        .unwrap()
        .video_holes
        .highest()
        .unwrap_or_default();
    let fifteen = lifted + Duration::from_secs(15);
    let up = wait_relative(
        browser,
        &limited.session_url,
        fifteen,
        "top layer",
        |l, c| l >= c,
    )
    .await
    .duration_since(lifted);
    assert!(up <= Duration::from_secs(15), "back on top after {up:?}");
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
    // Retransmissions of what the limit dropped may still arrive out of order; no number
    // sent after the lift may be missing.
    assert_eq!(
        st.video_holes.missing_above(lift_top),
        0,
        "gap-free switches up: {st:?}"
    );
    let (_, switches) = players_and_switches(metrics_url).await;
    assert!(switches >= 4.0, "{switches} layer switches");
    eprintln!(
        "simulcast adaptation: down in {} ms, up in {} ms after the limit was lifted, {switches} switches",
        down.as_millis(),
        up.as_millis()
    );

    limited.stop().await.unwrap();
}
