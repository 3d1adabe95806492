//! The egress loops with real WebRTC on loopback: client publisher → engine → hub → egress
//! loops → client players. Run inside the loopback-only namespace (see `common::in_netns`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{STEP, in_netns};
use strata_media::TrackKind;
use strata_media::hub::{Hub, HubConfig, StreamHandle};
use strata_rtc::client::{ClientConfig, Player, PlayerOptions, Publisher};
use strata_rtc::fixture::{Clip, fixture_path};
use strata_rtc::{EgressPlayer, RtcConfig, RtcEngine};

/// A publisher sending the clip into a hub stream `s`, keyframe requests going back to it.
async fn published(engine: &RtcEngine, hub: &Hub, clip: &Arc<Clip>) -> StreamHandle {
    let publisher = Publisher::new(clip.tracks(), &ClientConfig::default())
        .await
        .expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let (mut ingest, answer) = engine.accept_publisher(&offer).await.expect("accept");
    publisher.set_answer(&answer).await.expect("answer");
    publisher.connected(STEP).await.expect("publisher connects");
    let mut source = hub
        .attach_source("s", ingest.catalog().clone())
        .expect("attach");
    let stream = source.stream();
    let publisher = Arc::new(publisher);
    let sender = Arc::clone(&publisher);
    let clip = Arc::clone(clip);
    tokio::spawn(async move {
        let _ = sender.send_clip(clip, Some(3)).await;
    });
    let control = ingest.handle();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                packet = ingest.recv() => match packet {
                    Some(p) => source.push(p),
                    None => break,
                },
                Some(track) = source.keyframe_request() => {
                    let _ = control.request_keyframe(track).await;
                }
            }
        }
        drop(publisher);
    });
    stream
}

/// A client player whose answer is applied; also returns when its offer was handed over.
async fn play(
    engine: &RtcEngine,
    stream: &StreamHandle,
) -> (Player, EgressPlayer, String, std::time::Instant) {
    let player = Player::new(&PlayerOptions::default(), &ClientConfig::default())
        .await
        .expect("player");
    let offer = player.offer().await.expect("offer");
    let asked = std::time::Instant::now();
    let (session, answer) = engine
        .egress()
        .accept(&offer, stream)
        .await
        .expect("accept player");
    player.set_answer(&answer).await.expect("answer");
    (player, session, answer, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_egress_serves_players_from_its_loops() {
    in_netns("netns_egress_serves_players_from_its_loops");
    let engine = RtcEngine::bind(RtcConfig::default()).await.expect("bind");
    let hub = Hub::new(HubConfig::default());
    let clip = Arc::new(Clip::load(fixture_path("clip-vp8.strm")).expect("fixture"));
    let stream = published(&engine, &hub, &clip).await;
    let (mut player, session, answer, asked) = play(&engine, &stream).await;
    assert!(answer.contains("a=ice-lite"), "{answer}");
    // The client stack offers transport-cc (its default interceptors): the node takes it.
    assert!(answer.contains("transport-cc"), "{answer}");
    player.connected(STEP).await.expect("player connects");
    let connected = asked.elapsed();
    let first = player.recv().await.expect("first packet");
    eprintln!(
        "offer → connected {connected:?}, → first packet {:?}",
        asked.elapsed()
    );
    assert!(session.connected(STEP).await, "egress session connects");
    let mut video = Vec::new();
    let mut audio = 0;
    match first.kind {
        TrackKind::Video => video.push(first),
        TrackKind::Audio => audio += 1,
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(packet)) = tokio::time::timeout_at(deadline, player.recv()).await else {
            break;
        };
        match packet.kind {
            TrackKind::Video => video.push(packet),
            TrackKind::Audio => audio += 1,
        }
    }
    assert!(video.len() > 100, "{} video packets", video.len());
    assert!(video[0].is_keyframe(), "video starts with a keyframe");
    for w in video.windows(2) {
        assert_eq!(w[1].sequence_number, w[0].sequence_number.wrapping_add(1));
    }
    assert!(audio > 50, "{audio} audio packets");

    // The player's transport-cc feedback reaches the loop and gives it an estimate.
    let counters = engine.egress().counters();
    assert!(counters.transport_feedback.get() > 10, "feedback read");
    assert_eq!(counters.transport_feedback_refused.get(), 0);
    let estimate = session.info().estimate_bps().expect("an estimate");
    eprintln!("estimate after 4 s on loopback: {estimate} bit/s");

    // Feedback reaches the loop: a PLI, and a NACK answered from the stream's history.
    let newest = video.last().expect("video").sequence_number;
    player
        .request_keyframe(TrackKind::Video)
        .await
        .expect("PLI");
    player
        .send_nack(TrackKind::Video, &[newest, newest.wrapping_sub(1)])
        .await
        .expect("NACK");
    let deadline = tokio::time::Instant::now() + STEP;
    while counters.keyframe_requests.get() == 0 || counters.retransmitted_packets.get() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "PLI {} NACKed {} resent {}",
            counters.keyframe_requests.get(),
            counters.nacked_packets.get(),
            counters.retransmitted_packets.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
