//! The operator CLI, `strata-control nodes|streams|stream|drain|undrain`, against an
//! in-process control plane with made-up nodes, and the server's refusal to start without
//! TLS or an explicit `--plaintext`.
//!
//! The tests run the `strata-control` binary from the target directory: build it first with
//! `cargo build -p strata-control` (`scripts/test.sh` builds every binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use strata_proto::v1;
use strata_tests::control::Options;
use strata_tests::http;

mod control_plane_http_common;
use control_plane_http_common::*;

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
    let mut lines: Vec<&str> = text.lines().collect();
    // The last line says which publisher is live and where the backup is.
    assert_eq!(
        lines.pop(),
        Some("live publisher on eu-1; no backup publisher"),
        "{text}"
    );
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
    // The regional origin's edge with its link cost (nothing measured or pinned: unknown).
    assert!(
        lines[4].ends_with("link 1000 ms unknown, path 1000 ms"),
        "{text}"
    );
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
