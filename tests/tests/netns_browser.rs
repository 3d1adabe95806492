//! A real browser against a real cluster: headless Chromium (Debian's, driven by
//! `tests/browser/drive.mjs` through playwright-core) publishes its fake camera with the node's
//! `/publish` page on r1-a (three simulcast layers) and plays it back with the `/play` page on
//! r2-b (top layer) and on r2-a pinned to the low layer; it also plays a
//! stream the test publishes from the committed fixture. Runs inside a loopback-only network
//! namespace (scripts/test.sh). Needs `scripts/setup.sh --browser`; fails, not skips, without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_tests::cluster::{Cluster, topology};
use strata_tests::media::{TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";
const SETUP_HINT: &str = "run scripts/setup.sh --browser";
/// How long the driver may take for everything (its own per-page deadline is 40 s).
const DRIVER_DEADLINE: Duration = Duration::from_secs(180);

fn init() {
    strata_tests::init_test_tracing("warn");
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `node`, the driver script, and the checks that the browser tooling is installed.
fn browser_tools() -> (PathBuf, PathBuf) {
    let node =
        find_on_path("node").unwrap_or_else(|| panic!("`node` is not on PATH; {SETUP_HINT}"));
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing; {SETUP_HINT}"
    );
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in {}; {SETUP_HINT}",
        dir.display()
    );
    let driver = dir.join("drive.mjs");
    assert!(driver.is_file(), "{} is missing", driver.display());
    (node, driver)
}

/// A number from the driver's JSON.
fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("driver result has no number at {path}: {v}"))
}

/// Starts the driver with `args` (plus `--timeout-ms 40000 --hold`) and waits for its JSON
/// line; panics unless it says `ok`. The driver keeps its sessions open until its stdin
/// closes.
async fn run_driver(node: &Path, driver: &Path, args: &[&str]) -> (tokio::process::Child, Value) {
    let mut child = Command::new(node)
        .arg(driver)
        .args(args)
        .args(["--timeout-ms", "40000", "--hold"])
        .current_dir(browser_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {}: {e}", node.display(), driver.display()));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DRIVER_DEADLINE, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.trim_start().starts_with('{') {
                return Some(l);
            }
            eprintln!("driver stdout: {l}");
        }
        None
    })
    .await
    .expect("the browser driver printed no result in time");
    let Some(line) = line else {
        let status = child.wait().await.unwrap();
        panic!("the browser driver exited ({status}) without a result");
    };
    let res: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("driver result is not JSON ({e}): {line}"));
    eprintln!("browser result: {res}");
    if res["ok"] != Value::Bool(true) {
        let status = child.wait().await.unwrap();
        panic!(
            "browser check failed ({status}): {}\nfull result: {res}",
            res["error"].as_str().unwrap_or("?")
        );
    }
    (child, res)
}

/// Closes the driver's stdin and waits for it to exit cleanly.
async fn release_driver(mut child: tokio::process::Child) {
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the browser driver did not exit after stdin closed")
        .unwrap();
    assert!(status.success(), "driver exit status {status}");
}

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
    // (The driver checked it against a quarter of the top layer sent at the time.)
    assert!(lw > 0.0 && lw < w && lh < h, "{res}");
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

/// The layer the node says a player receives (`GET` on its WHEP session).
async fn layer_of(player: &TestPlayer) -> Option<String> {
    let resp = strata_tests::http::get(&player.session_url).await.ok()?;
    let v: Value = serde_json::from_str(&resp.text()).ok()?;
    v["layer"].as_str().map(str::to_owned)
}

/// Waits until the player's layer satisfies `cond`; returns how long it took.
async fn wait_layer(
    player: &TestPlayer,
    within: Duration,
    what: &str,
    cond: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let layer = layer_of(player).await;
        if layer.as_deref().is_some_and(&cond) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no {what} within {within:?}: layer {layer:?}, stats {:?}",
            player.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
            &format!("{}/publish/layercam", r1a.http),
            // Chromium adds the upper layers as its estimate of the publishing path grows.
            "--min-publish-width",
            "640",
            "--play",
            &format!("{}/play/layercam", r1a.http),
            "--frames",
            "30",
        ],
    )
    .await;
    assert!(num(&res, "/publish/finalWidth") >= 640.0, "{res}");

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
    release_driver(child).await;
    for n in [r1a, r2a] {
        n.stop().await.unwrap();
    }
}
