//! The control plane's HTTP side and operator CLI: the WHIP/WHEP front door, `/metrics`,
//! `/api/v1/topology`, and `strata-control nodes|streams|stream|drain` against an in-process
//! control plane. Nodes are made up (registered over gRPC with load reports); no media flows.
//!
//! The CLI tests run the `strata-control` binary from the target directory: build it first
//! with `cargo build -p strata-control` (`scripts/test.sh` builds every binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use strata_proto::v1;
use strata_tests::control::{Clients, ControlPlane, Options, Store};
use strata_tests::etcd::EtcdProcess;
use strata_tests::http::{self, Response, metric_sum};

const TTL: Duration = Duration::from_secs(3);
const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

/// A control plane with its HTTP side, made-up nodes kept alive with fixed load reports.
struct Env {
    _etcd: Option<EtcdProcess>,
    cp: ControlPlane,
    c: Clients,
    http: String,
    keepalive: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for k in &self.keepalive {
            k.abort();
        }
    }
}

fn load(players: u32, streams: u32, egress_bps: u64, cpu: f32) -> v1::Load {
    v1::Load {
        streams,
        players,
        publishers: 0,
        egress_bps,
        cpu,
    }
}

impl Env {
    async fn new(options: Options) -> Env {
        Self::start(Store::memory(), None, options).await
    }

    async fn start(store: Store, etcd: Option<EtcdProcess>, options: Options) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let cp = ControlPlane::start_with(
            &store,
            TTL,
            Options {
                http: true,
                ..options
            },
        )
        .await
        .expect("control plane starts");
        let c = cp.clients().await.unwrap();
        let http = cp.http_url().unwrap();
        Env {
            _etcd: etcd,
            cp,
            c,
            http,
            keepalive: Vec::new(),
        }
    }

    /// Registers `id` in `region` and keeps it alive, reporting `load`.
    async fn node(&mut self, id: &str, region: &str, load: v1::Load) {
        let lease = self.c.register(id, region).await.unwrap().lease_id;
        let mut c = self.c.clone();
        let id = id.to_owned();
        self.keepalive.push(tokio::spawn(async move {
            loop {
                let req = v1::KeepAliveRequest {
                    node_id: id.clone(),
                    lease_id: lease,
                    load: Some(load),
                };
                let _ = c.nodes.keep_alive(req).await;
                tokio::time::sleep(TTL / 6).await;
            }
        }));
    }

    /// Waits until the topology document shows a load report for every node.
    async fn loads_visible(&self, nodes: usize) -> Value {
        let url = format!("{}/api/v1/topology", self.http);
        eventually("load reports in the topology", || async {
            let doc: Value = serde_json::from_slice(&http::get(&url).await.ok()?.body).ok()?;
            let n = doc["nodes"].as_array()?;
            (n.len() == nodes && n.iter().all(|n| n["load"].is_object())).then_some(doc)
        })
        .await
    }

    /// eu-1 (main origin of `demo`), eu-2 (pulls from eu-1), us-1 (regional origin),
    /// us-2 (pulls from us-1).
    async fn demo_cluster(&mut self) {
        self.node("eu-1", "eu", load(5, 1, 12_400_000, 0.5)).await;
        self.node("eu-2", "eu", load(2, 1, 3_000_000, 0.1)).await;
        self.node("us-1", "us", load(4, 1, 8_000_000, 0.3)).await;
        self.node("us-2", "us", load(1, 1, 900_000, 0.05)).await;
        self.c.publish("demo", "eu-1").await.unwrap();
        self.c.resolve("demo", "eu", "eu-2").await.unwrap();
        let r = self.c.resolve("demo", "us", "us-1").await.unwrap();
        assert_eq!(r.role, v1::Role::RegionalOrigin as i32);
        self.c.resolve("demo", "us", "us-2").await.unwrap();
        self.loads_visible(4).await;
    }

    async fn post(&self, path: &str) -> Response {
        let headers = [("Content-Type", "application/sdp")];
        http::request(
            "POST",
            &format!("{}{path}", self.http),
            &headers,
            SDP.as_bytes(),
        )
        .await
        .unwrap()
    }

    async fn drain(&mut self, node: &str) {
        let req = v1::DrainRequest {
            node_id: node.into(),
        };
        self.c.nodes.drain(req).await.unwrap();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after 10 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks a 307 to `node`'s `kind` endpoint for `stream`.
fn assert_redirect(r: &Response, kind: &str, node: &str, stream: &str) {
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:8080/{node}/{kind}/{stream}").as_str()),
        "{r:?}"
    );
    assert_eq!(r.header("x-strata-node"), Some(node), "{r:?}");
    assert_cors(r);
}

fn assert_cors(r: &Response) {
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r:?}");
    let expose = r.header("access-control-expose-headers").unwrap_or("");
    assert!(expose.contains("Location"), "{r:?}");
}

fn assert_refused(r: &Response, status: u16, text: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.text().contains(text), "{:?} lacks {text:?}", r.text());
    assert_cors(r);
    if status == 503 {
        assert_eq!(r.header("retry-after"), Some("2"), "{r:?}");
    }
}

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
            .contains("Content-Type")
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
    eventually("healthz reports the outage", || async {
        (http::get(&healthz).await.ok()?.status == 503).then_some(())
    })
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
    let r = eventually("us-2 draining in the topology", || async {
        let r = http::get(&url).await.ok()?;
        let doc: Value = serde_json::from_slice(&r.body).ok()?;
        (doc["nodes"][3]["draining"] == true).then_some(r)
    })
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

/// Soft limit of open files of this process.
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// Opens an idle TCP connection to `to` from `from` (any port).
/// Opens an idle TCP connection to `to` from `from` (any port), never sending a byte.
/// Resolves, once the server closes it, to how long it stayed open.
async fn idle_socket(
    from: std::net::Ipv4Addr,
    to: std::net::SocketAddr,
) -> tokio::task::JoinHandle<Duration> {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((from, 0).into()).unwrap();
    let mut s = s.connect(to).await.unwrap();
    let at = tokio::time::Instant::now();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1];
        let _ = s.read(&mut buf).await;
        at.elapsed()
    })
}

/// Percentile `p` (0..=100) of sorted `v`.
fn pct(v: &[Duration], p: usize) -> Duration {
    v[(v.len() - 1) * p / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_does_not_starve_metrics_or_node_keepalives() {
    const SOCKETS: usize = 5000;
    const ADDRESSES: usize = 20;
    const PER_ADDRESS: usize = 64; // the default --http-max-connections-per-ip
    // Long enough to open every socket and measure on a busy 2-core machine before it fires.
    const HEADER_TIMEOUT: Duration = Duration::from_secs(12);
    // Each idle socket is one descriptor here and at most one in the server (same process).
    let limit = open_files_limit();
    assert!(
        limit >= 2 * SOCKETS as u64 + 1000,
        "this test needs `ulimit -n` of at least {} (have {limit})",
        2 * SOCKETS + 1000
    );
    let (etcd, store) = Store::etcd().await.expect("etcd starts");
    let mut e = Env::start(
        store,
        Some(etcd),
        Options {
            http_header_timeout: Some(HEADER_TIMEOUT),
            ..Options::default()
        },
    )
    .await;
    let lease = e.c.register("eu-1", "eu").await.unwrap().lease_id;
    // Kept alive in the background too, as a node does, while the sockets are opened.
    let mut bg = e.c.clone();
    e.keepalive.push(tokio::spawn(async move {
        loop {
            let req = v1::KeepAliveRequest {
                node_id: "eu-1".into(),
                lease_id: lease,
                load: None,
            };
            let _ = bg.nodes.keep_alive(req).await;
            tokio::time::sleep(TTL / 6).await;
        }
    }));
    let addr: std::net::SocketAddr = e.http.trim_start_matches("http://").parse().unwrap();
    let mut c = e.c.clone();
    let url = format!("{}/metrics", e.http);
    // One /metrics GET and one KeepAlive, timed.
    let mut probe = async move || {
        let t = std::time::Instant::now();
        let r = http::get(&url).await.unwrap();
        let m = t.elapsed();
        assert_eq!(r.status, 200);
        let t = std::time::Instant::now();
        c.nodes
            .keep_alive(v1::KeepAliveRequest {
                node_id: "eu-1".into(),
                lease_id: lease,
                load: Some(load(0, 0, 0, 0.0)),
            })
            .await
            .unwrap();
        (m, t.elapsed())
    };
    // The same probes before the attack, for comparison (and to warm the paths up).
    let (mut base_m, mut base_k) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let (m, k) = probe().await;
        base_m.push(m);
        base_k.push(k);
    }
    base_m.sort();
    base_k.sort();
    eprintln!(
        "no idle sockets: /metrics p50 {:?} max {:?}; KeepAlive p50 {:?} max {:?}",
        pct(&base_m, 50),
        pct(&base_m, 100),
        pct(&base_k, 50),
        pct(&base_k, 100)
    );

    // 5,000 idle sockets from 20 loopback addresses (250 each), none sending a byte.
    let opened = tokio::time::Instant::now();
    let mut sockets = Vec::with_capacity(SOCKETS);
    for batch in 0..SOCKETS / 500 {
        let connects = (0..500).map(|i| {
            let n = batch * 500 + i;
            let from = std::net::Ipv4Addr::new(127, 0, 1, 1 + (n % ADDRESSES) as u8);
            idle_socket(from, addr)
        });
        sockets.extend(futures::future::join_all(connects).await);
    }
    let open_time = opened.elapsed();
    let watchers = sockets;

    // Meanwhile /metrics (from 127.0.0.1) and node keep-alives (gRPC) answer quickly.
    let (mut metrics, mut keepalives) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let (m, k) = probe().await;
        metrics.push(m);
        keepalives.push(k);
    }
    assert!(
        opened.elapsed() < HEADER_TIMEOUT - Duration::from_millis(500),
        "measured while every held socket was still open"
    );
    metrics.sort();
    keepalives.sort();
    eprintln!(
        "with {SOCKETS} idle sockets (opened in {open_time:?}): /metrics p50 {:?} max {:?}; \
         KeepAlive p50 {:?} max {:?}",
        pct(&metrics, 50),
        pct(&metrics, 100),
        pct(&keepalives, 50),
        pct(&keepalives, 100)
    );
    assert!(
        pct(&metrics, 100) < Duration::from_millis(100),
        "{metrics:?}"
    );
    assert!(
        pct(&keepalives, 100) < Duration::from_millis(100),
        "{keepalives:?}"
    );

    // Each address held its share until the header timeout; the rest were closed at once.
    let mut closed = Vec::with_capacity(SOCKETS);
    for w in watchers {
        closed.push(
            tokio::time::timeout(HEADER_TIMEOUT * 3, w)
                .await
                .expect("the server closes every idle socket")
                .unwrap(),
        );
    }
    let held: Vec<_> = closed
        .iter()
        .filter(|t| **t >= HEADER_TIMEOUT - Duration::from_millis(100))
        .collect();
    let early = closed.len() - held.len();
    eprintln!(
        "{} sockets held until the header timeout (closed by {:?}), {early} refused at accept",
        held.len(),
        held.iter().max()
    );
    assert_eq!(held.len(), ADDRESSES * PER_ADDRESS);
    assert!(
        closed
            .iter()
            .all(|t| *t < HEADER_TIMEOUT + Duration::from_secs(2)),
        "idle sockets closed at the header timeout"
    );
}

// ---------------------------------------------------------------------------------------------
// Operator CLI
// ---------------------------------------------------------------------------------------------

/// The `strata-control` binary in the target directory of this test.
fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .skip(1)
        .map(|d| d.join("strata-control"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no strata-control binary above {}: build it first with \
                 `cargo build -p strata-control`",
                exe.display()
            )
        })
}

async fn cli(e: &Env, args: &[&str]) -> Output {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(cli_binary())
            .args(args)
            .env("STRATA_CONTROL_PLANE", e.cp.url())
            .env_remove("STRATA_CONFIG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("strata-control finished in time")
    .unwrap();
    eprintln!(
        "$ strata-control {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_nodes_prints_an_aligned_table() {
    let mut e = Env::new(Options::default()).await;
    e.demo_cluster().await;
    e.drain("us-2").await;

    let text = stdout(&cli(&e, &["nodes"]).await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let header = lines[0];
    let titles: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        titles,
        [
            "REGION", "ID", "PLAYERS", "STREAMS", "EGRESS", "CPU", "DRAINING", "AGE"
        ]
    );
    let cells = |l: &str| {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(lines[1])[..7],
        ["eu", "eu-1", "5/100", "1", "12.4 Mbit/s", "0.50", "no"]
    );
    assert_eq!(
        cells(lines[4])[..7],
        ["us", "us-2", "1/100", "1", "900 kbit/s", "0.05", "yes"]
    );
    // Text columns start where their title starts; number columns end where theirs ends.
    for l in &lines[1..] {
        let l = l.as_bytes();
        let at = |i: usize| l.get(i).copied().unwrap_or(b' ');
        for title in ["ID", "DRAINING"] {
            let i = header.find(title).unwrap();
            assert!(
                at(i) != b' ' && at(i - 1) == b' ',
                "{title} misaligned:\n{text}"
            );
        }
        for title in ["PLAYERS", "STREAMS", "EGRESS", "CPU", "AGE"] {
            let end = header.find(title).unwrap() + title.len();
            assert!(
                at(end - 1) != b' ' && at(end) == b' ',
                "{title} misaligned:\n{text}"
            );
        }
    }

    let text = stdout(&cli(&e, &["nodes", "--region", "us"]).await);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().skip(1).all(|l| l.starts_with("us ")), "{text}");

    let v: Value = serde_json::from_str(&stdout(&cli(&e, &["nodes", "--json"]).await)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 4);
    assert_eq!(arr[0]["id"], "eu-1");
    assert_eq!(arr[0]["load"]["players"], 5);
    assert_eq!(arr[3]["draining"], true);

    let bad = cli(&e, &["nodes", "--region", "a b"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid region"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_streams_lists_streams_as_table_and_json() {
    let mut e = Env::new(Options::default()).await;
    e.demo_cluster().await;
    e.c.publish("talk", "us-2").await.unwrap();

    let text = stdout(&cli(&e, &["streams"]).await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("STREAM  MAIN ORIGIN  REGIONS  NODES  SUBSCRIBERS  LIVE"),
        "{text}"
    );
    let demo: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        demo[..6],
        ["demo", "eu-1", "(eu)", "eu,us", "4", "2"],
        "{text}"
    );
    let talk: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        talk[..6],
        ["talk", "us-2", "(us)", "us", "1", "0"],
        "{text}"
    );

    let v: Value = serde_json::from_str(&stdout(&cli(&e, &["streams", "--json"]).await)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], "demo");
    assert_eq!(arr[0]["main"]["node"], "eu-1");
    assert_eq!(arr[0]["regions"], serde_json::json!(["eu", "us"]));
    assert_eq!(arr[0]["tree"]["children"][1]["children"][0]["node"], "us-2");
    assert_eq!(arr[1]["id"], "talk");
    // The same document as the HTTP API's streams.
    let doc: Value = serde_json::from_slice(
        &http::get(&format!("{}/api/v1/topology", e.http))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(doc["streams"], v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_stream_prints_the_tree() {
    let mut e = Env::new(Options::default()).await;
    e.demo_cluster().await;

    let text = stdout(&cli(&e, &["stream", "demo"]).await);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("stream demo: live ")
            && lines[0].ends_with("main origin eu-1 (eu), 2 regions, 4 nodes"),
        "{text}"
    );
    assert_eq!(lines[1], "");
    let tree: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(tree[0][..4], ["eu-1", "eu", "main", "origin"], "{text}");
    assert_eq!(tree[1][..4], ["├─", "eu-2", "eu", "edge"], "{text}");
    assert_eq!(
        tree[2][..5],
        ["└─", "us-1", "us", "regional", "origin"],
        "{text}"
    );
    assert_eq!(tree[3][..4], ["└─", "us-2", "us", "edge"], "{text}");
    assert!(lines[5].starts_with("   └─ us-2"), "{text}");
    // The region column lines up.
    let region_at: Vec<usize> = lines[2..]
        .iter()
        .map(|l| {
            let byte = l.find("  eu ").or_else(|| l.find("  us ")).unwrap();
            l[..byte].chars().count()
        })
        .collect();
    assert!(
        region_at.windows(2).all(|w| w[0] == w[1]),
        "{text}\n{region_at:?}"
    );

    let v: Value =
        serde_json::from_str(&stdout(&cli(&e, &["stream", "demo", "--json"]).await)).unwrap();
    assert_eq!(v["id"], "demo");
    assert_eq!(v["tree"]["node"], "eu-1");

    let missing = cli(&e, &["stream", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("strata-control:") && err.contains("not live"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drain_marks_the_node_draining() {
    let mut e = Env::new(Options::default()).await;
    e.node("eu-1", "eu", load(0, 0, 0, 0.0)).await;
    e.node("eu-2", "eu", load(3, 0, 0, 0.0)).await;
    e.loads_visible(2).await;
    assert_redirect(&e.post("/whip/cam?region=eu").await, "whip", "eu-1", "cam");

    let text = stdout(&cli(&e, &["drain", "eu-1"]).await);
    assert!(text.starts_with("eu-1 is draining"), "{text}");
    let n =
        e.c.nodes
            .get_node(v1::GetNodeRequest {
                node_id: "eu-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert!(n.draining);
    // The front door now sends publishers elsewhere.
    assert_redirect(&e.post("/whip/cam?region=eu").await, "whip", "eu-2", "cam");

    let v: Value =
        serde_json::from_str(&stdout(&cli(&e, &["drain", "eu-2", "--json"]).await)).unwrap();
    assert_eq!(v, serde_json::json!({"node": "eu-2", "draining": true}));

    let unknown = cli(&e, &["drain", "nobody"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no live node"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_undrain_puts_the_node_back() {
    let mut e = Env::new(Options::default()).await;
    e.node("eu-1", "eu", load(0, 0, 0, 0.0)).await;
    e.node("eu-2", "eu", load(3, 0, 0, 0.0)).await;
    e.loads_visible(2).await;
    stdout(&cli(&e, &["drain", "eu-1"]).await);
    assert_redirect(&e.post("/whip/cam?region=eu").await, "whip", "eu-2", "cam");

    let text = stdout(&cli(&e, &["undrain", "eu-1"]).await);
    assert!(text.starts_with("eu-1 is back in service"), "{text}");
    let n =
        e.c.nodes
            .get_node(v1::GetNodeRequest {
                node_id: "eu-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert!(!n.draining);
    // The front door sends publishers to the least loaded node again.
    assert_redirect(&e.post("/whip/cam?region=eu").await, "whip", "eu-1", "cam");

    let v: Value =
        serde_json::from_str(&stdout(&cli(&e, &["undrain", "eu-2", "--json"]).await)).unwrap();
    assert_eq!(v, serde_json::json!({"node": "eu-2", "draining": false}));

    let unknown = cli(&e, &["undrain", "nobody"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no live node"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_an_unreachable_control_plane() {
    let port = strata_tests::ports::free_tcp_port().unwrap();
    let out = tokio::process::Command::new(cli_binary())
        .args(["nodes", "--control-plane", &format!("127.0.0.1:{port}")])
        .env_remove("STRATA_CONFIG")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the control plane"), "{err}");
    // Server flags and subcommands do not mix.
    let out = tokio::process::Command::new(cli_binary())
        .args(["--listen", "127.0.0.1:1", "nodes"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_needs_tls_or_an_explicit_plaintext() {
    let run = |args: &'static [&'static str]| async move {
        tokio::process::Command::new(cli_binary())
            .args(["--store", "memory", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_PLAINTEXT")
            .env_remove("STRATA_TLS_CERT")
            .env_remove("STRATA_TLS_KEY")
            .env_remove("STRATA_CLIENT_CA")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap()
    };
    let out = run(&[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--plaintext") && err.contains("--tls-cert"),
        "{err}"
    );
    let out = run(&["--tls-cert", "/nonexistent/cp.pem"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("go together"), "{err}");
}
