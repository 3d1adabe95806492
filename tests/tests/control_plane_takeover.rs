//! Taking a dead main origin over (`PublishRequest.unreachable`), against a
//! real etcd and against the in-memory store, like the behaviour suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::Clients;
use tonic::Code;

mod control_plane_common;
use control_plane_common::{Env, both_stores};

both_stores!(
    takeover_needs_a_report_at_the_current_epoch,
    takeover_rebuilds_the_tree
);

fn dead(node: &str, epoch: i64) -> Option<v1::Upstream> {
    Some(v1::Upstream {
        node_id: node.into(),
        epoch,
        ..Default::default()
    })
}

fn role(r: &v1::ResolveResponse) -> (v1::Role, String) {
    (
        v1::Role::try_from(r.role).unwrap_or(v1::Role::Unspecified),
        r.upstream
            .as_ref()
            .map(|u| u.node_id.clone())
            .unwrap_or_default(),
    )
}

async fn tree(c: &mut Clients) -> v1::StreamTree {
    c.routing
        .get_stream(v1::GetStreamRequest { stream: "s".into() })
        .await
        .unwrap()
        .into_inner()
}

/// Without a report, or with one about another node or an older epoch, a live
/// holder keeps the stream; a report at its current epoch takes it over once.
async fn takeover_needs_a_report_at_the_current_epoch(mut e: Env) {
    for (n, r) in [("o", "eu"), ("n", "us"), ("m", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    let e1 = e.c.publish("s", "o").await.unwrap().origin.unwrap().epoch;
    for bad in [None, dead("o", e1 - 1), dead("m", e1)] {
        let err = e.c.publish_over("s", "n", bad.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{bad:?}");
    }
    let won = e.c.publish_over("s", "n", dead("o", e1)).await.unwrap();
    let origin = won.origin.unwrap();
    assert_eq!(origin.node_id, "n");
    assert!(origin.epoch > e1);
    // The same report, late (another node also found o dead): the record
    // has moved on, so it is refused like any publish of a live stream.
    let late = e.c.publish_over("s", "m", dead("o", e1)).await.unwrap_err();
    assert_eq!(late.code(), Code::AlreadyExists);
    // The new holder's publish is idempotent, report or not.
    let again = e.c.publish_over("s", "n", dead("o", e1)).await.unwrap();
    assert_eq!(again.origin.unwrap().epoch, origin.epoch);
    // The deposed holder's cleanup names its own epoch: nothing is deleted.
    let err = e.c.unpublish("s", "o", e1).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(tree(&mut e.c).await.main.unwrap().node_id, "n");
}

/// After a takeover the new main origin's region has no regional origin, the
/// new holder is no subscriber, the other regions re-elect under the new
/// epoch, and a topology watch reports the move.
async fn takeover_rebuilds_the_tree(mut e: Env) {
    for (n, r) in [("o", "eu"), ("e", "eu"), ("a", "us"), ("n", "us")] {
        e.c.register(n, r).await.unwrap();
    }
    let e1 = e.c.publish("s", "o").await.unwrap().origin.unwrap().epoch;
    assert_eq!(
        role(&e.c.resolve("s", "us", "a").await.unwrap()),
        (v1::Role::RegionalOrigin, "o".into())
    );
    assert_eq!(
        role(&e.c.resolve("s", "us", "n").await.unwrap()),
        (v1::Role::Edge, "a".into())
    );
    assert_eq!(
        role(&e.c.resolve("s", "eu", "e").await.unwrap()),
        (v1::Role::Edge, "o".into())
    );
    let watch = v1::WatchStreamRequest {
        stream: "s".into(),
        region: "eu".into(),
    };
    let mut events = e.c.routing.watch_stream(watch).await.unwrap().into_inner();
    let first = events.message().await.unwrap().unwrap();
    assert_eq!(first.main.unwrap().node_id, "o");

    let e2 = e.c.publish_over("s", "n", dead("o", e1)).await.unwrap();
    let e2 = e2.origin.unwrap().epoch;
    let t = tree(&mut e.c).await;
    assert_eq!(t.main.as_ref().unwrap().node_id, "n");
    assert!(
        t.regional.iter().all(|r| r.region != "us"),
        "a regional origin in the main origin's region: {t:?}"
    );
    assert!(t.subscribers.iter().all(|s| s.node_id != "n"), "{t:?}");

    let moved = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("a topology event")
        .unwrap()
        .unwrap();
    assert_eq!(moved.main.unwrap().epoch, e2);
    // eu has no main origin now: the first of its nodes to resolve claims it.
    assert_eq!(
        role(&e.c.resolve("s", "eu", "e").await.unwrap()),
        (v1::Role::RegionalOrigin, "n".into())
    );
    assert_eq!(
        role(&e.c.resolve("s", "us", "a").await.unwrap()),
        (v1::Role::Edge, "n".into())
    );
}
