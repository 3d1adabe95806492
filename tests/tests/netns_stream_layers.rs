//! Players per region and simulcast layer on the control plane: a three-layer WHIP publisher
//! in one region, players of another region pinned to two layers; the counts reach the
//! control plane in the nodes' load reports and show in `GetStream`, `ListStreams` and the
//! dashboard's `/api/v1/topology`. Real etcd, nodes, WebRTC and QUIC, in the loopback-only
//! network namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use strata_proto::v1;
use strata_rtc::client::{ClientConfig, SimulcastPublisher};
use strata_rtc::fixture::ClipPacer;
use strata_tests::bench::fanout::simulcast::fixture_layers;
use strata_tests::cluster::Cluster;
use strata_tests::control::Options;
use strata_tests::http;
use strata_tests::media::TestPlayer;
use strata_tests::ports::require_netns;
use strata_tests::wait::eventually;

const STREAM: &str = "layered";

/// (region, players, low, mid, high) of a tree's players.
fn counts(tree: &v1::StreamTree) -> Vec<(String, u32, u32, u32, u32)> {
    tree.players
        .iter()
        .map(|p| (p.region.clone(), p.players, p.low, p.mid, p.high))
        .collect()
}

/// Waits until `GetStream` shows `want` (the load reports ride on keep-alives, ~1 s).
async fn wait_counts(cluster: &Cluster, want: &[(String, u32, u32, u32, u32)]) {
    let what = format!("GetStream players {want:?}");
    eventually(Duration::from_secs(15), &what, || async {
        let got = counts(&cluster.tree(STREAM).await.ok()?);
        (got == want).then_some(())
    })
    .await
}

/// Publishes the committed fixture as three layers to `base/whip/STREAM`, until dropped.
async fn publish(base: &str) -> tokio::task::JoinHandle<()> {
    let (clip, tracks) = fixture_layers().unwrap();
    let publisher = SimulcastPublisher::new(&tracks, &ClientConfig::default())
        .await
        .unwrap();
    let offer = publisher.offer().await.unwrap();
    let resp = http::post_sdp(&format!("{base}/whip/{STREAM}"), &offer)
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    publisher.set_answer(&resp.text()).await.unwrap();
    publisher.connected(Duration::from_secs(15)).await.unwrap();
    let publisher = Arc::new(publisher);
    let p = Arc::clone(&publisher);
    tokio::spawn(async move { while p.keyframe_request().await.is_some() {} });
    tokio::spawn(async move {
        let mut pacer = ClipPacer::new(clip, None);
        while let Some(packet) = pacer.next().await {
            if publisher
                .send_packet(packet.track, &packet.rtp)
                .await
                .is_err()
            {
                break;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_players_per_layer_reach_the_control_plane() {
    require_netns("netns_players_per_layer_reach_the_control_plane");
    strata_tests::init_test_tracing("warn");
    let options = Options {
        http: true,
        ..Options::default()
    };
    let cluster = Cluster::start_with(Duration::from_secs(3), options)
        .await
        .unwrap();
    let a1 = cluster.node("a1", "ra").await.unwrap();
    let b1 = cluster.node("b1", "rb").await.unwrap();
    let feeder = publish(&a1.http).await;

    // Region rb: two players pinned low, one pinned high; each gets video of its layer.
    let mut players = Vec::new();
    for layer in ["low", "low", "high"] {
        let (p, _) = TestPlayer::start_with(&b1.http, STREAM, &format!("layer={layer}"), None)
            .await
            .unwrap();
        players.push(p);
    }
    for p in &players {
        p.wait_for(Duration::from_secs(15), "video", |s| s.video_packets >= 30)
            .await
            .unwrap();
    }

    // The counts arrive with the next keep-alives, per region and layer.
    let want = vec![("rb".to_owned(), 3, 2, 0, 1)];
    wait_counts(&cluster, &want).await;

    // ListStreams carries the same, and so does the dashboard's document.
    let mut c = cluster.clients.clone();
    let list = c
        .routing
        .list_streams(v1::ListStreamsRequest {})
        .await
        .unwrap()
        .into_inner();
    let listed = list
        .streams
        .iter()
        .find(|t| t.main.as_ref().is_some_and(|m| m.stream == STREAM))
        .expect("stream listed");
    assert_eq!(counts(listed), want);
    let url = format!("{}/api/v1/topology", cluster.cp.http_url().unwrap());
    let doc: Value = serde_json::from_slice(&http::get(&url).await.unwrap().body).unwrap();
    let stream = doc["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == STREAM)
        .expect("stream in the topology")
        .clone();
    let rb = &stream["players"][0];
    assert_eq!(
        (
            &rb["region"],
            &rb["players"],
            &rb["low"],
            &rb["mid"],
            &rb["high"]
        ),
        (
            &Value::from("rb"),
            &Value::from(3),
            &Value::from(2),
            &Value::from(0),
            &Value::from(1)
        ),
        "{stream}"
    );

    // The high player leaves: its layer's count goes (a change from 1 to 0 is material).
    players.pop().unwrap().stop().await.unwrap();
    wait_counts(&cluster, &[("rb".to_owned(), 2, 2, 0, 0)]).await;
    feeder.abort();
}
