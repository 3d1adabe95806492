//! An operator's Drain and Undrain as the node sees them, and one stream
//! published twice at once on one node. Real etcd, control plane, nodes,
//! WebRTC and QUIC; loopback-only namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::cluster::{Cluster, TestNode};
use strata_tests::http::{self, metric_sum};
use strata_tests::media::{PreparedPublisher, TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;
use strata_tests::wait::eventually;

fn init() {
    strata_tests::init_test_tracing("warn,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error");
}

async fn healthz(node: &TestNode) -> u16 {
    http::get(&format!("{}/healthz", node.http))
        .await
        .map(|r| r.status)
        .unwrap_or(0)
}

/// A WHIP/WHEP POST straight to a node, not following a redirect. The body
/// passes the node's cheap checks; a node that takes sessions would go on to
/// negotiate it (and refuse it), a draining one answers before that.
async fn raw_post(node: &TestNode, kind: &str, stream: &str) -> http::Response {
    let url = format!("{}/{kind}/{stream}", node.http);
    let headers = [("Content-Type", "application/sdp")];
    http::request("POST", &url, &headers, b"v=0\r\n")
        .await
        .unwrap()
}

async fn regional_of(c: &Cluster, stream: &str, region: &str) -> Option<String> {
    let tree = c.tree(stream).await.ok()?;
    tree.regional
        .iter()
        .find(|r| r.region == region)
        .map(|r| r.node_id.clone())
}

async fn video_packets_grow(p: &TestPlayer, by: u64) {
    let from = p.stats().video_packets;
    p.wait_for(Duration::from_secs(10), "more media", |s| {
        s.video_packets >= from + by
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_operator_drain_reaches_the_node_and_undrain_brings_it_back() {
    require_netns("netns_operator_drain_reaches_the_node_and_undrain_brings_it_back");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let o1 = c.node("o1", "ra").await.unwrap();
    let b1 = c.node("b1", "rb").await.unwrap();
    let b2 = c.node("b2", "rb").await.unwrap();
    let publisher = TestPublisher::start(&o1.http, "s", vp8_clip().unwrap())
        .await
        .unwrap();
    // b1 becomes rb's regional origin; b2 pulls from it.
    let on_b1 = TestPlayer::start(&b1.http, "s").await.unwrap();
    assert_eq!(on_b1.node, "b1");
    video_packets_grow(&on_b1, 100).await;
    let on_b2 = TestPlayer::start(&b2.http, "s").await.unwrap();
    assert_eq!(on_b2.node, "b2");
    video_packets_grow(&on_b2, 100).await;
    assert_eq!(regional_of(&c, "s", "rb").await.as_deref(), Some("b1"));

    // The operator drains b1, and o1 (the only node of ra, with the publisher).
    let mut cp = c.clients.clone();
    for n in ["b1", "o1"] {
        let req = v1::DrainRequest { node_id: n.into() };
        cp.nodes.drain(req).await.unwrap();
    }
    // The nodes learn it from their next keep-alive answer.
    for n in [&b1, &o1] {
        eventually(Duration::from_secs(5), "the node to drain", || async {
            (healthz(n).await == 503).then_some(())
        })
        .await;
        let m = n.metrics().await.unwrap();
        assert_eq!(metric_sum(&m, "strata_node_draining", &[]), 1.0);
    }
    // b1 handed its regional origin over: b2 holds it, b1 pulls from the main
    // origin and holds no origin record.
    eventually(Duration::from_secs(10), "b2 to take rb over", || async {
        (regional_of(&c, "s", "rb").await.as_deref() == Some("b2")).then_some(())
    })
    .await;
    let tree = c.tree("s").await.unwrap();
    assert!(tree.regional.iter().all(|r| r.node_id != "b1"), "{tree:?}");
    assert_eq!(tree.main.as_ref().unwrap().node_id, "o1");

    // New sessions straight to b1: 307 to the node placement picks.
    for kind in ["whep", "whip"] {
        let r = raw_post(&b1, kind, if kind == "whep" { "s" } else { "t" }).await;
        assert_eq!(r.status, 307, "{kind}: {} {}", r.status, r.text());
        let to = r.header("location").unwrap();
        assert!(to.starts_with(&format!("{}/{kind}/", b2.http)), "{to}");
    }
    // The redirect keeps what the request asked for: a pinned layer, the backup role.
    for (kind, query) in [("whep", "s?layer=low"), ("whip", "t?role=backup")] {
        let r = raw_post(&b1, kind, query).await;
        assert_eq!(r.status, 307, "{kind}: {} {}", r.status, r.text());
        let to = r.header("location").unwrap();
        assert!(
            to.starts_with(&format!("{}/{kind}/{query}", b2.http)),
            "{to}"
        );
    }
    // o1 has no other node in its region: 503 + Retry-After.
    for kind in ["whep", "whip"] {
        let r = raw_post(&o1, kind, "u").await;
        assert_eq!(r.status, 503, "{kind}: {} {}", r.status, r.text());
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    }
    // Existing sessions stay: the publisher on o1, players on b1 and b2.
    video_packets_grow(&on_b1, 100).await;
    video_packets_grow(&on_b2, 100).await;
    let st = on_b1.stats();
    assert_eq!(st.ssrc_changes, 0, "{st:?}");

    // Undrain: b1 takes sessions again and placement uses it.
    for n in ["b1", "o1"] {
        let req = v1::UndrainRequest { node_id: n.into() };
        cp.nodes.undrain(req).await.unwrap();
    }
    for n in [&b1, &o1] {
        eventually(
            Duration::from_secs(5),
            "the node to take sessions",
            || async { (healthz(n).await == 200).then_some(()) },
        )
        .await;
    }
    let again = TestPlayer::start(&b1.http, "s").await.unwrap();
    assert_eq!(again.node, "b1", "b1 answered 201 itself");
    video_packets_grow(&again, 100).await;
    let place = v1::PlaceRequest {
        region: "rb".into(),
        stream: "s".into(),
        purpose: v1::Purpose::Play as i32,
        exclude_node_id: "b2".into(),
    };
    let placed = cp.placement.place(place).await.unwrap().into_inner();
    assert_eq!(placed.node.unwrap().id, "b1");
    let r = raw_post(&o1, "whip", "u").await;
    assert_ne!(r.status, 307);
    assert_ne!(r.status, 503);

    for p in [on_b1, on_b2, again] {
        p.stop().await.unwrap();
    }
    publisher.stop().await.unwrap();
}

/// Two WHIP POSTs for one stream on one node at once: one 201, one 409, and
/// the loser leaves the winner's claim alone. Then the publisher reconnects
/// to the same node right after its DELETE: the old session's cleanup must
/// not end the new claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_concurrent_whip_posts_for_one_stream_on_one_node() {
    require_netns("netns_concurrent_whip_posts_for_one_stream_on_one_node");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let n1 = c.node("n1", "ra").await.unwrap();
    let n2 = c.node("n2", "rb").await.unwrap();
    let clip = vp8_clip().unwrap();
    for round in 0..3 {
        let stream = format!("dup{round}");
        let a = PreparedPublisher::new(clip.clone()).await.unwrap();
        let b = PreparedPublisher::new(clip.clone()).await.unwrap();
        let (ra, rb) = tokio::join!(a.post(&n1.http, &stream), b.post(&n1.http, &stream));
        let (winner, loser) = match (ra.unwrap(), rb.unwrap()) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (Ok(_), Ok(_)) => panic!("round {round}: both POSTs got 201"),
            (Err(x), Err(y)) => panic!("round {round}: {} and {}", x.status, y.status),
        };
        assert_eq!(loser.status, 409, "round {round}: {}", loser.text());
        assert_eq!(winner.node, "n1");
        // The loser's answer came after anything it did: the claim is intact.
        let tree = c.tree(&stream).await.unwrap();
        assert_eq!(tree.main.as_ref().unwrap().node_id, "n1");
        // Routable: a node of another region resolves it and plays it.
        let mut cp = c.clients.clone();
        let r = cp.resolve(&stream, "rb", "n2").await.unwrap();
        assert_eq!(r.upstream.unwrap().node_id, "n1");
        let player = TestPlayer::start(&n2.http, &stream).await.unwrap();
        video_packets_grow(&player, 100).await;

        // The publisher leaves and comes straight back to the same node.
        let old_epoch = tree.main.as_ref().unwrap().epoch;
        winner.stop().await.unwrap();
        let back = eventually(Duration::from_secs(10), "the publisher back", || {
            let (clip, url, stream) = (clip.clone(), n1.http.clone(), stream.clone());
            async move {
                let p = PreparedPublisher::new(clip).await.unwrap();
                match p.post(&url, &stream).await.unwrap() {
                    Ok(p) => Some(p),
                    // The old session is still giving its claim back.
                    Err(r) if r.status == 409 => None,
                    Err(r) => panic!("{} {}", r.status, r.text()),
                }
            }
        })
        .await;
        // Media through n2 again shows the new claim is live and routed; by
        // then any cleanup of the old session has long run.
        video_packets_grow(&player, 100).await;
        let again = TestPlayer::start(&n2.http, &stream).await.unwrap();
        video_packets_grow(&again, 50).await;
        let tree = c.tree(&stream).await.unwrap();
        let main = tree.main.unwrap();
        assert_eq!(main.node_id, "n1");
        assert!(main.epoch > old_epoch, "{} > {old_epoch}", main.epoch);
        for p in [player, again] {
            p.stop().await.unwrap();
        }
        back.stop().await.unwrap();
    }
}
