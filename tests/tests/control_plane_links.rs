//! The link-cost API of the region graph against a real control plane:
//! SetLinkCost and its bad input, ListLinkCosts, the nodes' measured links
//! (ReportLinks) and grpcurl through reflection. Every scenario but the grpcurl
//! one runs against a real etcd and the memory store. How claims use the costs:
//! `control_plane_graph.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_proto::v1;
use strata_proto::v1::graph_service_client::GraphServiceClient;
use strata_tests::control::{ControlPlane, Store};
use strata_tests::grpcurl::{grpcurl, grpcurl_ok};
use tonic::Code;
use tonic::transport::Channel;

mod control_plane_common;
mod graph_common;
use control_plane_common::*;
use graph_common::*;

both_stores!(set_link_cost_refuses_bad_input, nodes_report_measured_links,);

async fn set_link_cost_refuses_bad_input(e: Env) {
    let mut g = graph(&e.cp).await;
    let cases = [
        ("r1", "r2", -1),
        ("r1", "r2", 60_001),
        ("r1", "r2", i64::MAX),
        ("r1", "r1", 10),
        ("", "r2", 10),
        ("r1", "bad region", 10),
        ("r1/x", "r2", 10),
        (&"r".repeat(200), "r2", 10),
    ];
    for (from, to, cost_ms) in cases {
        let req = v1::SetLinkCostRequest {
            from_region: from.to_owned(),
            to_region: to.into(),
            cost_ms,
            unpin: false,
        };
        let err = g.set_link_cost(req).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{from} {to} {cost_ms}: {err:?}"
        );
    }
    let list = g
        .list_link_costs(v1::ListLinkCostsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.links.is_empty(), "{list:?}");
    // Unpinning what was never pinned is fine; 0 and the maximum are costs.
    let unpin = v1::SetLinkCostRequest {
        from_region: "r1".into(),
        to_region: "r2".into(),
        unpin: true,
        ..Default::default()
    };
    g.set_link_cost(unpin).await.unwrap();
    pin(&mut g, "r1", "r2", 0).await;
    pin(&mut g, "r2", "r1", 60_000).await;
}

/// Operators reach the graph service with grpcurl through reflection; a
/// negative cost is INVALID_ARGUMENT there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_sets_lists_and_unpins_link_costs() {
    let store = Store::memory();
    let cp = ControlPlane::start(&store, TTL).await.unwrap();
    let addr = cp.addr().to_string();
    let list = grpcurl_ok(&["-plaintext", &addr, "list"]).await.unwrap();
    assert!(
        list.lines().any(|l| l.trim() == "strata.v1.GraphService"),
        "{list}"
    );
    let set = r#"{"fromRegion":"eu","toRegion":"use","costMs":40}"#;
    grpcurl_ok(&[
        "-plaintext",
        "-d",
        set,
        &addr,
        "strata.v1.GraphService/SetLinkCost",
    ])
    .await
    .unwrap();
    let listed = grpcurl_ok(&["-plaintext", &addr, "strata.v1.GraphService/ListLinkCosts"])
        .await
        .unwrap();
    assert!(
        listed.contains("\"costMs\": 40") && listed.contains("pinned"),
        "{listed}"
    );
    let bad = r#"{"fromRegion":"eu","toRegion":"use","costMs":-5}"#;
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        bad,
        &addr,
        "strata.v1.GraphService/SetLinkCost",
    ])
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("InvalidArgument"), "{text}");
    let unpin = r#"{"fromRegion":"eu","toRegion":"use","unpin":true}"#;
    grpcurl_ok(&[
        "-plaintext",
        "-d",
        unpin,
        &addr,
        "strata.v1.GraphService/SetLinkCost",
    ])
    .await
    .unwrap();
    grpcurl_ok(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "strata.v1.GraphService/Rebalance",
    ])
    .await
    .unwrap();
}

async fn report(
    g: &mut GraphServiceClient<Channel>,
    node: &str,
    links: Vec<v1::LinkReport>,
) -> Result<(), tonic::Status> {
    let req = v1::ReportLinksRequest {
        node_id: node.into(),
        links,
    };
    g.report_links(req).await.map(drop)
}

fn link(region: &str, rtt_ms: u64, loss: f32) -> v1::LinkReport {
    v1::LinkReport {
        region: region.into(),
        rtt_us: rtt_ms * 1000,
        loss,
    }
}

async fn costs(g: &mut GraphServiceClient<Channel>) -> Vec<(String, String, u32, String)> {
    let l = g
        .list_link_costs(v1::ListLinkCostsRequest {})
        .await
        .unwrap();
    l.into_inner()
        .links
        .into_iter()
        .map(|l| (l.from_region, l.to_region, l.cost_ms, l.source))
        .collect()
}

/// Measured costs: from the reporting node's region to each peer region,
/// half the RTT plus the loss penalty; pins win over them; bad reports are
/// refused.
async fn nodes_report_measured_links(mut e: Env) {
    let _ka = register_all(&mut e.c, &[("m", "r1"), ("n2", "r2"), ("n3", "r3")]).await;
    let mut g = graph(&e.cp).await;
    report(
        &mut g,
        "m",
        vec![
            link("r2", 80, 0.0),
            link("r3", 150, 0.005),
            link("r1", 1, 0.0),
        ],
    )
    .await
    .unwrap();
    let want = |from: &str, to: &str, ms: u32, src: &str| {
        (from.to_owned(), to.to_owned(), ms, src.to_owned())
    };
    assert_eq!(
        costs(&mut g).await,
        [
            want("r1", "r2", 40, "measured"),
            want("r1", "r3", 85, "measured")
        ]
    );
    report(&mut g, "n2", vec![link("r3", 30, 0.0)])
        .await
        .unwrap();
    pin(&mut g, "r1", "r3", 500).await;
    let c = costs(&mut g).await;
    assert!(c.contains(&want("r2", "r3", 15, "measured")), "{c:?}");
    assert!(c.contains(&want("r1", "r3", 500, "pinned")), "{c:?}");
    // The measured chain is what claims use: r3 pulls from r2.
    e.c.publish("cam", "m").await.unwrap();
    e.c.resolve("cam", "r2", "n2").await.unwrap();
    let r3 = e.c.resolve("cam", "r3", "n3").await.unwrap();
    assert_eq!(upstream(&r3), "n2");
    // Bad reports.
    let many = (0..65).map(|i| link(&format!("x{i}"), 1, 0.0)).collect();
    let err = report(&mut g, "m", many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = report(&mut g, "m", vec![link("bad region", 1, 0.0)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = report(&mut g, "ghost", vec![link("r2", 1, 0.0)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Hostile numbers are clamped, not trusted.
    report(&mut g, "n3", vec![link("r1", u64::MAX / 1000, f32::NAN)])
        .await
        .unwrap();
    let c = costs(&mut g).await;
    assert!(c.contains(&want("r3", "r1", 60_000, "measured")), "{c:?}");
}
