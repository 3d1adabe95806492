//! The control plane's behaviour suite. Every scenario runs twice: against a
//! real etcd (started on free loopback ports) and against the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::{Clients, ControlPlane, Store};
use strata_tests::etcd::EtcdProcess;
use tonic::Code;

/// Lease TTL used by the suite (etcd leases are whole seconds).
const TTL: Duration = Duration::from_secs(1);

struct Env {
    _etcd: Option<EtcdProcess>,
    store: Store,
    cp: ControlPlane,
    c: Clients,
}

impl Env {
    async fn new(etcd: bool) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (etcd, store) = if etcd {
            let (p, s) = Store::etcd()
                .await
                .expect("etcd starts (run scripts/setup.sh)");
            (Some(p), s)
        } else {
            (None, Store::memory())
        };
        let cp = ControlPlane::start(&store, TTL)
            .await
            .expect("control plane starts");
        let c = cp.clients().await.expect("clients");
        Env {
            _etcd: etcd,
            store,
            cp,
            c,
        }
    }
}

/// Runs a scenario `async fn(Env)` against both stores.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(super::Env::new(true).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(super::Env::new(false).await).await;
            }
        }
    )*};
}

both_stores!(
    node_lifecycle,
    publish_claims_main_origin,
    resolve_builds_the_tree,
    contention_elects_one_regional_origin,
    liveness_removes_dead_node_and_its_records,
    second_replica_sees_claims,
    bad_input_is_invalid_argument,
    unreachable_report_fails_over,
    republish_replaces_stale_regional_origin,
    watch_reports_topology_changes,
    placement_picks_least_loaded,
    release_drops_regional_claim,
    draining_node_never_becomes_origin,
    unpublish_of_an_old_epoch_leaves_the_new_record,
    drain_reaches_the_node_and_undrain_restores_it,
);

/// Polls `f` until it returns `Some`, or panics after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
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

/// Keeps these nodes' leases alive until the returned guard is dropped.
fn keep_alive(mut c: Clients, leases: Vec<(String, i64)>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            for (n, l) in &leases {
                let req = v1::KeepAliveRequest {
                    node_id: n.clone(),
                    lease_id: *l,
                    load: None,
                };
                let _ = c.nodes.keep_alive(req).await;
            }
            tokio::time::sleep(TTL / 4).await;
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn role(r: &v1::ResolveResponse) -> v1::Role {
    v1::Role::try_from(r.role).unwrap_or(v1::Role::Unspecified)
}

fn upstream(r: &v1::ResolveResponse) -> &str {
    r.upstream
        .as_ref()
        .map(|u| u.node_id.as_str())
        .unwrap_or("")
}

async fn node_lifecycle(mut e: Env) {
    let reg = e.c.register("n1", "eu").await.unwrap();
    assert!(reg.lease_id != 0);
    assert_eq!(reg.ttl_ms, 1000);
    assert!(reg.keepalive_interval_ms > 0 && reg.keepalive_interval_ms < reg.ttl_ms);
    e.c.register("n2", "us").await.unwrap();

    let load = v1::Load {
        streams: 2,
        players: 7,
        publishers: 1,
        egress_bps: 9000,
        cpu: 0.5,
    };
    let ka = v1::KeepAliveRequest {
        node_id: "n1".into(),
        lease_id: reg.lease_id,
        load: Some(load),
    };
    e.c.nodes.keep_alive(ka).await.unwrap();
    let n1 = eventually(Duration::from_secs(2), "load visible", || {
        let mut c = e.c.clone();
        async move {
            let n = c
                .nodes
                .get_node(v1::GetNodeRequest {
                    node_id: "n1".into(),
                })
                .await
                .ok()?;
            let n = n.into_inner();
            (n.load.as_ref()?.players == 7).then_some(n)
        }
    })
    .await;
    assert_eq!(n1.info.unwrap().region, "eu");

    let all =
        e.c.nodes
            .list_nodes(v1::ListNodesRequest::default())
            .await
            .unwrap()
            .into_inner();
    let ids: Vec<String> = all
        .nodes
        .iter()
        .map(|n| n.info.clone().unwrap().id)
        .collect();
    assert_eq!(ids, ["n1", "n2"]);
    let eu =
        e.c.nodes
            .list_nodes(v1::ListNodesRequest {
                region: "eu".into(),
            })
            .await
            .unwrap();
    assert_eq!(eu.into_inner().nodes.len(), 1);

    // A wrong lease is refused, not silently accepted.
    let bad = v1::KeepAliveRequest {
        node_id: "n1".into(),
        lease_id: 12345,
        load: None,
    };
    assert_eq!(
        e.c.nodes.keep_alive(bad).await.unwrap_err().code(),
        Code::NotFound
    );

    e.c.nodes
        .drain(v1::DrainRequest {
            node_id: "n1".into(),
        })
        .await
        .unwrap();
    let n1 =
        e.c.nodes
            .get_node(v1::GetNodeRequest {
                node_id: "n1".into(),
            })
            .await
            .unwrap();
    assert!(n1.into_inner().draining);

    e.c.publish("s1", "n1").await.unwrap();
    e.c.nodes
        .deregister(v1::DeregisterRequest {
            node_id: "n1".into(),
        })
        .await
        .unwrap();
    let err =
        e.c.nodes
            .get_node(v1::GetNodeRequest {
                node_id: "n1".into(),
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Its stream went with it.
    eventually(Duration::from_secs(2), "stream gone", || {
        let mut c = e.c.clone();
        async move {
            let r = c
                .routing
                .get_stream(v1::GetStreamRequest {
                    stream: "s1".into(),
                })
                .await;
            (r.err()?.code() == Code::NotFound).then_some(())
        }
    })
    .await;
    let unknown = v1::DeregisterRequest {
        node_id: "nope".into(),
    };
    assert_eq!(
        e.c.nodes.deregister(unknown).await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn publish_claims_main_origin(mut e: Env) {
    e.c.register("o1", "eu").await.unwrap();
    e.c.register("o2", "eu").await.unwrap();
    let first = e.c.publish("cam", "o1").await.unwrap().origin.unwrap();
    assert_eq!(
        (first.node_id.as_str(), first.region.as_str()),
        ("o1", "eu")
    );
    assert!(first.epoch > 0);
    // Idempotent for the holder.
    let again = e.c.publish("cam", "o1").await.unwrap().origin.unwrap();
    assert_eq!(again.epoch, first.epoch);
    // Refused for anyone else, naming the holder.
    let err = e.c.publish("cam", "o2").await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("o1"), "{}", err.message());
    // Only the holder may unpublish, even naming the holder's epoch.
    assert_eq!(
        e.c.unpublish("cam", "o2", first.epoch)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    // The epoch is required.
    assert_eq!(
        e.c.unpublish("cam", "o1", 0).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    e.c.unpublish("cam", "o1", first.epoch).await.unwrap();
    let err = e.c.resolve("cam", "eu", "o2").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Free again.
    let later = e.c.publish("cam", "o2").await.unwrap().origin.unwrap();
    assert!(later.epoch > first.epoch);
    // Unknown nodes cannot publish.
    assert_eq!(
        e.c.publish("x", "ghost").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
}

async fn resolve_builds_the_tree(mut e: Env) {
    for (n, r) in [
        ("origin1", "r1"),
        ("edge11", "r1"),
        ("edge21", "r2"),
        ("edge22", "r2"),
    ] {
        e.c.register(n, r).await.unwrap();
    }
    assert_eq!(
        e.c.resolve("live", "r1", "edge11")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let main =
        e.c.publish("live", "origin1")
            .await
            .unwrap()
            .origin
            .unwrap();

    let r = e.c.resolve("live", "r1", "origin1").await.unwrap();
    assert_eq!(role(&r), v1::Role::MainOrigin);
    assert_eq!(r.epoch, main.epoch);

    let r = e.c.resolve("live", "r1", "edge11").await.unwrap();
    assert_eq!((role(&r), upstream(&r)), (v1::Role::Edge, "origin1"));
    assert_eq!(r.upstream.as_ref().unwrap().epoch, main.epoch);

    let r21 = e.c.resolve("live", "r2", "edge21").await.unwrap();
    assert_eq!(
        (role(&r21), upstream(&r21)),
        (v1::Role::RegionalOrigin, "origin1")
    );
    let r22 = e.c.resolve("live", "r2", "edge22").await.unwrap();
    assert_eq!((role(&r22), upstream(&r22)), (v1::Role::Edge, "edge21"));
    assert_eq!(r22.upstream.as_ref().unwrap().epoch, r21.epoch);
    // Asking again changes nothing.
    let again = e.c.resolve("live", "r2", "edge21").await.unwrap();
    assert_eq!(
        (role(&again), again.epoch),
        (v1::Role::RegionalOrigin, r21.epoch)
    );

    let tree =
        e.c.routing
            .get_stream(v1::GetStreamRequest {
                stream: "live".into(),
            })
            .await;
    let tree = tree.unwrap().into_inner();
    assert_eq!(tree.main.unwrap().node_id, "origin1");
    let regional: Vec<(String, String, String)> = tree
        .regional
        .iter()
        .map(|r| {
            (
                r.region.clone(),
                r.node_id.clone(),
                r.upstream_node_id.clone(),
            )
        })
        .collect();
    assert_eq!(regional, [("r2".into(), "edge21".into(), "origin1".into())]);
    let subs: Vec<(String, String)> = tree
        .subscribers
        .iter()
        .map(|s| (s.node_id.clone(), s.upstream_node_id.clone()))
        .collect();
    assert_eq!(
        subs,
        [
            ("edge11".into(), "origin1".into()),
            ("edge22".into(), "edge21".into())
        ]
    );

    let list =
        e.c.routing
            .list_streams(v1::ListStreamsRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(list.streams.len(), 1);
}

async fn contention_elects_one_regional_origin(mut e: Env) {
    let mut leases = vec![(
        "main".to_owned(),
        e.c.register("main", "eu").await.unwrap().lease_id,
    )];
    let nodes: Vec<String> = (0..20).map(|i| format!("us-{i}")).collect();
    for n in &nodes {
        leases.push((n.clone(), e.c.register(n, "us").await.unwrap().lease_id));
    }
    let _keeper = keep_alive(e.c.clone(), leases);
    // Each racing node has its own connection, like real nodes.
    let mut clients = Vec::new();
    for _ in &nodes {
        clients.push(e.cp.clients().await.unwrap());
    }
    for round in 0..100 {
        let stream = format!("race-{round}");
        e.c.publish(&stream, "main").await.unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(nodes.len()));
        let mut tasks = Vec::new();
        for (n, c) in nodes.iter().zip(&clients) {
            let (mut c, n, s, b) = (c.clone(), n.clone(), stream.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                (n.clone(), c.resolve(&s, "us", &n).await)
            }));
        }
        let mut origins = Vec::new();
        let mut pulls = BTreeSet::new();
        for t in tasks {
            let (n, r) = t.await.unwrap();
            let r = r.unwrap_or_else(|s| panic!("round {round}: {n}: {s}"));
            match role(&r) {
                v1::Role::RegionalOrigin => origins.push(n),
                v1::Role::Edge => {
                    pulls.insert(upstream(&r).to_owned());
                }
                other => panic!("round {round}: unexpected role {other:?}"),
            }
        }
        assert_eq!(
            origins.len(),
            1,
            "round {round}: regional origins {origins:?}"
        );
        assert_eq!(pulls.len(), 1, "round {round}: pulled from {pulls:?}");
        assert_eq!(pulls.first(), origins.first(), "round {round}");
    }
}

async fn liveness_removes_dead_node_and_its_records(mut e: Env) {
    let origin = e.c.register("o", "eu").await.unwrap();
    e.c.register("dies", "us").await.unwrap();
    e.c.register("edge", "us").await.unwrap();
    e.c.publish("s", "o").await.unwrap();
    let r = e.c.resolve("s", "us", "dies").await.unwrap();
    assert_eq!(role(&r), v1::Role::RegionalOrigin);
    e.c.resolve("s", "us", "edge").await.unwrap();

    let watch = v1::WatchStreamRequest {
        stream: "s".into(),
        region: "us".into(),
    };
    let mut events = e.c.routing.watch_stream(watch).await.unwrap().into_inner();
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(first.regional.unwrap().node_id, "dies");

    // Keep the others alive; "dies" stops sending keep-alives now.
    let keeper = {
        let mut c = e.c.clone();
        let leases = [("o", origin.lease_id)];
        let edge_lease = c
            .nodes
            .get_node(v1::GetNodeRequest {
                node_id: "edge".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .lease_id;
        tokio::spawn(async move {
            loop {
                for (n, l) in leases.iter().copied().chain([("edge", edge_lease)]) {
                    let req = v1::KeepAliveRequest {
                        node_id: n.into(),
                        lease_id: l,
                        load: None,
                    };
                    let _ = c.nodes.keep_alive(req).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = tokio::time::Instant::now();
    let told = tokio::time::timeout(TTL + Duration::from_secs(1), async {
        while let Some(t) = events.message().await.unwrap() {
            if t.regional.is_none() {
                return t;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("watcher told within TTL + 1 s");
    assert!(told.live);
    let gone = started.elapsed();
    let err =
        e.c.nodes
            .get_node(v1::GetNodeRequest {
                node_id: "dies".into(),
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let tree =
        e.c.routing
            .get_stream(v1::GetStreamRequest { stream: "s".into() })
            .await;
    let tree = tree.unwrap().into_inner();
    assert!(
        tree.regional.is_empty(),
        "zombie regional origin: {:?}",
        tree.regional
    );
    assert!(tree.subscribers.iter().all(|s| s.node_id != "dies"));
    assert!(gone <= TTL + Duration::from_secs(1), "took {gone:?}");
    keeper.abort();
}

async fn second_replica_sees_claims(mut e: Env) {
    let other = ControlPlane::start(&e.store, TTL).await.unwrap();
    let mut c2 = other.clients().await.unwrap();
    e.c.register("o", "eu").await.unwrap();
    c2.register("u1", "us").await.unwrap();
    e.c.register("u2", "us").await.unwrap();
    // Published through replica 1, resolved at once through replica 2.
    e.c.publish("s", "o").await.unwrap();
    let r = c2.resolve("s", "us", "u1").await.unwrap();
    assert_eq!(role(&r), v1::Role::RegionalOrigin);
    // And the claim made through replica 2 is respected by replica 1.
    let r = e.c.resolve("s", "us", "u2").await.unwrap();
    assert_eq!((role(&r), upstream(&r)), (v1::Role::Edge, "u1"));
    // Publishing the same stream through replica 2 from another node is refused.
    c2.register("o2", "eu").await.unwrap();
    assert_eq!(
        c2.publish("s", "o2").await.unwrap_err().code(),
        Code::AlreadyExists
    );
    other.stop().await.unwrap();
}

async fn bad_input_is_invalid_argument(mut e: Env) {
    e.c.register("n", "eu").await.unwrap();
    let long = "x".repeat(129);
    let bad_names = [
        "",
        "a/b",
        "..",
        "a b",
        "ü",
        "a\u{0}b",
        long.as_str(),
        "%2e%2e",
    ];
    for bad in bad_names {
        let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
            (
                "resolve stream",
                e.c.resolve(bad, "eu", "n").await.map(|_| ()),
            ),
            (
                "resolve region",
                e.c.resolve("s", bad, "n").await.map(|_| ()),
            ),
            (
                "resolve node",
                e.c.resolve("s", "eu", bad).await.map(|_| ()),
            ),
            ("publish stream", e.c.publish(bad, "n").await.map(|_| ())),
            (
                "register id",
                e.c.register(bad, "eu").await.map(|_| ()).map_err(to_status),
            ),
            (
                "register region",
                e.c.register("m", bad).await.map(|_| ()).map_err(to_status),
            ),
            (
                "get stream",
                e.c.routing
                    .get_stream(v1::GetStreamRequest { stream: bad.into() })
                    .await
                    .map(|_| ()),
            ),
            (
                "place",
                e.c.placement
                    .place(v1::PlaceRequest {
                        region: bad.into(),
                        stream: "s".into(),
                        purpose: v1::Purpose::Play as i32,
                        exclude_node_id: String::new(),
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "watch",
                e.c.routing
                    .watch_stream(v1::WatchStreamRequest {
                        stream: bad.into(),
                        region: "eu".into(),
                    })
                    .await
                    .map(|_| ()),
            ),
        ];
        for (what, r) in cases {
            let err = r.expect_err(what);
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{what} {bad:?}: {}",
                err.message()
            );
            assert!(
                err.message().contains("allowed"),
                "{what}: {}",
                err.message()
            );
        }
    }
    // Fields other than names.
    let reg = |relay: &str, url: &str| v1::RegisterRequest {
        node: Some(v1::NodeInfo {
            id: "m".into(),
            region: "eu".into(),
            relay_addr: relay.into(),
            http_url: url.into(),
            capacity: 0,
            version: String::new(),
        }),
    };
    for req in [
        reg("", "http://x"),
        reg("127.0.0.1", "http://x"),
        reg("127.0.0.1:0", "http://x"),
        reg("127.0.0.1:99999", "http://x"),
        reg("127.0.0.1:1", "ftp://x"),
        reg("127.0.0.1:1", "http://a b"),
        reg("127.0.0.1:1", ""),
        v1::RegisterRequest { node: None },
    ] {
        let err = e.c.nodes.register(req.clone()).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{req:?}: {}",
            err.message()
        );
    }
    // Region must match the node's own.
    let err = e.c.resolve("s", "us", "n").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Unknown purpose.
    let err =
        e.c.placement
            .place(v1::PlaceRequest {
                region: "eu".into(),
                stream: "s".into(),
                purpose: 99,
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

fn to_status(e: anyhow::Error) -> tonic::Status {
    e.downcast::<tonic::Status>()
        .unwrap_or_else(|e| tonic::Status::internal(e.to_string()))
}

async fn unreachable_report_fails_over(mut e: Env) {
    for (n, r) in [("o", "eu"), ("a", "us"), ("b", "us"), ("c", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    e.c.publish("s", "o").await.unwrap();
    let ra = e.c.resolve("s", "us", "a").await.unwrap();
    assert_eq!(role(&ra), v1::Role::RegionalOrigin);
    let rb = e.c.resolve("s", "us", "b").await.unwrap();
    assert_eq!(upstream(&rb), "a");
    // A report about an old epoch changes nothing.
    let stale = v1::ResolveRequest {
        stream: "s".into(),
        region: "us".into(),
        node_id: "c".into(),
        unreachable: Some(v1::Upstream {
            node_id: "a".into(),
            epoch: ra.epoch - 1,
            ..Default::default()
        }),
    };
    let rc = e.c.routing.resolve(stale).await.unwrap().into_inner();
    assert_eq!((role(&rc), upstream(&rc)), (v1::Role::Edge, "a"));
    // b reports a unreachable at its current epoch: b takes over, with a new epoch.
    let report = v1::ResolveRequest {
        stream: "s".into(),
        region: "us".into(),
        node_id: "b".into(),
        unreachable: rb.upstream.clone(),
    };
    let rb2 =
        e.c.routing
            .resolve(report.clone())
            .await
            .unwrap()
            .into_inner();
    assert_eq!(role(&rb2), v1::Role::RegionalOrigin);
    assert!(rb2.epoch > ra.epoch);
    // The same (late) report from c does not depose b.
    let mut late = report;
    late.node_id = "c".into();
    let rc2 = e.c.routing.resolve(late).await.unwrap().into_inner();
    assert_eq!((role(&rc2), upstream(&rc2)), (v1::Role::Edge, "b"));
    // a learns it is no longer the regional origin.
    let ra2 = e.c.resolve("s", "us", "a").await.unwrap();
    assert_eq!((role(&ra2), upstream(&ra2)), (v1::Role::Edge, "b"));
}

async fn next(ev: &mut tonic::Streaming<v1::StreamTopology>) -> v1::StreamTopology {
    tokio::time::timeout(Duration::from_secs(5), ev.message())
        .await
        .expect("event")
        .unwrap()
        .unwrap()
}

async fn republish_replaces_stale_regional_origin(mut e: Env) {
    for (n, r) in [("o1", "eu"), ("o2", "eu"), ("a", "us"), ("b", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    let epoch = e.c.publish("s", "o1").await.unwrap().origin.unwrap().epoch;
    e.c.resolve("s", "us", "a").await.unwrap();
    e.c.unpublish("s", "o1", epoch).await.unwrap();
    let tree =
        e.c.routing
            .get_stream(v1::GetStreamRequest { stream: "s".into() })
            .await;
    assert_eq!(tree.unwrap_err().code(), Code::NotFound);
    e.c.publish("s", "o2").await.unwrap();
    let rb = e.c.resolve("s", "us", "b").await.unwrap();
    assert_eq!((role(&rb), upstream(&rb)), (v1::Role::RegionalOrigin, "o2"));
}

async fn watch_reports_topology_changes(mut e: Env) {
    for (n, r) in [("o", "eu"), ("a", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    let watch = v1::WatchStreamRequest {
        stream: "w".into(),
        region: "us".into(),
    };
    let mut events = e.c.routing.watch_stream(watch).await.unwrap().into_inner();
    assert!(!next(&mut events).await.live);
    let epoch = e.c.publish("w", "o").await.unwrap().origin.unwrap().epoch;
    let t = next(&mut events).await;
    assert!(t.live && t.regional.is_none());
    assert_eq!(t.main.unwrap().node_id, "o");
    e.c.resolve("w", "us", "a").await.unwrap();
    let t = next(&mut events).await;
    assert_eq!(t.regional.unwrap().node_id, "a");
    e.c.unpublish("w", "o", epoch).await.unwrap();
    let t = next(&mut events).await;
    assert!(!t.live && t.regional.is_none());
}

async fn placement_picks_least_loaded(mut e: Env) {
    let mut leases = Vec::new();
    for n in ["p1", "p2", "p3"] {
        leases.push((n, e.c.register(n, "eu").await.unwrap().lease_id));
    }
    e.c.register("o", "us").await.unwrap();
    for ((n, lease), players) in leases.iter().zip([50, 10, 30]) {
        let load = v1::Load {
            players,
            ..Default::default()
        };
        let req = v1::KeepAliveRequest {
            node_id: n.to_string(),
            lease_id: *lease,
            load: Some(load),
        };
        e.c.nodes.keep_alive(req).await.unwrap();
    }
    let place = |stream: &str, purpose: v1::Purpose, exclude: &str| v1::PlaceRequest {
        region: "eu".into(),
        stream: stream.into(),
        purpose: purpose as i32,
        exclude_node_id: exclude.into(),
    };
    let chosen = eventually(Duration::from_secs(2), "loads applied", || {
        let mut c = e.c.clone();
        let req = place("s", v1::Purpose::Publish, "");
        async move {
            let r = c.placement.place(req).await.ok()?.into_inner();
            let id = r.node?.id;
            (id == "p2").then_some(id)
        }
    })
    .await;
    assert_eq!(chosen, "p2");
    let r =
        e.c.placement
            .place(place("s", v1::Purpose::Publish, "p2"))
            .await
            .unwrap();
    assert_eq!(r.into_inner().node.unwrap().id, "p3");
    // A player prefers a node that already carries the stream.
    e.c.publish("s", "o").await.unwrap();
    e.c.resolve("s", "eu", "p1").await.unwrap();
    let r =
        e.c.placement
            .place(place("s", v1::Purpose::Play, ""))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        (r.node.unwrap().id.as_str(), r.carries_stream),
        ("p1", true)
    );
    // Draining nodes get nothing; full nodes neither (capacity 100).
    e.c.nodes
        .drain(v1::DrainRequest {
            node_id: "p1".into(),
        })
        .await
        .unwrap();
    let full = v1::Load {
        players: 100,
        ..Default::default()
    };
    let req = v1::KeepAliveRequest {
        node_id: "p2".into(),
        lease_id: leases[1].1,
        load: Some(full),
    };
    e.c.nodes.keep_alive(req).await.unwrap();
    let r = eventually(Duration::from_secs(2), "p3 chosen", || {
        let mut c = e.c.clone();
        let req = place("s", v1::Purpose::Play, "");
        async move {
            let id = c.placement.place(req).await.ok()?.into_inner().node?.id;
            (id == "p3").then_some(id)
        }
    })
    .await;
    assert_eq!(r, "p3");
    let err =
        e.c.placement
            .place(place("s", v1::Purpose::Play, "p3"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

async fn release_drops_regional_claim(mut e: Env) {
    for (n, r) in [("o", "eu"), ("a", "us"), ("b", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    e.c.publish("s", "o").await.unwrap();
    assert_eq!(
        role(&e.c.resolve("s", "us", "a").await.unwrap()),
        v1::Role::RegionalOrigin
    );
    let rel = v1::ReleaseRequest {
        stream: "s".into(),
        node_id: "a".into(),
    };
    e.c.routing.release(rel).await.unwrap();
    assert_eq!(
        role(&e.c.resolve("s", "us", "b").await.unwrap()),
        v1::Role::RegionalOrigin
    );
    let tree =
        e.c.routing
            .get_stream(v1::GetStreamRequest { stream: "s".into() })
            .await;
    let tree = tree.unwrap().into_inner();
    assert_eq!(tree.regional.len(), 1);
    assert_eq!(tree.regional[0].node_id, "b");
    assert!(tree.subscribers.is_empty(), "{:?}", tree.subscribers);
}

async fn draining_node_never_becomes_origin(mut e: Env) {
    for (n, r) in [("o", "eu"), ("d", "us"), ("b", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    e.c.publish("s", "o").await.unwrap();
    e.c.nodes
        .drain(v1::DrainRequest {
            node_id: "d".into(),
        })
        .await
        .unwrap();
    let r = e.c.resolve("s", "us", "d").await.unwrap();
    assert_eq!((role(&r), upstream(&r)), (v1::Role::Edge, "o"));
    let r = e.c.resolve("s", "us", "b").await.unwrap();
    assert_eq!(role(&r), v1::Role::RegionalOrigin);
    let r = e.c.resolve("s", "us", "d").await.unwrap();
    assert_eq!((role(&r), upstream(&r)), (v1::Role::Edge, "b"));
}

/// An old session's cleanup (Unpublish naming the epoch its Publish returned)
/// arriving after the stream was published again must not end the new claim.
async fn unpublish_of_an_old_epoch_leaves_the_new_record(mut e: Env) {
    for (n, r) in [("o", "eu"), ("a", "us"), ("b", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    let old = e.c.publish("s", "o").await.unwrap().origin.unwrap().epoch;
    e.c.unpublish("s", "o", old).await.unwrap();
    // The publisher is back on the same node: a new claim, a new epoch.
    let new = e.c.publish("s", "o").await.unwrap().origin.unwrap().epoch;
    assert!(new > old, "{new} > {old}");
    let r = e.c.resolve("s", "us", "a").await.unwrap();
    assert_eq!(role(&r), v1::Role::RegionalOrigin);
    e.c.resolve("s", "us", "b").await.unwrap();
    let before =
        e.c.routing
            .get_stream(v1::GetStreamRequest { stream: "s".into() })
            .await
            .unwrap()
            .into_inner();
    // The old session's late cleanup: answered OK, and nothing changes.
    e.c.unpublish("s", "o", old).await.unwrap();
    // A second replica's read, so that no cache of the first one hides a delete.
    let cp2 = ControlPlane::start(&e.store, TTL).await.unwrap();
    let mut c2 = cp2.clients().await.unwrap();
    for c in [&mut e.c, &mut c2] {
        let tree = c
            .routing
            .get_stream(v1::GetStreamRequest { stream: "s".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(tree, before);
        assert_eq!(tree.main.as_ref().unwrap().epoch, new);
    }
    // Still routable: another node of the region pulls from the regional origin.
    e.c.register("c", "us").await.unwrap();
    let r = e.c.resolve("s", "us", "c").await.unwrap();
    assert_eq!((role(&r), upstream(&r)), (v1::Role::Edge, "a"));
    // The current epoch ends it.
    e.c.unpublish("s", "o", new).await.unwrap();
    let err = e.c.resolve("s", "us", "c").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    drop(cp2);
}

async fn keep_alive_says_draining(c: &mut Clients, node: &str, lease: i64) -> bool {
    let req = v1::KeepAliveRequest {
        node_id: node.into(),
        lease_id: lease,
        load: None,
    };
    c.nodes.keep_alive(req).await.unwrap().into_inner().draining
}

async fn place_publisher(c: &mut Clients, exclude: &str) -> Result<String, Code> {
    let req = v1::PlaceRequest {
        region: "eu".into(),
        stream: "s".into(),
        purpose: v1::Purpose::Publish as i32,
        exclude_node_id: exclude.into(),
    };
    match c.placement.place(req).await {
        Ok(r) => Ok(r.into_inner().node.map(|n| n.id).unwrap_or_default()),
        Err(s) => Err(s.code()),
    }
}

/// Drain reaches the node in its keep-alive answer; Undrain takes it back.
async fn drain_reaches_the_node_and_undrain_restores_it(mut e: Env) {
    let l1 = e.c.register("n1", "eu").await.unwrap().lease_id;
    e.c.register("n2", "eu").await.unwrap();
    assert!(!keep_alive_says_draining(&mut e.c, "n1", l1).await);
    assert_eq!(place_publisher(&mut e.c, "n2").await, Ok("n1".into()));

    let drain = |n: &str| v1::DrainRequest { node_id: n.into() };
    e.c.nodes.drain(drain("n1")).await.unwrap();
    e.c.nodes.drain(drain("n1")).await.unwrap(); // idempotent
    assert!(keep_alive_says_draining(&mut e.c, "n1", l1).await);
    assert_eq!(
        place_publisher(&mut e.c, "n2").await,
        Err(Code::Unavailable)
    );

    let undrain = |n: &str| v1::UndrainRequest { node_id: n.into() };
    e.c.nodes.undrain(undrain("n1")).await.unwrap();
    e.c.nodes.undrain(undrain("n1")).await.unwrap(); // idempotent
    assert!(!keep_alive_says_draining(&mut e.c, "n1", l1).await);
    let n1 =
        e.c.nodes
            .get_node(v1::GetNodeRequest {
                node_id: "n1".into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert!(!n1.draining);
    assert_eq!(place_publisher(&mut e.c, "n2").await, Ok("n1".into()));
    // An undrained node may become a regional origin again.
    e.c.register("o", "us").await.unwrap();
    e.c.publish("s", "o").await.unwrap();
    let r = e.c.resolve("s", "eu", "n1").await.unwrap();
    assert_eq!(role(&r), v1::Role::RegionalOrigin);

    let err = e.c.nodes.undrain(undrain("nobody")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = e.c.nodes.undrain(undrain("a/b")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
