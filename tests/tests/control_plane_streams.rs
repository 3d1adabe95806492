//! The control plane's behaviour suite, streams: claims, the distribution tree, contention,
//! replicas, placement, release and watching. Every scenario runs twice: against a real etcd
//! (started on free loopback ports) and against the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::ControlPlane;
use strata_tests::wait::eventually;
use tonic::Code;

mod control_plane_common;
use control_plane_common::*;

both_stores!(
    publish_claims_main_origin,
    resolve_builds_the_tree,
    contention_elects_one_regional_origin,
    second_replica_sees_claims,
    republish_replaces_stale_regional_origin,
    watch_reports_topology_changes,
    placement_picks_least_loaded,
    release_drops_regional_claim,
    unpublish_of_an_old_epoch_leaves_the_new_record,
);

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
