//! The control plane's WHIP/WHEP front door: redirects to the least-loaded node or to one
//! carrying the stream, refusals, the default region, tokens and a store that is down,
//! against an in-process control plane. Nodes are made up (registered over gRPC with load
//! reports); no media flows. `/metrics`, topology and the dashboard are in
//! `control_plane_metrics.rs`, the slow-loris case in `control_plane_limits.rs`, the operator
//! CLI in `control_plane_cli.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use strata_tests::control::{Options, Store};
use strata_tests::http::{self, metric_sum};
use strata_tests::wait::eventually;

mod control_plane_http_common;
use control_plane_http_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_sends_publishers_to_the_least_loaded_node() {
    let mut e = Env::new(Options::default()).await;
    e.node("eu-1", "eu", load(5, 0, 0, 0.0)).await;
    e.node("eu-2", "eu", load(1, 0, 0, 0.0)).await;
    e.node("eu-3", "eu", load(3, 0, 0, 0.0)).await;
    e.node("us-1", "us", load(0, 0, 0, 0.0)).await;
    e.loads_visible(4).await;

    let r = e.post("/whip/cam?region=eu").await;
    assert_redirect(&r, "whip", "eu-2", "cam");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = e.post("/whip/cam?region=us").await;
    assert_redirect(&r, "whip", "us-1", "cam");

    // A draining node gets no publishers.
    e.drain("eu-2").await;
    let r = e.post("/whip/cam?region=eu").await;
    assert_redirect(&r, "whip", "eu-3", "cam");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_sends_players_to_a_node_carrying_the_stream() {
    let mut e = Env::new(Options::default()).await;
    e.demo_cluster().await;
    e.node("eu-3", "eu", load(0, 0, 0, 0.0)).await;
    e.node("us-3", "us", load(0, 0, 0, 0.0)).await;
    e.loads_visible(6).await;

    // eu-2 carries demo and is less loaded than eu-1 (also a carrier); eu-3 is idle but
    // does not carry it.
    let r = e.post("/whep/demo?region=eu").await;
    assert_redirect(&r, "whep", "eu-2", "demo");
    let r = e.post("/whep/demo?region=us").await;
    assert_redirect(&r, "whep", "us-2", "demo");
    // A stream nobody carries goes to the least loaded node.
    let r = e.post("/whep/other?region=us").await;
    assert_redirect(&r, "whep", "us-3", "other");
    // With both us carriers draining, the idle node gets the player.
    e.drain("us-1").await;
    e.drain("us-2").await;
    let r = e.post("/whep/demo?region=us").await;
    assert_redirect(&r, "whep", "us-3", "demo");

    let m = http::get(&format!("{}/metrics", e.http))
        .await
        .unwrap()
        .text();
    let carrier = metric_sum(&m, "strata_control_front_door_carrier_redirects_total", &[]);
    assert_eq!(carrier, 2.0, "{m}");
    let whep = metric_sum(
        &m,
        "strata_control_front_door_redirects_total",
        &[("kind", "whep")],
    );
    assert_eq!(whep, 4.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_refuses_bad_requests_and_full_regions() {
    let mut e = Env::new(Options::default()).await;
    e.node("eu-1", "eu", load(0, 0, 0, 0.0)).await;
    e.node("us-1", "us", load(0, 0, 0, 0.0)).await;
    e.loads_visible(2).await;

    let missing = e.post("/whip/cam").await;
    assert_refused(&missing, 400, "region query parameter is required");
    assert_refused(&e.post("/whep/cam").await, 400, "region");
    assert_refused(&e.post("/whip/cam?region=").await, 400, "invalid region");
    assert_refused(
        &e.post("/whip/cam?region=a%20b").await,
        400,
        "invalid region",
    );
    assert_refused(&e.post("/whip/cam?region=..").await, 400, "invalid region");
    assert_refused(
        &e.post("/whip/a%2Fb?region=eu").await,
        400,
        "invalid stream",
    );
    assert_refused(
        &e.post("/whep/a%20b?region=eu").await,
        400,
        "invalid stream",
    );
    let long = "x".repeat(129);
    assert_refused(
        &e.post(&format!("/whep/{long}?region=eu")).await,
        400,
        "too long",
    );
    assert_refused(&e.post("/whip/?region=eu").await, 400, "names no stream");
    assert_refused(&e.post("/whep?region=eu").await, 400, "names no stream");

    // A region without nodes, and one whose only node drains: 503 + Retry-After.
    assert_refused(&e.post("/whip/cam?region=mars").await, 503, "no node");
    e.drain("us-1").await;
    assert_refused(&e.post("/whep/cam?region=us").await, 503, "no node");
    assert_refused(&e.post("/whip/cam?region=us").await, 503, "no node");

    // CORS preflight.
    let r = http::request("OPTIONS", &format!("{}/whep/cam", e.http), &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    assert_cors(&r);
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase()
            .contains("content-type")
    );
    assert_eq!(r.header("accept-post"), Some("application/sdp"));

    let m = http::get(&format!("{}/metrics", e.http))
        .await
        .unwrap()
        .text();
    let refused = |s: &str| {
        metric_sum(
            &m,
            "strata_control_front_door_refused_total",
            &[("status", s)],
        )
    };
    assert_eq!(refused("400"), 10.0, "{m}");
    assert_eq!(refused("503"), 3.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_uses_the_default_region() {
    let options = Options {
        default_region: Some("eu".into()),
        ..Options::default()
    };
    let mut e = Env::new(options).await;
    e.node("eu-1", "eu", load(0, 0, 0, 0.0)).await;
    e.node("us-1", "us", load(0, 0, 0, 0.0)).await;
    e.loads_visible(2).await;
    assert_redirect(&e.post("/whip/cam").await, "whip", "eu-1", "cam");
    assert_redirect(&e.post("/whep/cam").await, "whep", "eu-1", "cam");
    assert_redirect(&e.post("/whep/cam?region=us").await, "whep", "us-1", "cam");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_carries_the_token_to_the_node() {
    let mut e = Env::new(Options::default()).await;
    e.node("eu-1", "eu", load(0, 0, 0, 0.0)).await;
    e.loads_visible(1).await;
    let post = |path: &str, auth: Option<&str>| {
        let url = format!("{}{path}", e.http);
        let auth = auth.map(|t| format!("Bearer {t}"));
        async move {
            let mut headers = vec![("Content-Type", "application/sdp")];
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            http::request("POST", &url, &headers, SDP.as_bytes())
                .await
                .unwrap()
        }
    };
    let base = "http://127.0.0.1:8080/eu-1";
    // Browsers drop Authorization on a cross-origin redirect: it travels in the query.
    let r = post("/whep/cam?region=eu", Some("eyJh.eyJz-_x.c2ln")).await;
    assert_eq!(
        r.header("location"),
        Some(format!("{base}/whep/cam?token=eyJh.eyJz-_x.c2ln").as_str())
    );
    let r = post("/whip/cam?token=abc.def&region=eu", None).await;
    assert_eq!(
        r.header("location"),
        Some(format!("{base}/whip/cam?token=abc.def").as_str())
    );
    // The header wins; a value that is not made of token characters is not passed on.
    let r = post("/whip/cam?token=query&region=eu", Some("header")).await;
    assert_eq!(
        r.header("location"),
        Some(format!("{base}/whip/cam?token=header").as_str())
    );
    let r = post("/whip/cam?token=a%26region%3Dus&region=eu", None).await;
    assert_eq!(
        r.header("location"),
        Some(format!("{base}/whip/cam").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_is_unavailable_while_the_store_is_down() {
    let (etcd, store) = Store::etcd()
        .await
        .expect("etcd starts (run scripts/setup.sh)");
    let mut e = Env::start(store, Some(etcd), Options::default()).await;
    e.node("eu-1", "eu", load(0, 0, 0, 0.0)).await;
    e.loads_visible(1).await;
    assert_redirect(&e.post("/whip/cam?region=eu").await, "whip", "eu-1", "cam");

    e._etcd.as_mut().unwrap().kill().unwrap();
    let healthz = format!("{}/healthz", e.http);
    eventually(
        Duration::from_secs(10),
        "healthz reports the outage",
        || async { (http::get(&healthz).await.ok()?.status == 503).then_some(()) },
    )
    .await;
    assert_refused(&e.post("/whip/cam?region=eu").await, 503, "unreachable");
    assert_refused(&e.post("/whep/cam?region=eu").await, 503, "unreachable");
    // Bad input is still told apart from the outage.
    assert_refused(
        &e.post("/whep/cam?region=a%20b").await,
        400,
        "invalid region",
    );

    let m = http::get(&format!("{}/metrics", e.http))
        .await
        .unwrap()
        .text();
    assert_eq!(metric_sum(&m, "strata_control_store_healthy", &[]), 0.0);
    let doc: Value = serde_json::from_slice(
        &http::get(&format!("{}/api/v1/topology", e.http))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(doc["store_healthy"], false);
    // The dashboard still loads (it shows the outage).
    assert_eq!(
        http::get(&format!("{}/", e.http)).await.unwrap().status,
        200
    );
}
