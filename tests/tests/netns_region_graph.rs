//! The region graph with real processes (etcd, a control plane, nodes), real WebRTC players
//! and QUIC between nodes: three regions with pinned link costs (r1 –40 ms– r2 –15 ms– r3,
//! r1 –85 ms– r3, the WAN bench's shape), the publisher in r1. r3's regional origin pulls
//! from r2's, not from the main origin; SIGKILLing r2's regional origin re-parents r3 to the
//! main origin with a stall under a second at r3's player.
//!
//! Needs the binaries: `cargo build -p strata-control -p strata-node --bins` first. Runs in the
//! loopback-only network namespace (`scripts/test.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use strata_tests::faults::{arm, ms, wait_resumed};
use strata_tests::ports::require_netns;
use strata_tests::procs::ProcOptions;

mod failover_common;
use failover_common::*;

fn regional_upstream(t: Option<&strata_proto::v1::StreamTree>, region: &str) -> Option<String> {
    t?.regional
        .iter()
        .find(|r| r.region == region)
        .map(|r| format!("{}@{}", r.upstream_node_id, r.upstream_region))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_region_graph_chain_and_re_parent() {
    require_netns("netns_region_graph_chain_and_re_parent");
    let _serial = SERIAL.lock().await;
    let case = "region graph";
    let (mut c, _publisher, [p2, p3], tree) = live(
        ProcOptions {
            nodes: nodes(&[("O1", "r1"), ("N2", "r2"), ("N3", "r3")]),
            control_args: vec!["--link-costs".into(), "r1:r2=40,r2:r3=15,r1:r3=85".into()],
            ..ProcOptions::default()
        },
        ["N2", "N3"],
        "chained",
        |t| {
            regional_upstream(t, "r2").as_deref() == Some("O1@")
                && regional_upstream(t, "r3").as_deref() == Some("N2@r2")
        },
    )
    .await;
    let r3 = tree.regional.iter().find(|r| r.region == "r3").unwrap();
    assert_eq!((r3.depth, r3.path_cost_ms), (2, 55), "{tree:?}");
    // One copy leaves the main origin, to r2; r2 feeds r3.
    assert_eq!(
        receiving_from(&c, "O1", &["N2", "N3"]).await,
        BTreeSet::from(["N2".to_owned()])
    );
    assert_eq!(
        receiving_from(&c, "N2", &["N3"]).await,
        BTreeSet::from(["N3".to_owned()])
    );

    // Nodes report their relay links (every 5 s): the unpinned directions are measured.
    let g =
        strata_proto::v1::graph_service_client::GraphServiceClient::connect(cp_urls(&c)[0].clone())
            .await
            .unwrap();
    strata_tests::wait::eventually(Duration::from_secs(15), "measured links", || {
        let mut g = g.clone();
        async move {
            let req = strata_proto::v1::ListLinkCostsRequest {};
            let l = g.list_link_costs(req).await.ok()?.into_inner().links;
            l.iter()
                .any(|l| l.source == "measured" && l.from_region == "r2" && l.to_region == "r1")
                .then_some(())
        }
    })
    .await;

    // r2's regional origin dies: r3 notices (QUIC idle timeout), reports it and re-parents.
    let players = [&p3];
    let since = arm(&players);
    c.node_mut("N2").unwrap().kill().unwrap();
    drop(p2);
    let stalls = wait_resumed(
        &players,
        since,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    print_stalls(case, &["N3"], &stalls);
    wait_tree(&c, Duration::from_secs(5), "re-parented", |t| {
        regional_upstream(t, "r3").as_deref() == Some("O1@")
    })
    .await;
    assert_eq!(
        receiving_from(&c, "O1", &["N3"]).await,
        BTreeSet::from(["N3".to_owned()])
    );
    eprintln!(
        "[{case}] r3 re-parented to the main origin; stall {} ms",
        ms(stalls[0])
    );
    assert!(
        stalls[0] < Duration::from_secs(1),
        "[{case}] N3 stalled {:?}",
        stalls[0]
    );
}
