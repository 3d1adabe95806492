//! Redundant ingest in the control plane: the standby record, the guarded switch to it and
//! the refusals, against a real etcd and against the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::Clients;
use strata_tests::wait::eventually;
use tonic::Code;

mod control_plane_common;
use control_plane_common::{Env, both_stores, keep_alive};

both_stores!(
    standby_record_and_refusals,
    switch_is_guarded_by_both_epochs,
    a_standby_outlives_its_stream,
    operators_switch_to_the_standby
);

async fn standby(c: &mut Clients, node: &str) -> Result<v1::StandbyOrigin, tonic::Status> {
    let req = v1::StandbyRequest {
        stream: "s".into(),
        node_id: node.into(),
    };
    Ok(c.routing.standby(req).await?.into_inner().standby.unwrap())
}

async fn switch(
    c: &mut Clients,
    node: &str,
    standby_epoch: i64,
    main_epoch: i64,
) -> Result<v1::MainOrigin, tonic::Status> {
    let req = v1::SwitchToStandbyRequest {
        stream: "s".into(),
        node_id: node.into(),
        standby_epoch,
        main_epoch,
        reason: "silent".into(),
    };
    Ok(c.routing
        .switch_to_standby(req)
        .await?
        .into_inner()
        .origin
        .unwrap())
}

/// Registers nodes and keeps their leases alive.
async fn nodes(e: &mut Env, list: &[(&str, &str)]) -> control_plane_common::AbortOnDrop {
    let mut leases = Vec::new();
    for (n, r) in list {
        let lease = e.c.register(n, r).await.unwrap().lease_id;
        leases.push(((*n).to_owned(), lease));
    }
    keep_alive(e.cp.clients().await.unwrap(), leases)
}

/// The tree as `GetStream` shows it once `cond` holds (the answer comes from the cache).
async fn tree_when(c: &Clients, cond: impl Fn(&v1::StreamTree) -> bool) -> v1::StreamTree {
    eventually(Duration::from_secs(5), "GetStream", || {
        let mut routing = c.routing.clone();
        let cond = &cond;
        async move {
            let t = routing
                .get_stream(v1::GetStreamRequest { stream: "s".into() })
                .await
                .ok()?
                .into_inner();
            cond(&t).then_some(t)
        }
    })
    .await
}

/// One standby per stream, never on the main origin's node; idempotent for its holder; shown
/// by GetStream; released only at its epoch; bad switch requests refused.
async fn standby_record_and_refusals(mut e: Env) {
    let _alive = nodes(&mut e, &[("o", "eu"), ("b", "us"), ("x", "us")]).await;
    e.c.publish("s", "o").await.unwrap();
    let err = standby(&mut e.c, "o").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let b = standby(&mut e.c, "b").await.unwrap();
    assert_eq!((b.node_id.as_str(), b.region.as_str()), ("b", "us"));
    assert_eq!(standby(&mut e.c, "b").await.unwrap().epoch, b.epoch);
    let err = standby(&mut e.c, "x").await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    let err = standby(&mut e.c, "unknown").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let t = tree_when(&e.c, |t| t.standby.is_some()).await;
    assert_eq!(t.standby.unwrap().node_id, "b");
    assert_eq!(t.main.unwrap().node_id, "o");

    // Only the holder may switch, with its own epoch, for a known reason.
    let main = t_main_epoch(&mut e.c).await;
    let err = switch(&mut e.c, "x", b.epoch, main).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = switch(&mut e.c, "b", b.epoch + 1, main).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let mut bad = v1::SwitchToStandbyRequest {
        stream: "s".into(),
        node_id: "b".into(),
        standby_epoch: b.epoch,
        main_epoch: main,
        reason: "because".into(),
    };
    let err =
        e.c.routing
            .switch_to_standby(bad.clone())
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    bad.reason = "silent".into();
    bad.standby_epoch = 0;
    let err = e.c.routing.switch_to_standby(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // A release naming another epoch leaves the record; its own epoch ends it.
    let release = |epoch| v1::ReleaseStandbyRequest {
        stream: "s".into(),
        node_id: "b".into(),
        epoch,
    };
    e.c.routing
        .release_standby(release(b.epoch - 1))
        .await
        .unwrap();
    assert_eq!(
        standby(&mut e.c, "x").await.unwrap_err().code(),
        Code::AlreadyExists
    );
    e.c.routing.release_standby(release(b.epoch)).await.unwrap();
    assert_eq!(standby(&mut e.c, "x").await.unwrap().node_id, "x");
}

async fn t_main_epoch(c: &mut Clients) -> i64 {
    tree_when(c, |t| t.main.is_some()).await.main.unwrap().epoch
}

/// The switch needs the main record at the epoch the standby saw: a stale one changes nothing.
/// Once switched, the standby record is gone, the new main origin's region has no regional
/// origin, the old holder can neither unpublish nor switch back by itself, and it may become
/// the standby (the primary returning).
async fn switch_is_guarded_by_both_epochs(mut e: Env) {
    let _alive = nodes(&mut e, &[("o", "eu"), ("b", "us"), ("a", "us")]).await;
    let e1 = e.c.publish("s", "o").await.unwrap().origin.unwrap().epoch;
    let b = standby(&mut e.c, "b").await.unwrap();
    e.c.resolve("s", "us", "b").await.unwrap();
    e.c.resolve("s", "us", "a").await.unwrap();

    let err = switch(&mut e.c, "b", b.epoch, e1 - 1).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = switch(&mut e.c, "b", b.epoch, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let won = switch(&mut e.c, "b", b.epoch, e1).await.unwrap();
    assert_eq!(won.node_id, "b");
    assert!(won.epoch > e1);
    // The same switch again: the standby record went with the first.
    let err = switch(&mut e.c, "b", b.epoch, e1).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    let t = tree_when(&e.c, |t| t.main.as_ref().is_some_and(|m| m.node_id == "b")).await;
    assert_eq!(t.standby, None, "{t:?}");
    assert!(t.regional.iter().all(|r| r.region != "us"), "{t:?}");
    assert!(t.subscribers.iter().all(|s| s.node_id != "b"), "{t:?}");
    let err = e.c.unpublish("s", "o", e1).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(
        e.c.publish("s", "o").await.unwrap_err().code(),
        Code::AlreadyExists
    );
    // The old primary's node comes back as the standby.
    let o = standby(&mut e.c, "o").await.unwrap();
    let t = tree_when(&e.c, |t| t.standby.is_some()).await;
    assert_eq!(t.standby.unwrap().epoch, o.epoch);
    assert_eq!(t.main.unwrap().node_id, "b");
}

/// The sweep of a stream whose main origin went leaves the standby, which then takes the
/// stream over with `main_epoch` 0.
async fn a_standby_outlives_its_stream(mut e: Env) {
    let _alive = nodes(&mut e, &[("o", "eu"), ("b", "us")]).await;
    let e1 = e.c.publish("s", "o").await.unwrap().origin.unwrap().epoch;
    let b = standby(&mut e.c, "b").await.unwrap();
    e.c.resolve("s", "us", "b").await.unwrap();
    e.c.unpublish("s", "o", e1).await.unwrap();
    eventually(Duration::from_secs(5), "stream ended", || {
        let mut routing = e.c.routing.clone();
        async move {
            let r = routing
                .get_stream(v1::GetStreamRequest { stream: "s".into() })
                .await;
            (r.err()?.code() == Code::NotFound).then_some(())
        }
    })
    .await;
    let won = switch(&mut e.c, "b", b.epoch, 0).await.unwrap();
    assert_eq!(won.node_id, "b");
    assert!(won.epoch > b.epoch);
}

/// `SwitchPublisher`: the operator's switch to whoever is the standby, and back.
async fn operators_switch_to_the_standby(mut e: Env) {
    let _alive = nodes(&mut e, &[("o", "eu"), ("b", "us")]).await;
    let op = |s: &str| v1::SwitchPublisherRequest { stream: s.into() };
    let err = e.c.routing.switch_publisher(op("s")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let e1 = e.c.publish("s", "o").await.unwrap().origin.unwrap().epoch;
    let err = e.c.routing.switch_publisher(op("s")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "no standby yet: {err}");
    standby(&mut e.c, "b").await.unwrap();
    let to_b =
        e.c.routing
            .switch_publisher(op("s"))
            .await
            .unwrap()
            .into_inner();
    let to_b = to_b.origin.unwrap();
    assert_eq!(to_b.node_id, "b");
    assert!(to_b.epoch > e1);
    // The old primary's node, standby now, is switched back to.
    standby(&mut e.c, "o").await.unwrap();
    let back =
        e.c.routing
            .switch_publisher(op("s"))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(back.origin.unwrap().node_id, "o");
    let t = tree_when(&e.c, |t| t.main.as_ref().is_some_and(|m| m.node_id == "o")).await;
    assert_eq!(t.standby, None);
    let err =
        e.c.routing
            .switch_publisher(op("bad/name"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}
