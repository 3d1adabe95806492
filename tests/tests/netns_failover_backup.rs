//! Redundant ingest in the failover suite: a primary publisher on O1 (Region1) and a backup
//! publisher (`?role=backup`) on B2 (Region2), which registers as the stream's standby, keeps
//! the backup's keyframe group warm and pulls the live stream. When the live stream stops
//! reaching B2 (O1 SIGKILLed, or the primary publisher silent with its connection kept), B2
//! switches the stream to the backup in one guarded transaction; players in both regions keep
//! their sessions (ARCHITECTURE.md, "Redundant ingest").
//!
//! Needs the binaries: `cargo build -p strata-control -p strata-node --bins` first. Runs in the
//! loopback-only network namespace (`scripts/test.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::faults::{DeadNodes, TreeMonitor, arm};
use strata_tests::media::{PreparedPublisher, TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;
use strata_tests::procs::ProcCluster;
use tokio::time::sleep;

mod failover_common;
use failover_common::backup::*;
use failover_common::*;

/// Case 8: O1 (the primary's node, the main origin) is SIGKILLed. B2 stops receiving the live
/// stream and switches after the gap; the players on E11 (Region1), E21 (Region2) and B2 itself
/// resume within the bound, with the same sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_backup_primary_node_sigkill() {
    require_netns("netns_failover_backup_primary_node_sigkill");
    let _serial = SERIAL.lock().await;
    let case = "backup, primary node SIGKILL";
    let mut c = cluster().await;
    let (primary, _backup, players) = live_with_backup(&c).await;
    let old = wait_tree(&c, Duration::from_secs(5), "live", |t| t.is_some())
        .await
        .unwrap();
    let old_epoch = old.main.as_ref().unwrap().epoch;

    let dead = DeadNodes::default();
    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], dead.clone());
    let refs: Vec<&TestPlayer> = players.iter().collect();
    let since = arm(&refs);
    c.node_mut("O1").unwrap().kill().unwrap();
    dead.mark_dead("O1", TTL + RECORDS_SLACK);
    primary.vanish().await;

    let stalls = resumed(&refs, since).await;
    print_stalls(case, &["E11", "E21", "B2"], &stalls);
    let tree = switched_to_b2(&c, old_epoch).await;
    assert_eq!(tree.standby, None, "{tree:?}");
    assert_eq!(switches(&c, "B2", "silent").await, 1.0);
    same_sessions(&c).await;
    assert_no_violations(case, monitor);
    for (n, s) in ["E11", "E21", "B2"].iter().zip(&stalls) {
        assert!(*s < SWITCH_STALL, "[{case}] {n} stalled {s:?}");
    }
}

/// Case 9: the primary publisher goes silent (stops sending, connection kept). B2 sees no
/// packet for the gap and switches; O1 learns from its topology watch that it lost the record,
/// becomes the standby, and its own player follows the new main origin. When the primary sends
/// again nothing moves (no switch back), and the players see no interruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_backup_primary_silent() {
    require_netns("netns_failover_backup_primary_silent");
    let _serial = SERIAL.lock().await;
    let case = "backup, primary silent";
    let c = cluster().await;
    let (primary, _backup, mut players) = live_with_backup(&c).await;
    players.push(play(&c, "O1").await);
    let old_epoch = wait_tree(&c, Duration::from_secs(5), "live", |t| t.is_some())
        .await
        .unwrap()
        .main
        .unwrap()
        .epoch;

    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], DeadNodes::default());
    let refs: Vec<&TestPlayer> = players.iter().collect();
    let since = arm(&refs);
    primary.set_silent(true);
    let stalls = resumed(&refs, since).await;
    print_stalls(case, &["E11", "E21", "B2", "O1"], &stalls);
    let switched = switched_to_b2(&c, old_epoch).await;
    let tree = wait_tree(&c, Duration::from_secs(5), "O1 standby", |t| {
        t.is_some_and(|t| t.standby.as_ref().is_some_and(|s| s.node_id == "O1"))
    })
    .await
    .unwrap();
    assert_eq!(tree.main, switched.main);
    assert_eq!(switches(&c, "B2", "silent").await, 1.0);

    // The primary comes back: it is the standby now, nothing moves.
    arm(&refs);
    primary.set_silent(false);
    media_window(Duration::from_secs(2)).await;
    let after = wait_tree(&c, Duration::from_secs(1), "live", |t| t.is_some())
        .await
        .unwrap();
    assert_eq!(after.main, switched.main, "switched back");
    assert_eq!(switches(&c, "O1", "silent").await, 0.0);
    let quiet = gaps(&refs);
    print_stalls(
        &format!("{case}, primary back"),
        &["E11", "E21", "B2", "O1"],
        &quiet,
    );
    // The operator switches back to the primary (O1, the standby now); B2 becomes the standby.
    let since = arm(&refs);
    let mut routing = strata_tests::faults::routing_client(&cp_urls(&c))
        .await
        .unwrap();
    let req = v1::SwitchPublisherRequest {
        stream: STREAM.into(),
    };
    let back = routing.switch_publisher(req).await.unwrap().into_inner();
    assert_eq!(back.origin.unwrap().node_id, "O1");
    let back_stalls = resumed(&refs, since).await;
    print_stalls(
        &format!("{case}, operator switch back"),
        &["E11", "E21", "B2", "O1"],
        &back_stalls,
    );
    wait_tree(&c, Duration::from_secs(5), "B2 standby", |t| {
        t.is_some_and(|t| {
            t.main.as_ref().is_some_and(|m| m.node_id == "O1")
                && t.standby.as_ref().is_some_and(|s| s.node_id == "B2")
        })
    })
    .await
    .unwrap();
    same_sessions(&c).await;
    assert_no_violations(case, monitor);
    for (n, s) in ["E11", "E21", "B2", "O1"].iter().zip(&back_stalls) {
        assert!(*s < SWITCH_STALL, "[{case}] switch back: {n} stalled {s:?}");
    }
    for (n, s) in ["E11", "E21", "B2", "O1"].iter().zip(&stalls) {
        assert!(*s < SWITCH_STALL, "[{case}] {n} stalled {s:?}");
    }
    for (n, s) in ["E11", "E21", "B2", "O1"].iter().zip(&quiet) {
        assert!(
            *s < NO_INTERRUPTION,
            "[{case}] {n}: {s:?} after the primary came back"
        );
    }
}

/// The refusals: a second backup gets 409, a backup on the primary's own node gets 409, a bad
/// role is a 400; the standby shows in `GetStream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_backup_refusals() {
    require_netns("netns_failover_backup_refusals");
    let _serial = SERIAL.lock().await;
    let c = cluster().await;
    let _primary = publish(&c, "O1").await;
    let _backup = publish_backup(&c, "B2").await;
    let tree = wait_tree(&c, Duration::from_secs(5), "standby", |t| {
        t.is_some_and(|t| t.standby.is_some())
    })
    .await
    .unwrap();
    assert_eq!(tree.main.as_ref().unwrap().node_id, "O1");
    assert_eq!(tree.standby.as_ref().unwrap().node_id, "B2");
    for (node, query, status) in [
        ("E21", "?role=backup", 409),
        ("O1", "?role=backup", 409),
        ("E11", "?role=standby", 400),
    ] {
        let prepared = PreparedPublisher::new(vp8_clip().unwrap()).await.unwrap();
        let resp = prepared
            .post(&url(&c, node), &format!("{STREAM}{query}"))
            .await
            .unwrap()
            .err()
            .unwrap_or_else(|| panic!("{node}{query}: accepted"));
        assert_eq!(resp.status, status, "{node}{query}: {}", resp.text());
    }
    let after = wait_tree(&c, Duration::from_secs(1), "unchanged", |t| t.is_some())
        .await
        .unwrap();
    assert_eq!(after.standby.as_ref().unwrap().node_id, "B2");
    assert_eq!(after.main, tree.main);
}

/// The primary on O1, the backup on B2, players on E11, E21 and B2, the standby watching.
pub async fn live_with_backup(c: &ProcCluster) -> (TestPublisher, TestPublisher, Vec<TestPlayer>) {
    let primary = publish(c, "O1").await;
    let backup = publish_backup(c, "B2").await;
    let players = vec![
        play(c, "E11").await,
        play(c, "E21").await,
        play(c, "B2").await,
    ];
    wait_tree(c, Duration::from_secs(5), "settled", |t| {
        t.is_some_and(|t| {
            t.standby.as_ref().is_some_and(|s| s.node_id == "B2")
                && t.main.as_ref().is_some_and(|m| m.node_id == "O1")
        }) && regional_of(t, "Region2").is_some()
    })
    .await
    .unwrap();
    // Media flows at every player (and so through B2's puller) before the fault.
    sleep(Duration::from_millis(300)).await;
    (primary, backup, players)
}
