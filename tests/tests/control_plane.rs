//! The control plane's behaviour suite, nodes: registration, liveness, unreachable reports
//! and draining. Every scenario runs twice: against a real etcd (started on free loopback
//! ports) and against the in-memory store. Streams are in `control_plane_streams.rs`, bad
//! input in `control_plane_input.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::Clients;
use strata_tests::wait::eventually;
use tonic::Code;

mod control_plane_common;
use control_plane_common::*;

both_stores!(
    node_lifecycle,
    liveness_removes_dead_node_and_its_records,
    unreachable_report_fails_over,
    draining_node_never_becomes_origin,
    drain_reaches_the_node_and_undrain_restores_it,
);

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
        stream_players: Vec::new(),
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
