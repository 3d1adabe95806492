//! The control plane's behaviour suite, bad input: every RPC refuses malformed requests with
//! `InvalidArgument`. Every scenario runs twice: against a real etcd (started on free
//! loopback ports) and against the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_proto::v1;
use tonic::Code;

mod control_plane_common;
use control_plane_common::*;

both_stores!(bad_input_is_invalid_argument,);

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
