//! Redundant ingest from encoders: Debian's ffmpeg publishes the primary over RTMP to O1
//! (Region1) and the backup (`role=backup`) over SRT or RTMP to B2 (Region2), which registers
//! as the stream's standby. When the live stream stops reaching B2 (O1 SIGKILLed, or the
//! primary encoder stopped with its connection kept), B2 switches the stream to the backup;
//! WHEP players in both regions keep their sessions, one SSRC per track and continuous
//! sequence numbers. A primary encoder that sends again stays the standby.
//!
//! Needs the binaries: `cargo build -p strata-control -p strata-node --bins` first. Runs in the
//! loopback-only network namespace (`scripts/test.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_tests::faults::{DeadNodes, TreeMonitor, arm};
use strata_tests::media::TestPlayer;
use strata_tests::ports::require_netns;
use strata_tests::procs::ProcCluster;
use strata_tests::rtmp::ffmpeg_publish;
use tokio::process::Child;

mod failover_common;
use failover_common::backup::*;
use failover_common::*;

const PLAYERS: [&str; 3] = ["E11", "E21", "B2"];

/// Case 8e: O1 (the RTMP primary's node) is SIGKILLed; B2 (the SRT backup's node) switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_encoders_primary_node_sigkill() {
    require_netns("netns_failover_encoders_primary_node_sigkill");
    let _serial = SERIAL.lock().await;
    let case = "encoders, RTMP primary's node SIGKILL, SRT backup";
    let mut c = cluster().await;
    let backup_id = format!("#!::r={STREAM},m=publish,role=backup");
    let backup_url = format!("srt://{}?streamid={backup_id}", addr(&c, "B2", false));
    let (_primary, _backup, players, old_epoch) = live(&c, &backup_url, "mpegts").await;

    let dead = DeadNodes::default();
    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], dead.clone());
    let refs: Vec<&TestPlayer> = players.iter().collect();
    let since = arm(&refs);
    c.node_mut("O1").unwrap().kill().unwrap();
    dead.mark_dead("O1", TTL + RECORDS_SLACK);
    let stalls = resumed(&refs, since).await;
    print_stalls(case, &PLAYERS, &stalls);
    let tree = switched_to_b2(&c, old_epoch).await;
    assert_eq!(tree.standby, None, "{tree:?}");
    assert_eq!(switches(&c, "B2", "silent").await, 1.0);
    same_sessions(&c).await;
    assert_no_violations(case, monitor);
    one_ssrc_no_seq_gap(case, &refs);
    for (n, s) in PLAYERS.iter().zip(&stalls) {
        assert!(*s < SWITCH_STALL, "[{case}] {n} stalled {s:?}");
    }
}

/// Case 9e: the RTMP primary encoder is stopped (SIGSTOP: its connection stays open, nothing
/// is sent); B2 (an RTMP backup, `?role=backup` in the stream key) switches, O1 becomes the
/// standby. The encoder resumes (SIGCONT): nothing moves, the players see no interruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_encoders_primary_encoder_stops() {
    require_netns("netns_failover_encoders_primary_encoder_stops");
    let _serial = SERIAL.lock().await;
    let case = "encoders, RTMP primary stopped, RTMP backup";
    let c = cluster().await;
    let backup_url = format!("rtmp://{}/live/{STREAM}?role=backup", addr(&c, "B2", true));
    let (primary, _backup, players, old_epoch) = live(&c, &backup_url, "flv").await;

    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], DeadNodes::default());
    let refs: Vec<&TestPlayer> = players.iter().collect();
    let since = arm(&refs);
    signal(&primary, "-STOP");
    let stalls = resumed(&refs, since).await;
    print_stalls(case, &PLAYERS, &stalls);
    let switched = switched_to_b2(&c, old_epoch).await;
    let tree = wait_tree(&c, Duration::from_secs(5), "O1 standby", |t| {
        t.is_some_and(|t| t.standby.as_ref().is_some_and(|s| s.node_id == "O1"))
    })
    .await
    .unwrap();
    assert_eq!(tree.main, switched.main);
    assert_eq!(switches(&c, "B2", "silent").await, 1.0);

    // The primary encoder sends again (a burst: ffmpeg -re catches up): it is the standby now.
    arm(&refs);
    signal(&primary, "-CONT");
    media_window(Duration::from_secs(3)).await;
    let after = wait_tree(&c, Duration::from_secs(1), "live", |t| t.is_some())
        .await
        .unwrap();
    assert_eq!(after.main, switched.main, "switched back");
    assert_eq!(
        after.standby.as_ref().map(|s| s.node_id.as_str()),
        Some("O1")
    );
    assert_eq!(switches(&c, "O1", "silent").await, 0.0);
    let quiet = gaps(&refs);
    print_stalls(&format!("{case}, primary back"), &PLAYERS, &quiet);
    same_sessions(&c).await;
    assert_no_violations(case, monitor);
    one_ssrc_no_seq_gap(case, &refs);
    for (n, s) in PLAYERS.iter().zip(&stalls) {
        assert!(*s < SWITCH_STALL, "[{case}] {n} stalled {s:?}");
    }
    for (n, s) in PLAYERS.iter().zip(&quiet) {
        assert!(
            *s < NO_INTERRUPTION,
            "[{case}] {n}: {s:?} after the primary came back"
        );
    }
}

/// A node's RTMP (`rtmp`) or SRT ingest address.
fn addr(c: &ProcCluster, node: &str, rtmp: bool) -> String {
    let n = c.node(node).unwrap();
    if rtmp { n.rtmp_addr() } else { n.srt_addr() }
}

/// The RTMP primary on O1, the backup (`backup_url`, ffmpeg's `format`) on B2, players on E11,
/// E21 and B2 with media flowing; returns them and the main origin's epoch.
async fn live(
    c: &ProcCluster,
    backup_url: &str,
    format: &str,
) -> (Child, Child, Vec<TestPlayer>, i64) {
    let primary_url = format!("rtmp://{}/live/{STREAM}", addr(c, "O1", true));
    let primary = ffmpeg_publish(&primary_url, "flv", &[]).unwrap();
    let old = wait_tree(c, Duration::from_secs(20), "primary live", |t| {
        t.is_some_and(|t| t.main.as_ref().is_some_and(|m| m.node_id == "O1"))
    })
    .await
    .unwrap();
    let backup = ffmpeg_publish(backup_url, format, &[]).unwrap();
    wait_tree(c, Duration::from_secs(20), "standby", |t| {
        t.is_some_and(|t| t.standby.as_ref().is_some_and(|s| s.node_id == "B2"))
    })
    .await
    .unwrap();
    let mut players = Vec::new();
    for n in PLAYERS {
        players.push(play(c, n).await);
    }
    wait_tree(c, Duration::from_secs(5), "settled", |t| {
        regional_of(t, "Region2").is_some()
    })
    .await
    .unwrap();
    // Media flows at every player (and so through B2's puller), and B2's warm group holds a
    // keyframe (the encoders send one a second), before the fault.
    media_window(Duration::from_millis(1200)).await;
    (primary, backup, players, old.main.unwrap().epoch)
}

/// Sends `sig` (`-STOP`, `-CONT`) to an encoder.
fn signal(encoder: &Child, sig: &str) {
    let pid = encoder.id().expect("the encoder runs").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Every player kept one SSRC per track and saw no hole in its sequence numbers.
fn one_ssrc_no_seq_gap(case: &str, players: &[&TestPlayer]) {
    for (n, p) in PLAYERS.iter().zip(players) {
        let st = p.stats();
        assert_eq!(st.ssrc_changes, 0, "[{case}] {n}: {st:?}");
        assert_eq!(st.seq_gaps, 0, "[{case}] {n}: {st:?}");
    }
}
