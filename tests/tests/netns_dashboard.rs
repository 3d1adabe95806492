//! The control plane's dashboard in a real browser: headless Chromium (Debian's, driven by
//! `tests/browser/dashboard.mjs` through playwright-core) opens `/` of a control plane whose
//! registry holds made-up nodes with load reports and a stream tree spanning three regions,
//! waits until the page shows every node and the tree, checks that free-text fields are
//! rendered as text, then follows a drain and a new stream without reloading. Runs inside a
//! loopback-only network namespace (scripts/test.sh). Needs `scripts/setup.sh --browser`.
//!
//! The screenshot is kept when `STRATA_BROWSER_SHOTS=DIR` is set (as `DIR/dashboard.png`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser_common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use browser_common::{browser_dir, browser_tools_for};
use serde_json::Value;
use strata_proto::v1;
use strata_tests::control::{Clients, ControlPlane, Options, Store};
use strata_tests::ports::require_netns;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const TTL: Duration = Duration::from_secs(3);
/// How long the driver may take for everything (its own per-step deadline is 30 s).
const DRIVER_DEADLINE: Duration = Duration::from_secs(120);

/// Registers a node with `http_url` and `version` and keeps it alive with `load`.
async fn node(
    c: &Clients,
    id: &str,
    region: &str,
    http_url: &str,
    version: &str,
    load: v1::Load,
) -> tokio::task::JoinHandle<()> {
    let mut c = c.clone();
    let info = v1::NodeInfo {
        id: id.into(),
        region: region.into(),
        relay_addr: "127.0.0.1:4433".into(),
        http_url: http_url.into(),
        capacity: 200,
        version: version.into(),
    };
    let lease = c
        .nodes
        .register(v1::RegisterRequest { node: Some(info) })
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let id = id.to_owned();
    tokio::spawn(async move {
        loop {
            let req = v1::KeepAliveRequest {
                node_id: id.clone(),
                lease_id: lease,
                load: Some(load.clone()),
            };
            let _ = c.nodes.keep_alive(req).await;
            tokio::time::sleep(TTL / 6).await;
        }
    })
}

fn load(players: u32, streams: u32, publishers: u32, egress_bps: u64, cpu: f32) -> v1::Load {
    v1::Load {
        streams,
        players,
        publishers,
        egress_bps,
        cpu,
        stream_players: Vec::new(),
    }
}

/// Reads stdout lines until one is a JSON object.
async fn next_json(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Option<Value> {
    while let Some(l) = lines.next_line().await.unwrap() {
        if l.trim_start().starts_with('{') {
            return Some(
                serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("driver line is not JSON ({e}): {l}")),
            );
        }
        eprintln!("driver stdout: {l}");
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_dashboard_shows_nodes_and_stream_trees() {
    require_netns("netns_dashboard_shows_nodes_and_stream_trees");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let (node_bin, driver) = browser_tools_for("dashboard.mjs");

    let store = Store::memory();
    let options = Options {
        http: true,
        ..Options::default()
    };
    let cp = ControlPlane::start_with(&store, TTL, options)
        .await
        .unwrap();
    let mut c = cp.clients().await.unwrap();
    let http = cp.http_url().unwrap();

    // Three regions. eu-3's URL and version carry markup the page must show as text.
    let url = |id: &str| format!("https://{id}.example.net");
    let mut alive = Vec::new();
    for (id, region, l) in [
        ("eu-1", "eu", load(42, 2, 1, 18_500_000, 1.35)),
        ("eu-2", "eu", load(17, 1, 0, 6_200_000, 0.41)),
        ("us-1", "us", load(63, 1, 0, 24_000_000, 1.9)),
        ("us-2", "us", load(9, 1, 0, 3_100_000, 0.22)),
        ("ap-1", "ap", load(21, 1, 0, 7_700_000, 0.6)),
    ] {
        alive.push(node(&c, id, region, &url(id), "0.1.0", l).await);
    }
    alive.push(
        node(
            &c,
            "eu-3",
            "eu",
            "https://eu-3.example.net/<img/src=x/onerror=window.__xss=1>",
            "<b>0.1.0</b>",
            load(0, 0, 0, 0, 0.02),
        )
        .await,
    );

    // demo: eu-1 → eu-2; eu-1 → us-1 → us-2; eu-1 → ap-1.
    c.publish("demo", "eu-1").await.unwrap();
    c.resolve("demo", "eu", "eu-2").await.unwrap();
    c.resolve("demo", "us", "us-1").await.unwrap();
    c.resolve("demo", "us", "us-2").await.unwrap();
    c.resolve("demo", "ap", "ap-1").await.unwrap();

    let shots = std::env::var_os("STRATA_BROWSER_SHOTS").map(PathBuf::from);
    let tmp = std::env::temp_dir().join(format!("strata-dashboard-{}", std::process::id()));
    let dir = shots.clone().unwrap_or(tmp.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let screenshot = dir.join("dashboard.png");

    let mut child = Command::new(&node_bin)
        .arg(&driver)
        .args(["--url", &format!("{http}/")])
        .args(["--nodes", "eu-1,eu-2,eu-3,us-1,us-2,ap-1"])
        .args(["--stream", "demo"])
        .args(["--tree", "eu-1>eu-2,eu-1>us-1,us-1>us-2,eu-1>ap-1"])
        .args(["--escaped", "eu-3"])
        .args(["--draining", "us-2", "--stream2", "talk"])
        .arg("--screenshot")
        .arg(&screenshot)
        .args(["--timeout-ms", "30000"])
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {}: {e}", node_bin.display(), driver.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let result = tokio::time::timeout(DRIVER_DEADLINE, async {
        // First the page shows the cluster as it is.
        let ready = next_json(&mut lines).await?;
        if ready["phase"] != "ready" {
            return Some(ready);
        }
        eprintln!("dashboard ready: {ready}");
        // Then it must follow changes by itself: a drain, and a new stream with a viewer in ap.
        c.nodes
            .drain(v1::DrainRequest {
                node_id: "us-2".into(),
            })
            .await
            .unwrap();
        c.publish("talk", "us-1").await.unwrap();
        c.resolve("talk", "ap", "ap-1").await.unwrap();
        next_json(&mut lines).await
    })
    .await
    .expect("the dashboard driver printed no result in time");
    let Some(res) = result else {
        let status = child.wait().await.unwrap();
        panic!("the dashboard driver exited ({status}) without a result");
    };
    eprintln!("dashboard result: {res}");
    eprintln!("screenshot: {}", screenshot.display());
    let status = child.wait().await.unwrap();
    assert!(
        res["ok"] == Value::Bool(true),
        "dashboard check failed ({status}): {}\nfull result: {res}",
        res["error"].as_str().unwrap_or("?")
    );
    assert!(status.success(), "driver exit status {status}");
    assert_eq!(res["escaped"]["injected"], 0, "{res}");
    assert_eq!(res["changes"]["drainingShown"], true, "{res}");
    assert!(res["updates"].as_u64().unwrap() >= 2, "{res}");
    assert!(screenshot.is_file());

    for a in alive {
        a.abort();
    }
    if shots.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    cp.stop().await.unwrap();
}
