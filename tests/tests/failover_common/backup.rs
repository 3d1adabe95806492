//! What the redundant-ingest cases share: the two-region cluster with its switch gap, the
//! backup publisher, and the checks after a switch.

use std::time::Duration;

use strata_proto::v1;
use strata_tests::http::{self, metric_sum};
use strata_tests::media::{TestPublisher, vp8_clip};
use strata_tests::procs::{ProcCluster, ProcOptions};

use super::{STREAM, nodes, regional_of, start, url, wait_tree};

/// The most a switch to the backup may cost the players: the bound.
pub const SWITCH_STALL: Duration = Duration::from_millis(500);
/// The switch gap the cases run with (the default is 500 ms, which alone would use up the
/// bound): the clip sends a packet every 20 to 33 ms, the encoders' streams one every few ms.
pub const GAP: &str = "200ms";

/// O1 and E11 in Region1, B2 and E21 in Region2; every node with the test's switch gap.
pub async fn cluster() -> ProcCluster {
    start(ProcOptions {
        nodes: nodes(&[
            ("O1", "Region1"),
            ("E11", "Region1"),
            ("B2", "Region2"),
            ("E21", "Region2"),
        ]),
        node_args: vec!["--backup-switch-gap".into(), GAP.into()],
        ..ProcOptions::default()
    })
    .await
}

/// A backup publisher on `node`.
pub async fn publish_backup(c: &ProcCluster, node: &str) -> TestPublisher {
    let p = TestPublisher::start(
        &url(c, node),
        &format!("{STREAM}?role=backup"),
        vp8_clip().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(p.node, node);
    p
}

/// Waits for B2 to be the main origin at a newer epoch; returns the tree.
pub async fn switched_to_b2(c: &ProcCluster, old_epoch: i64) -> v1::StreamTree {
    let tree = wait_tree(c, Duration::from_secs(5), "switched", |t| {
        t.is_some_and(|t| t.main.as_ref().is_some_and(|m| m.node_id == "B2"))
    })
    .await
    .unwrap();
    assert!(tree.main.as_ref().unwrap().epoch > old_epoch, "{tree:?}");
    assert_eq!(regional_of(Some(&tree), "Region2"), None, "{tree:?}");
    tree
}

/// `strata_node_backup_switches_total{reason}` of `node`.
pub async fn switches(c: &ProcCluster, node: &str, reason: &str) -> f64 {
    let m = http::get(&format!("{}/metrics", url(c, node)))
        .await
        .unwrap()
        .text();
    metric_sum(
        &m,
        "strata_node_backup_switches_total",
        &[("reason", reason)],
    )
}

/// One WHEP session per player node, ever: nobody re-negotiated.
pub async fn same_sessions(c: &ProcCluster) {
    for n in ["E11", "E21", "B2"] {
        let m = http::get(&format!("{}/metrics", url(c, n)))
            .await
            .unwrap()
            .text();
        assert_eq!(
            metric_sum(&m, "strata_node_players_total", &[]),
            1.0,
            "{n}: a player came back through a new WHEP session"
        );
    }
}
