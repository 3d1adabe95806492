//! The node's and control plane's input budgets: the per-address rate limit (429),
//! slow-loris clients closed at the header timeout, and an oversized gRPC message. Plain HTTP
//! and gRPC on 127.0.0.1. See docs/security.md for the whole matrix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use strata_tests::cluster::Cluster;
use strata_tests::http;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut cfg = cluster.node_config("rl", "r");
    // Two requests, then one per 100 s: the third is over whatever the timing.
    cfg.post_rate_per_ip = 0.01;
    cfg.post_burst_per_ip = 2;
    let node = cluster.node_with(cfg).await.unwrap();
    let url = format!("{}/whep/x", node.http);
    let wrong_type = [("Content-Type", "text/plain")];
    for _ in 0..2 {
        let r = http::request("POST", &url, &wrong_type, b"x")
            .await
            .unwrap();
        assert_eq!(r.status, 415);
    }
    let r = http::request("POST", &url, &wrong_type, b"x")
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    // WHIP and trickle PATCH share the budget; other routes are not limited.
    let r = http::request("POST", &format!("{}/whip/x", node.http), &wrong_type, b"x")
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let r = http::request(
        "PATCH",
        &format!("{}/whep/x/some-session", node.http),
        &frag,
        b"a=ice-ufrag:x\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    let m = http::get(&format!("{}/metrics", node.http)).await.unwrap();
    assert_eq!(m.status, 200);
    node.stop().await.unwrap();
}

/// Reads until the server closes the connection; returns when, and what it sent.
async fn until_closed(s: &mut TcpStream, within: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + within).into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (start.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_closed_at_the_header_timeout() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut cfg = cluster.node_config("sl", "r");
    cfg.http_header_timeout = Duration::from_millis(500);
    let node = cluster.node_with(cfg).await.unwrap();
    let (authority, _) = http::split_url(&node.http).unwrap();

    // A client that sends its headers a byte at a time, forever.
    let mut slow = TcpStream::connect(&authority).await.unwrap();
    slow.write_all(b"POST /whip/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = {
        let (mut rd, mut wr) = slow.into_split();
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                if wr.write_all(b"X").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let start = Instant::now();
        let mut buf = [0u8; 256];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
                Ok(Ok(_)) => continue,
                Err(_) => panic!("slow-loris connection still open after 5 s"),
            }
        };
        writer.abort();
        closed
    };
    assert!(trickle < Duration::from_secs(3), "closed after {trickle:?}");

    // A client that connects and sends nothing.
    let mut idle = TcpStream::connect(&authority).await.unwrap();
    let (after, _) = until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        after < Duration::from_secs(3),
        "idle closed after {after:?}"
    );

    // Normal clients are served meanwhile.
    let r = http::get(&format!("{}/healthz", node.http)).await.unwrap();
    assert_eq!(r.status, 200);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_grpc_message_is_refused() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut nodes = cluster.clients.nodes.clone();
    // Over tonic's 4 MiB decoding limit: refused before any handler runs.
    let huge = "x".repeat(5 << 20);
    let r = nodes
        .get_node(strata_proto::v1::GetNodeRequest { node_id: huge })
        .await
        .expect_err("must be refused");
    assert!(
        matches!(
            r.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::Internal
        ),
        "{r:?}"
    );
    // Just under the limit is still only a bad name.
    let big = "x".repeat(1 << 20);
    let r = nodes
        .get_node(strata_proto::v1::GetNodeRequest { node_id: big })
        .await
        .expect_err("bad name");
    assert_eq!(r.code(), tonic::Code::InvalidArgument, "{r:?}");
}
