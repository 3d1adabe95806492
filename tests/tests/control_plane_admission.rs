//! Admission control of claims against a real etcd: a storm of stream starts (publishes and
//! first resolves, far more at once than the replica admits) while healthy nodes keep their
//! leases alive.
//! - every claim either succeeds or is refused RESOURCE_EXHAUSTED with a retry hint, never a
//!   timeout or another failure, and, retried as nodes do (the hint, then the backoff), every
//!   one eventually succeeds; every published stream's record is in etcd afterwards;
//! - no keep-alive of a healthy node finds its lease gone, and every node is still registered;
//! - the refusals are counted in `/metrics` (`strata_control_claims_rejected_total`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use strata_proto::v1;
use strata_tests::control::{Clients, ControlPlane, Options, Store};
use strata_tests::http::{get, metric_sum};
use strata_tests::pushback::retrying;
use tonic::Code;

/// Claims admitted at once: far below the storm, so that refusals must happen.
const LIMIT: usize = 4;
/// Nodes that publish and keep alive.
const NODES: usize = 40;
/// Streams published at once (and as many first resolves by other nodes).
const STREAMS: usize = 400;
const TTL: Duration = Duration::from_secs(3);
/// How long a claim may keep being refused before the test calls it starved.
const RETRY_BUDGET: Duration = Duration::from_secs(60);

struct Outcome {
    refusals: u32,
    other_errors: Vec<String>,
}

/// Keeps every node's lease alive every TTL/3 until `stop`; counts keep-alives that found
/// their lease gone.
fn keep_alive(
    c: Clients,
    nodes: Vec<(String, i64)>,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TTL / 3);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let calls = nodes.iter().map(|(id, lease)| {
                let mut c = c.clone();
                let req = v1::KeepAliveRequest {
                    node_id: id.clone(),
                    lease_id: *lease,
                    load: None,
                };
                async move { c.nodes.keep_alive(req).await }
            });
            for r in join_all(calls).await {
                if matches!(&r, Err(s) if s.code() == Code::NotFound) {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// One claim retried as a node does; its refusals and any failure that is not one.
async fn claim<T, F, Fut>(attempt: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let r = retrying(RETRY_BUDGET, attempt).await;
    Outcome {
        refusals: r.refusals,
        other_errors: r.result.err().map(|e| format!("{e}")).into_iter().collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_storm_is_refused_with_a_hint_and_no_lease_is_lost() {
    let (_etcd, store) = Store::etcd().await.unwrap();
    let options = Options {
        http: true,
        claims_in_flight: Some(LIMIT),
        ..Options::default()
    };
    let cp = ControlPlane::start_with(&store, TTL, options)
        .await
        .unwrap();
    let c = cp.clients().await.unwrap();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let (id, region) = (format!("n{i}"), format!("r{}", i % 4));
        let lease = c.clone().register(&id, &region).await.unwrap().lease_id;
        nodes.push((id, region, lease));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let lost = Arc::new(AtomicU64::new(0));
    let renewing = nodes.iter().map(|(id, _, l)| (id.clone(), *l)).collect();
    let keeper = keep_alive(c.clone(), renewing, stop.clone(), lost.clone());

    // The storm: every publish at once; then every first resolve (a regional claim or a
    // subscriber write) at once, from a node of another region.
    let publishes = (0..STREAMS).map(|s| {
        let (c, node) = (c.clone(), nodes[s % NODES].0.clone());
        async move {
            claim(|| {
                let mut c = c.clone();
                let node = node.clone();
                async move { c.publish(&format!("s{s}"), &node).await }
            })
            .await
        }
    });
    let published = join_all(publishes).await;
    let resolves = (0..STREAMS).map(|s| {
        let c = c.clone();
        let (node, region, _) = nodes[(s + 1) % NODES].clone();
        async move {
            claim(|| {
                let mut c = c.clone();
                let (node, region) = (node.clone(), region.clone());
                async move { c.resolve(&format!("s{s}"), &region, &node).await }
            })
            .await
        }
    });
    let resolved = join_all(resolves).await;
    stop.store(true, Ordering::Relaxed);
    keeper.await.unwrap();

    let all: Vec<_> = published.iter().chain(&resolved).collect();
    let failures: Vec<_> = all.iter().flat_map(|o| &o.other_errors).collect();
    assert!(
        failures.is_empty(),
        "claims failed otherwise than RESOURCE_EXHAUSTED, or stayed refused: {failures:?}"
    );
    let refusals: u64 = all.iter().map(|o| u64::from(o.refusals)).sum();
    assert!(refusals > 0, "{STREAMS} claims at once were never refused");
    assert_eq!(
        lost.load(Ordering::Relaxed),
        0,
        "a healthy node lost its lease"
    );

    // Nothing lost: every stream has its main record, every node its registration.
    let mut etcd = etcd_client::Client::connect([store_endpoint(&store)], None)
        .await
        .unwrap();
    let mains = etcd
        .get(
            "/strata/streams/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    let mains = mains
        .kvs()
        .iter()
        .filter(|kv| kv.key().ends_with(b"/main"))
        .count();
    assert_eq!(mains, STREAMS, "published streams missing from etcd");
    let mut nodes_client = c.nodes.clone();
    let registered = nodes_client.list_nodes(v1::ListNodesRequest::default());
    let registered = registered.await.unwrap().into_inner().nodes.len();
    assert_eq!(registered, NODES, "a node lost its registration");

    // Every refusal was counted.
    let text = get(&format!("{}/metrics", cp.http_url().unwrap()))
        .await
        .unwrap()
        .text();
    let counted = metric_sum(&text, "strata_control_claims_rejected_total", &[]);
    assert_eq!(counted, refusals as f64);
}

/// Excess publishes are refused RESOURCE_EXHAUSTED (nothing else) with a usable hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_publishes_are_refused_resource_exhausted_with_a_hint() {
    let (_etcd, store) = Store::etcd().await.unwrap();
    let options = Options {
        claims_in_flight: Some(1),
        ..Options::default()
    };
    let cp = ControlPlane::start_with(&store, TTL, options)
        .await
        .unwrap();
    let mut c = cp.clients().await.unwrap();
    c.register("n0", "r0").await.unwrap();
    let answers = join_all((0..50).map(|s| {
        let mut c = c.clone();
        async move { c.publish(&format!("s{s}"), "n0").await }
    }))
    .await;
    let refused: Vec<_> = answers
        .iter()
        .filter_map(|r| r.as_ref().err())
        .inspect(|s| assert_eq!(s.code(), Code::ResourceExhausted, "{s}"))
        .collect();
    assert!(
        !refused.is_empty(),
        "50 publishes at once, one slot: none refused"
    );
    for s in refused {
        let hint = strata_proto::pushback::retry_after(s).unwrap();
        assert!(hint >= Duration::from_millis(20), "hint {hint:?}");
    }
}

fn store_endpoint(store: &Store) -> String {
    match store {
        Store::Etcd(e) => e[0].clone(),
        Store::Memory(_) => unreachable!("etcd store"),
    }
}
