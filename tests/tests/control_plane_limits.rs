//! The control plane's HTTP limits: slow-loris clients holding connections open must not
//! starve `/metrics` or the nodes' keep-alives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::{Options, Store};
use strata_tests::http;

mod control_plane_http_common;
use control_plane_http_common::*;

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
