//! The control plane's operator data: `/metrics`, `/api/v1/topology` (and the operator token
//! that guards it) and the dashboard page, against an in-process control plane with made-up
//! nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use strata_tests::control::Options;
use strata_tests::http::{self, metric_sum};
use strata_tests::wait::eventually;

mod control_plane_http_common;
use control_plane_http_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_store_latency_cache_and_cluster_series() {
    let mut e = Env::new(Options::default()).await;
    e.demo_cluster().await;
    e.post("/whip/cam?region=eu").await;
    // A steady-state resolve is answered from the cache.
    e.c.resolve("demo", "us", "us-2").await.unwrap();

    let r = http::get(&format!("{}/metrics", e.http)).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let m = r.text();
    strata_tests::promtool::check_metrics(&m)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{m}"));
    let get = |name: &str, labels: &[(&str, &str)]| metric_sum(&m, name, labels);

    // Store latency: a histogram per operation, with the calls made so far.
    assert!(m.contains("# TYPE strata_control_store_request_duration_seconds histogram"));
    let txn = [("op", "txn")];
    let grants = get(
        "strata_control_store_request_duration_seconds_count",
        &[("op", "grant")],
    );
    assert_eq!(grants, 4.0, "one lease per registration:\n{m}");
    let txns = get("strata_control_store_request_duration_seconds_count", &txn);
    assert!(txns >= 2.0, "publish and the claim are transactions:\n{m}");
    let puts = get(
        "strata_control_store_request_duration_seconds_count",
        &[("op", "put")],
    );
    assert!(puts >= 4.0, "registrations write node records:\n{m}");
    let inf = get(
        "strata_control_store_request_duration_seconds_bucket",
        &[("op", "txn"), ("le", "+Inf")],
    );
    assert_eq!(inf, txns, "{m}");
    assert!(get("strata_control_store_request_duration_seconds_sum", &txn) > 0.0);
    assert!(
        m.contains("strata_control_store_errors_total{op=\"txn\"} 0"),
        "{m}"
    );

    assert_eq!(get("strata_control_resolves_total", &[]), 4.0, "{m}");
    assert!(
        get("strata_control_resolves_cached_total", &[]) >= 1.0,
        "{m}"
    );
    assert_eq!(get("strata_control_claims_won_total", &[]), 1.0, "{m}");
    assert_eq!(get("strata_control_publishes_total", &[]), 1.0, "{m}");
    assert!(get("strata_control_cache_hits_total", &[]) >= 4.0, "{m}");
    assert!(
        m.contains("# TYPE strata_control_cache_misses_total counter"),
        "{m}"
    );
    assert_eq!(
        get(
            "strata_control_front_door_redirects_total",
            &[("kind", "whip")]
        ),
        1.0
    );

    assert_eq!(get("strata_control_nodes", &[("region", "eu")]), 2.0, "{m}");
    assert_eq!(get("strata_control_nodes", &[("region", "us")]), 2.0, "{m}");
    assert_eq!(
        get("strata_control_players", &[("region", "eu")]),
        7.0,
        "{m}"
    );
    assert_eq!(
        get(
            "strata_control_egress_bytes_per_second",
            &[("region", "us")]
        ),
        8_900_000.0 / 8.0
    );
    assert_eq!(get("strata_control_streams", &[]), 1.0);
    assert_eq!(get("strata_control_regional_origins", &[]), 1.0);
    assert_eq!(get("strata_control_subscribers", &[]), 2.0);
    assert_eq!(get("strata_control_store_healthy", &[]), 1.0);
    assert!(get("strata_control_cache_revision", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_json_has_nodes_with_load_and_stream_trees() {
    let mut e = Env::new(Options::default()).await;
    e.demo_cluster().await;
    e.drain("us-2").await;
    let url = format!("{}/api/v1/topology", e.http);
    let r = eventually(
        Duration::from_secs(10),
        "us-2 draining in the topology",
        || async {
            let r = http::get(&url).await.ok()?;
            let doc: Value = serde_json::from_slice(&r.body).ok()?;
            (doc["nodes"][3]["draining"] == true).then_some(r)
        },
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Operator data: no CORS, so no other origin's page can read it.
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    let doc: Value = serde_json::from_slice(&r.body).unwrap();

    assert_eq!(doc["store_healthy"], true);
    assert!(doc["revision"].as_i64().unwrap() > 0);
    assert!(doc["generated_at_ms"].as_i64().unwrap() > 0);

    let regions = doc["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    let eu = &regions[0];
    assert_eq!(eu["name"], "eu");
    assert_eq!(
        (&eu["nodes"], &eu["draining"], &eu["players"]),
        (&2.into(), &0.into(), &7.into())
    );
    assert_eq!(eu["egress_bps"], 15_400_000);
    assert_eq!(regions[1]["draining"], 1);

    let nodes = doc["nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["eu-1", "eu-2", "us-1", "us-2"]);
    let eu1 = &nodes[0];
    assert_eq!(eu1["region"], "eu");
    assert_eq!(eu1["http_url"], "http://127.0.0.1:8080/eu-1");
    assert_eq!(eu1["relay_addr"], "127.0.0.1:4433");
    assert_eq!(eu1["capacity"], 100);
    assert_eq!(eu1["version"], "test");
    assert_eq!(eu1["draining"], false);
    assert!(eu1["registered_at_ms"].as_i64().unwrap() > 0);
    assert!(eu1["lease_id"].as_i64().unwrap() != 0);
    let l = &eu1["load"];
    assert_eq!(
        (
            &l["players"],
            &l["streams"],
            &l["publishers"],
            &l["egress_bps"]
        ),
        (&5.into(), &1.into(), &0.into(), &12_400_000.into())
    );
    assert!((l["cpu"].as_f64().unwrap() - 0.5).abs() < 1e-6);
    assert_eq!(nodes[3]["draining"], true);

    let streams = doc["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1);
    let s = &streams[0];
    assert_eq!(s["id"], "demo");
    assert_eq!(s["main"]["node"], "eu-1");
    assert_eq!(s["main"]["region"], "eu");
    assert!(s["main"]["epoch"].as_i64().unwrap() > 0);
    assert!(s["main"]["started_at_ms"].as_i64().unwrap() > 0);
    assert_eq!(s["regions"], serde_json::json!(["eu", "us"]));
    assert_eq!(s["regional_origins"][0]["node"], "us-1");
    assert_eq!(s["regional_origins"][0]["upstream"], "eu-1");
    assert_eq!(s["subscribers"].as_array().unwrap().len(), 2);
    assert_eq!(s["detached"], serde_json::json!([]));

    // The tree: eu-1 → (eu-2, us-1 → us-2).
    let t = &s["tree"];
    assert_eq!(
        (&t["node"], &t["role"]),
        (&"eu-1".into(), &"main_origin".into())
    );
    assert_eq!(t["epoch"], s["main"]["epoch"]);
    let kids = t["children"].as_array().unwrap();
    assert_eq!(kids.len(), 2);
    assert_eq!(
        (&kids[0]["node"], &kids[0]["role"]),
        (&"eu-2".into(), &"edge".into())
    );
    assert!(kids[0].get("epoch").is_none());
    assert_eq!(
        (&kids[1]["node"], &kids[1]["role"], &kids[1]["region"]),
        (&"us-1".into(), &"regional_origin".into(), &"us".into())
    );
    assert_eq!(kids[1]["children"][0]["node"], "us-2");
    assert_eq!(kids[1]["children"][0]["children"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_a_self_contained_page() {
    let e = Env::new(Options::default()).await;
    for path in ["/", "/dashboard"] {
        let r = http::get(&format!("{}{path}", e.http)).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        let page = r.text();
        assert!(page.contains("/api/v1/topology"));
        // No external assets, and data only through textContent.
        for banned in [
            "src=\"http",
            "href=\"http",
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!page.contains(banned), "the page uses {banned}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operator data and limits
// ---------------------------------------------------------------------------------------------

const OPERATOR_TOKEN: &str = "op-token-0123456789abcdef";

/// A file of operator tokens in a fresh directory (kept alive by the returned guard).
fn operator_tokens() -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new("operator-tokens");
    let path = dir.path().join("operator-tokens");
    std::fs::write(&path, format!("alice={OPERATOR_TOKEN}\n")).unwrap();
    (dir, path)
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new(what: &str) -> Dir {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "strata-{what}-{}-{:?}-{}",
                std::process::id(),
                std::thread::current().id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_needs_the_operator_token() {
    let (_dir, tokens) = operator_tokens();
    let mut e = Env::new(Options {
        operator_tokens: Some(tokens),
        ..Options::default()
    })
    .await;
    e.node("eu-1", "eu", load(1, 1, 1000, 0.1)).await;
    e.c.publish("secret-stream", "eu-1").await.unwrap();
    let url = format!("{}/api/v1/topology", e.http);
    let get = |auth: Option<String>| {
        let url = url.clone();
        async move {
            let headers: Vec<(&str, &str)> = match &auth {
                Some(a) => vec![("Authorization", a.as_str())],
                None => vec![],
            };
            http::request("GET", &url, &headers, b"").await.unwrap()
        }
    };
    let refused = [
        (None, "Bearer realm=\"strata-operator\""),
        (
            Some("Bearer wrong-token-0123456789".to_owned()),
            "error=\"invalid_token\"",
        ),
        (
            Some(format!("Basic {OPERATOR_TOKEN}")),
            "error=\"invalid_token\"",
        ),
        (Some("Bearer ".to_owned()), "error=\"invalid_token\""),
    ];
    for (auth, challenge) in refused {
        let r = get(auth.clone()).await;
        assert_eq!(r.status, 401, "{auth:?}: {r:?}");
        let www = r.header("www-authenticate").unwrap_or("");
        assert!(www.contains(challenge), "{auth:?}: {www}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
        assert!(!r.text().contains("secret-stream") && !r.text().contains("eu-1"));
        // The presented token is not echoed.
        assert!(!r.text().contains("wrong-token"), "{}", r.text());
    }
    let r = get(Some(format!("Bearer {OPERATOR_TOKEN}"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["streams"][0]["id"], "secret-stream", "{doc}");
    // The dashboard page itself holds no data and loads without a token; /metrics and the
    // front door are unchanged.
    assert_eq!(
        http::get(&format!("{}/", e.http)).await.unwrap().status,
        200
    );
    assert_eq!(
        http::get(&format!("{}/metrics", e.http))
            .await
            .unwrap()
            .status,
        200
    );
    assert_redirect(
        &e.post("/whep/secret-stream?region=eu").await,
        "whep",
        "eu-1",
        "secret-stream",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_open_only_on_a_dev_control_plane_without_tokens() {
    // Plaintext and no --operator-tokens: the open dev cluster, where gRPC is open too.
    let e = Env::new(Options::default()).await;
    let r = http::get(&format!("{}/api/v1/topology", e.http))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
}
