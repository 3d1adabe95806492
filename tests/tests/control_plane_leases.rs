//! Lease renewals on a real etcd: many leases over a few long-lived LeaseKeepAlive streams,
//! and etcd killed and restarted while they are renewed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::future::join_all;
use strata_control::kv::etcd::EtcdKv;
use strata_control::kv::{Kv, KvError};
use strata_tests::etcd::EtcdProcess;
use strata_tests::http::{get, metric_sum};
use tokio::time::Instant;

const PREFIX: &str = "/leases/";

/// LeaseKeepAlive streams etcd has seen opened, from its `/metrics`.
async fn keep_alive_streams(etcd: &EtcdProcess) -> f64 {
    let text = get(&format!("{}/metrics", etcd.endpoint()))
        .await
        .unwrap()
        .text();
    metric_sum(
        &text,
        "grpc_server_started_total",
        &[("grpc_method", "LeaseKeepAlive")],
    )
}

/// Grants `n` leases with this TTL, each holding one key.
async fn leases(kv: &Kv, n: usize, ttl: Duration) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let lease = kv.grant(ttl).await.unwrap();
        kv.put(&format!("{PREFIX}{i}"), b"x".to_vec(), lease)
            .await
            .unwrap();
        out.push(lease);
    }
    out
}

async fn renew_all(kv: &Kv, leases: &[i64]) -> Vec<Result<(), KvError>> {
    join_all(leases.iter().map(|&l| kv.keep_alive(l))).await
}

async fn keys_left(kv: &Kv) -> usize {
    kv.range(PREFIX).await.unwrap().0.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_leases_are_renewed_over_a_few_long_lived_streams() {
    let etcd = EtcdProcess::start().await.unwrap();
    let kv = Kv::Etcd(Box::new(
        EtcdKv::connect(&[etcd.endpoint()], Duration::from_secs(2))
            .await
            .unwrap(),
    ));
    // Long enough for the 300 grants on a loaded machine; the loop below outlasts it.
    let ttl = Duration::from_secs(5);
    let renewed = leases(&kv, 300, ttl).await;
    // One more lease that nobody renews: its key must go, the others' must not.
    let idle = kv.grant(ttl).await.unwrap();
    kv.put("/idle", b"x".to_vec(), idle).await.unwrap();
    let streams_before = keep_alive_streams(&etcd).await;

    // Renew every 500 ms until the idle lease has expired and one more TTL has passed.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut idle_gone_at = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tick.tick().await;
        assert!(Instant::now() < deadline, "the idle lease never expired");
        let results = renew_all(&kv, &renewed).await;
        let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
        assert!(failed.is_empty(), "renewals failed: {failed:?}");
        if idle_gone_at.is_none() && kv.get("/idle").await.unwrap().is_none() {
            idle_gone_at = Some(Instant::now());
        }
        if idle_gone_at.is_some_and(|t| t.elapsed() >= ttl) {
            break;
        }
    }
    assert_eq!(
        keys_left(&kv).await,
        renewed.len(),
        "a renewed lease expired"
    );

    // A lease etcd does not know is reported as such, on the same streams.
    assert!(matches!(
        kv.keep_alive(idle).await,
        Err(KvError::LeaseNotFound(_))
    ));
    let opened = keep_alive_streams(&etcd).await - streams_before;
    // Thousands of renewals; one stream per renewal would open as many.
    assert!(
        (1.0..=4.0).contains(&opened),
        "{opened} LeaseKeepAlive streams opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_fail_unavailable_while_etcd_is_down_and_recover_after() {
    let mut etcd = EtcdProcess::start().await.unwrap();
    let timeout = Duration::from_secs(1);
    let kv = Kv::Etcd(Box::new(
        EtcdKv::connect(&[etcd.endpoint()], timeout).await.unwrap(),
    ));
    // Longer than the outage: leases renewed before it must survive it.
    let held = leases(&kv, 50, Duration::from_secs(15)).await;
    assert!(renew_all(&kv, &held).await.iter().all(Result::is_ok));

    etcd.kill().unwrap();
    let t0 = Instant::now();
    let results = renew_all(&kv, &held).await;
    let took = t0.elapsed();
    for r in &results {
        assert!(matches!(r, Err(KvError::Unavailable(_))), "{r:?}");
    }
    // Failed within the store timeout (plus scheduling), not hung.
    assert!(took < timeout * 2, "renewals took {took:?} to fail");
    // And again a moment later, while the stream task backs off.
    let r = kv.keep_alive(held[0]).await;
    assert!(matches!(r, Err(KvError::Unavailable(_))), "{r:?}");

    etcd.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if renew_all(&kv, &held).await.iter().all(Result::is_ok) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renewals did not recover after etcd came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(keys_left(&kv).await, held.len(), "a lease was lost");
}
