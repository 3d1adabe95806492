//! Case 2 of the failover suite: the main origin is SIGKILLed and the publisher comes back on
//! another node at once; that node finds nothing listening on the dead origin's relay port and
//! takes the stream over without waiting for the dead node's lease (ARCHITECTURE.md, "Taking
//! over a dead main origin"). Real processes, real WebRTC and QUIC, like `netns_failover.rs`;
//! the partition case there checks that a node cut off from a live origin cannot take it over.
//!
//! Needs the binaries: `cargo build -p strata-control -p strata-node --bins` first. Runs in the
//! loopback-only network namespace (`scripts/test.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use strata_proto::v1;
use strata_tests::faults::{DeadNodes, TreeMonitor, arm, ms, record_holders, regionals};
use strata_tests::http::{self, metric_sum};
use strata_tests::media::{PreparedPublisher, vp8_clip};
use strata_tests::ports::require_netns;
use strata_tests::procs::ProcOptions;
use tokio::time::{Instant, sleep};

mod failover_common;
use failover_common::*;

/// The most a takeover may cost the players: the bound.
const TAKEOVER_STALL: Duration = Duration::from_secs(1);

/// Case 2: main origin O1 (Region1) SIGKILLed; the publisher re-publishes on E12 (Region1, no
/// players) every 100 ms from the moment of the kill. E12's first publish finds O1's relay port
/// closed and takes the main origin over; E11 (Region1) and the Region2 nodes follow through
/// their topology watch; the same players resume within a second, well before O1's lease could
/// have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_main_origin_sigkill() {
    require_netns("netns_failover_main_origin_sigkill");
    let _serial = SERIAL.lock().await;
    let tree = main_origin_sigkill("main SIGKILL takeover", "E12").await;
    let holder = regional_of(Some(&tree), "Region2").unwrap();
    assert!(matches!(holder.as_str(), "E21" | "E22"), "{tree:?}");
    assert_eq!(upstream_of(Some(&tree), "E11").as_deref(), Some("E12"));
}

/// Case 2b: the same, but the publisher comes back in the other region, on E21, which was
/// Region2's regional origin and has a player: E21's puller hands the hub over to the
/// publisher (its player stays), Region2 stops having a regional origin (E22 pulls from E21,
/// the main origin), and Region1 elects one (E11, the only Region1 node with a player).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_main_origin_sigkill_other_region() {
    require_netns("netns_failover_main_origin_sigkill_other_region");
    let _serial = SERIAL.lock().await;
    let tree = main_origin_sigkill("main SIGKILL takeover, Region2", "E21").await;
    assert_eq!(regional_of(Some(&tree), "Region2"), None, "{tree:?}");
    assert_eq!(regional_of(Some(&tree), "Region1").as_deref(), Some("E11"));
    assert_eq!(upstream_of(Some(&tree), "E22").as_deref(), Some("E21"));
}

/// Players on E11 (Region1), E21 and E22 (Region2), publisher on O1 (Region1); O1 is
/// SIGKILLed and the publisher re-publishes on `target` every 100 ms. Checks the stalls, the
/// sessions, the invariants, one copy per region, and returns the settled tree.
async fn main_origin_sigkill(case: &str, target: &str) -> v1::StreamTree {
    let (mut c, publisher, [p11, p21, p22], before) = live(
        ProcOptions {
            nodes: nodes(&[
                ("O1", "Region1"),
                ("E11", "Region1"),
                ("E12", "Region1"),
                ("E21", "Region2"),
                ("E22", "Region2"),
            ]),
            ..ProcOptions::default()
        },
        ["E11", "E21", "E22"],
        "settled",
        settled_on_e21,
    )
    .await;
    let old_epoch = before.main.as_ref().unwrap().epoch;

    let dead = DeadNodes::default();
    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], dead.clone());
    sleep(Duration::from_millis(200)).await;
    let players = [&p11, &p21, &p22];
    let since = arm(&players);
    c.node_mut("O1").unwrap().kill().unwrap();
    let killed_at = Instant::now();
    dead.mark_dead("O1", TTL + RECORDS_SLACK);

    // The encoder comes back on `target` at once and retries every 100 ms.
    let base = url(&c, target);
    let republish = tokio::spawn(async move {
        let deadline = Instant::now() + TTL + Duration::from_secs(5);
        let mut conflicts = 0u32;
        loop {
            let prepared = PreparedPublisher::new(vp8_clip().unwrap()).await.unwrap();
            let attempt = Instant::now();
            match prepared.post(&base, STREAM).await.unwrap() {
                Ok(p) => return (p, conflicts, Instant::now()),
                Err(resp) if resp.status == 409 && Instant::now() < deadline => {
                    conflicts += 1;
                    sleep(Duration::from_millis(100).saturating_sub(attempt.elapsed())).await;
                }
                Err(resp) => panic!("republishing: {} {}", resp.status, resp.text()),
            }
        }
    });
    publisher.vanish().await;
    let (publisher, conflicts, republished_at) = republish.await.unwrap();
    assert_eq!(publisher.node, target);
    let stalls = resumed(&players, since).await;
    eprintln!(
        "[{case}] republished on {target} {} ms after the kill, after {conflicts} × 409",
        ms(republished_at - killed_at)
    );
    print_stalls(case, &["E11", "E21", "E22"], &stalls);

    // The new tree: `target` main at a new epoch, every other player's node an origin of its
    // region or pulling from one; O1 holds nothing but its registration.
    let settled = |t: &v1::StreamTree| {
        t.main.as_ref().is_some_and(|m| m.node_id == target)
            && ["E11", "E21", "E22"].iter().all(|n| {
                *n == target
                    || upstream_of(Some(t), n).is_some()
                    || regionals(t).values().any(|(h, _)| h == n)
            })
            && !regionals(t).contains_key(region_of(target))
    };
    let tree = wait_tree(&c, Duration::from_secs(5), "rebuilt", |t| {
        t.is_some_and(settled)
    })
    .await
    .unwrap();
    assert!(tree.main.as_ref().unwrap().epoch > old_epoch, "{tree:?}");
    assert!(
        !record_holders(&tree).contains(&"O1".to_owned()),
        "{tree:?}"
    );
    // One main origin in the data plane too: `target` sends the stream to one node of the
    // other region.
    let (other_region, peers) = if region_of(target) == "Region1" {
        ("Region2", ["E21", "E22"])
    } else {
        ("Region1", ["E11", "E12"])
    };
    let holder = regional_of(Some(&tree), other_region).unwrap();
    assert_eq!(
        receiving_from(&c, target, &peers).await,
        BTreeSet::from([holder])
    );
    // The same sessions: one WHEP each, ever.
    for n in ["E11", "E21", "E22"] {
        assert_eq!(
            metric(&c, n, "strata_node_players_total", &[]).await,
            1.0,
            "{n}: players resumed through a new WHEP session?"
        );
    }
    let refused = metric(
        &c,
        target,
        "strata_node_takeover_probes_total",
        &[("result", "refused")],
    )
    .await;
    assert!(refused >= 1.0, "{target} never found O1 dead");
    // O1's registration still goes with its lease; nothing else of it was left to go.
    c.wait_node_gone("O1", TTL + RECORDS_SLACK).await.unwrap();
    assert_no_violations(case, monitor);
    for (n, s) in ["E11", "E21", "E22"].iter().zip(&stalls) {
        assert!(*s < TAKEOVER_STALL, "[{case}] {n} stalled {s:?}");
    }
    wait_tree(&c, Duration::from_secs(5), "settled", |t| {
        t.is_some_and(settled)
    })
    .await
    .unwrap()
}

fn region_of(node: &str) -> &'static str {
    if node.starts_with("E2") {
        "Region2"
    } else {
        "Region1"
    }
}

async fn metric(
    c: &strata_tests::procs::ProcCluster,
    node: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let m = http::get(&format!("{}/metrics", url(c, node)))
        .await
        .unwrap()
        .text();
    metric_sum(&m, name, labels)
}

/// A publisher (or an attacker with a publish token) hammering a node with publishes of a
/// stream that is live elsewhere: every one gets 409, the live origin is never taken over, and
/// the node looks at the holder and probes it at most once per stream per 100 ms
/// (`takeover::PROBE_EVERY`), however fast the POSTs come (the per-address POST limit is off
/// here so that it cannot hide the probe budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_takeover_probe_budget() {
    require_netns("netns_failover_takeover_probe_budget");
    let _serial = SERIAL.lock().await;
    let c = start(ProcOptions {
        nodes: nodes(&[("O1", "Region1"), ("E11", "Region1")]),
        node_args: vec!["--post-rate-per-ip".into(), "0".into()],
        ..ProcOptions::default()
    })
    .await;
    let _publisher = publish(&c, "O1").await;
    let before = wait_tree(&c, Duration::from_secs(5), "live", |t| t.is_some())
        .await
        .unwrap();
    // Not a usable offer: refused publishes never get as far as negotiating.
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let whip = format!("{}/whip/{STREAM}", url(&c, "E11"));
    let started = Instant::now();
    let mut posts = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        let resp = http::post_sdp(&whip, offer).await.unwrap();
        assert_eq!(resp.status, 409, "{}", resp.text());
        posts += 1;
    }
    let elapsed = started.elapsed();
    let mut probes = 0.0;
    for result in ["refused", "listening", "no_answer"] {
        probes += metric(
            &c,
            "E11",
            "strata_node_takeover_probes_total",
            &[("result", result)],
        )
        .await;
    }
    eprintln!(
        "[probe budget] {posts} refused publishes in {} ms, {probes} probes",
        ms(elapsed)
    );
    let allowed = 1 + elapsed.as_millis() / 100;
    assert!(
        probes >= 1.0 && probes <= allowed as f64,
        "{probes} probes for {posts} publishes"
    );
    assert!(posts as f64 > 2.0 * allowed as f64, "too few POSTs to tell");
    let after = wait_tree(&c, Duration::from_secs(1), "live", |t| t.is_some())
        .await
        .unwrap();
    assert_eq!(after.main, before.main, "the live origin moved");
}
