//! What the control plane's HTTP suites share: an in-process control plane with its HTTP
//! side, made-up nodes kept alive with fixed load reports, a demo cluster, and checks for the
//! front door's redirects and refusals.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use strata_proto::v1;
use strata_tests::control::{Clients, ControlPlane, Options, Store};
use strata_tests::etcd::EtcdProcess;
use strata_tests::http::{self, Response};
use strata_tests::wait::eventually;

pub const TTL: Duration = Duration::from_secs(3);
pub const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

/// A control plane with its HTTP side, made-up nodes kept alive with fixed load reports.
pub struct Env {
    pub _etcd: Option<EtcdProcess>,
    pub cp: ControlPlane,
    pub c: Clients,
    pub http: String,
    pub keepalive: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for k in &self.keepalive {
            k.abort();
        }
    }
}

pub fn load(players: u32, streams: u32, egress_bps: u64, cpu: f32) -> v1::Load {
    v1::Load {
        streams,
        players,
        publishers: 0,
        egress_bps,
        cpu,
        stream_players: Vec::new(),
    }
}

impl Env {
    pub async fn new(options: Options) -> Env {
        Self::start(Store::memory(), None, options).await
    }

    pub async fn start(store: Store, etcd: Option<EtcdProcess>, options: Options) -> Env {
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
    pub async fn node(&mut self, id: &str, region: &str, load: v1::Load) {
        let lease = self.c.register(id, region).await.unwrap().lease_id;
        let mut c = self.c.clone();
        let id = id.to_owned();
        self.keepalive.push(tokio::spawn(async move {
            loop {
                let req = v1::KeepAliveRequest {
                    node_id: id.clone(),
                    lease_id: lease,
                    load: Some(load.clone()),
                };
                let _ = c.nodes.keep_alive(req).await;
                tokio::time::sleep(TTL / 6).await;
            }
        }));
    }

    /// Waits until the topology document shows a load report for every node.
    pub async fn loads_visible(&self, nodes: usize) -> Value {
        let url = format!("{}/api/v1/topology", self.http);
        eventually(
            Duration::from_secs(10),
            "load reports in the topology",
            || async {
                let doc: Value = serde_json::from_slice(&http::get(&url).await.ok()?.body).ok()?;
                let n = doc["nodes"].as_array()?;
                (n.len() == nodes && n.iter().all(|n| n["load"].is_object())).then_some(doc)
            },
        )
        .await
    }

    /// eu-1 (main origin of `demo`), eu-2 (pulls from eu-1), us-1 (regional origin),
    /// us-2 (pulls from us-1).
    pub async fn demo_cluster(&mut self) {
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

    pub async fn post(&self, path: &str) -> Response {
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

    pub async fn drain(&mut self, node: &str) {
        let req = v1::DrainRequest {
            node_id: node.into(),
        };
        self.c.nodes.drain(req).await.unwrap();
    }
}

/// Checks a 307 to `node`'s `kind` endpoint for `stream`.
pub fn assert_redirect(r: &Response, kind: &str, node: &str, stream: &str) {
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:8080/{node}/{kind}/{stream}").as_str()),
        "{r:?}"
    );
    assert_eq!(r.header("x-strata-node"), Some(node), "{r:?}");
    assert_cors(r);
}

pub fn assert_cors(r: &Response) {
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r:?}");
    // Header names are case-insensitive (RFC 9110 §5.1); tower-http lists them in lower case.
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(expose.contains("location"), "{r:?}");
}

pub fn assert_refused(r: &Response, status: u16, text: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.text().contains(text), "{:?} lacks {text:?}", r.text());
    assert_cors(r);
    if status == 503 {
        assert_eq!(r.header("retry-after"), Some("2"), "{r:?}");
    }
}
