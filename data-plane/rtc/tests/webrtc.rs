//! Real WebRTC on loopback: client publisher → engine → hub stream → egress loops → client
//! players.
//! Run with `data-plane/rtc/run-netns-tests.sh` (see `common::in_netns`).

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::{STEP, in_netns};
use strata_media::hub::{Hub, HubConfig, StreamHandle};
use strata_media::{MediaPacket, TrackKind};
use strata_rtc::client::{ClientCodec, ClientConfig, Player, PlayerOptions, Publisher};
use strata_rtc::fixture::{Clip, fixture_path};
use strata_rtc::{
    EgressPlayer, PublisherHandle, PublisherSession, RtcConfig, RtcEngine, SessionState,
};
use tokio::time::timeout;

async fn engine() -> RtcEngine {
    let engine = RtcEngine::bind(RtcConfig::default()).await.expect("bind");
    assert_eq!(engine.local_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    engine
}

/// A client publisher connected to `engine`, and the engine's session for it.
async fn publish(engine: &RtcEngine, clip: &Clip) -> (Arc<Publisher>, PublisherSession) {
    let publisher = Publisher::new(clip.tracks(), &ClientConfig::default())
        .await
        .expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let (session, answer) = engine.accept_publisher(&offer).await.expect("accept");
    let port = engine.local_addr().port();
    assert!(
        answer.contains(&format!("127.0.0.1 {port} typ host")),
        "answer announces the shared port:\n{answer}"
    );
    assert_eq!(
        answer.matches("typ host").count(),
        answer.matches("m=").count()
    );
    assert_eq!(
        answer.matches("a=recvonly").count(),
        clip.tracks().len(),
        "{answer}"
    );
    assert!(!answer.contains(".local"), "no mDNS candidates");
    publisher.set_answer(&answer).await.expect("answer");
    publisher.connected(STEP).await.expect("publisher connects");
    (Arc::new(publisher), session)
}

/// Sends the clip at its pace, in the background.
fn pace(publisher: Arc<Publisher>, clip: Arc<Clip>, loops: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = publisher.send_clip(clip, Some(loops)).await;
    })
}

async fn play(
    engine: &RtcEngine,
    stream: &StreamHandle,
    options: PlayerOptions,
) -> (Player, EgressPlayer) {
    let player = Player::new(&options, &ClientConfig::default())
        .await
        .expect("player");
    let offer = player.offer().await.expect("offer");
    let (session, answer) = engine
        .accept_player(&offer, stream)
        .await
        .expect("accept player");
    assert!(answer.contains("a=sendonly"), "{answer}");
    assert!(!answer.contains("a=sendrecv"), "{answer}");
    player.set_answer(&answer).await.expect("answer");
    player.connected(STEP).await.expect("player connects");
    (player, session)
}

/// The smallest possible node: ingest packets into a hub stream, its keyframe requests back
/// to the publisher. Returns the stream, the publisher's handle, and what was ingested.
fn forward(
    hub: &Hub,
    mut ingest: PublisherSession,
) -> (
    StreamHandle,
    PublisherHandle,
    tokio::task::JoinHandle<Vec<MediaPacket>>,
) {
    let publisher = ingest.handle();
    let mut source = hub
        .attach_source("s", ingest.catalog().clone())
        .expect("attach");
    let stream = source.stream();
    let control = publisher.clone();
    let task = tokio::spawn(async move {
        let mut received = Vec::new();
        loop {
            tokio::select! {
                packet = ingest.recv() => match packet {
                    Some(p) => {
                        source.push(p.clone());
                        received.push(p);
                    }
                    None => break,
                },
                Some(track) = source.keyframe_request() => {
                    let _ = control.request_keyframe(track).await;
                }
            }
        }
        received
    });
    (stream, publisher, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_publish_and_play_over_one_port() {
    in_netns("netns_publish_and_play_over_one_port");
    let engine = engine().await;
    let clip = Arc::new(Clip::load(fixture_path("clip-vp8.strm")).expect("fixture"));
    let (publisher, ingest) = publish(&engine, &clip).await;

    // The catalog is what the publisher offered: VP8 on 96, Opus on 111, one track each.
    let catalog = ingest.catalog().clone();
    assert_eq!(catalog.tracks.len(), 2, "{catalog:?}");
    let video = catalog.video().cloned().expect("video track");
    assert_eq!((video.mime.as_str(), video.payload_type), ("video/VP8", 96));
    let audio = catalog
        .tracks
        .iter()
        .find(|t| t.kind == TrackKind::Audio)
        .cloned()
        .expect("audio track");
    assert_eq!(
        (audio.mime.as_str(), audio.payload_type),
        ("audio/opus", 111)
    );

    let hub_registry = Hub::new(HubConfig::default());
    let (stream, publisher_handle, hub) = forward(&hub_registry, ingest);

    // Two players on the same port, numbering VP8 and Opus differently from the publisher.
    let (mut player_a, session_a) = play(
        &engine,
        &stream,
        PlayerOptions {
            codecs: vec![ClientCodec::vp8(120), ClientCodec::opus(109)],
        },
    )
    .await;
    let (mut player_b, session_b) = play(&engine, &stream, PlayerOptions::default()).await;
    let players = [session_a, session_b];
    let sender = pace(Arc::clone(&publisher), Arc::clone(&clip), 1);

    // Each player gets video starting with a keyframe, with continuous sequence numbers and its
    // own payload types, and audio.
    for (player, video_pt, audio_pt) in [(&mut player_a, 120, 109), (&mut player_b, 96, 111)] {
        let mut packets: HashMap<TrackKind, Vec<_>> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::Instant::now() < deadline {
            let Ok(Some(packet)) = tokio::time::timeout_at(deadline, player.recv()).await else {
                break;
            };
            packets.entry(packet.kind).or_default().push(packet);
        }
        let video = packets.get(&TrackKind::Video).expect("video received");
        assert!(video.len() > 100, "{} video packets", video.len());
        assert!(video[0].is_keyframe(), "video starts with a keyframe");
        assert!(video.iter().all(|p| p.payload_type == video_pt));
        assert!(video.iter().all(|p| p.ssrc == video[0].ssrc));
        for w in video.windows(2) {
            assert_eq!(
                w[1].sequence_number,
                w[0].sequence_number.wrapping_add(1),
                "continuous video sequence numbers"
            );
        }
        let audio = packets.get(&TrackKind::Audio).expect("audio received");
        assert!(audio.len() > 50, "{} audio packets", audio.len());
        assert!(audio.iter().all(|p| p.payload_type == audio_pt));
    }

    // A PLI from a player reaches its loop, and through the hub, the publisher.
    let counters = engine.egress().counters();
    let before = counters.keyframe_requests.get();
    player_a
        .request_keyframe(TrackKind::Video)
        .await
        .expect("send PLI");
    timeout(STEP, async {
        while counters.keyframe_requests.get() == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("keyframe request surfaces");
    let requested = timeout(STEP, publisher.keyframe_request())
        .await
        .expect("publisher gets a PLI");
    assert_eq!(requested, Some(video.id));
    assert!(publisher_handle.stats().keyframe_requests >= 1);
    assert!(
        counters.packets_out.get() > 200 && counters.bytes_out.get() > 100_000,
        "{counters:?}"
    );

    // The ingest saw keyframes exactly where the clip has them, the first packet included.
    sender.await.expect("sender");
    publisher.close().await;
    let received = timeout(STEP, hub).await.expect("ingest ends").expect("hub");
    let first_video = received
        .iter()
        .find(|p| p.track == video.id)
        .expect("video ingested");
    assert!(
        first_video.keyframe,
        "first ingested video packet is a keyframe"
    );
    let keyframes = received
        .iter()
        .filter(|p| p.track == video.id && p.keyframe)
        .count();
    assert_eq!(keyframes, 6, "one keyframe per second of clip");
    assert!(
        received
            .iter()
            .filter(|p| p.track == audio.id)
            .all(|p| !p.keyframe)
    );
    assert!(received.iter().all(|p| p.ingest_us > 1_600_000_000_000_000));

    // The publisher left: its session is closed. When the stream closes, so do its players.
    assert_eq!(publisher_handle.state(), SessionState::Closed);
    stream.close();
    for player in &players {
        timeout(STEP, player.closed()).await.expect("player closed");
        assert_eq!(player.state(), SessionState::Closed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_h264_publish_and_play() {
    in_netns("netns_h264_publish_and_play");
    let engine = engine().await;
    let clip = Arc::new(Clip::load(fixture_path("clip-h264.strm")).expect("fixture"));
    let (publisher, ingest) = publish(&engine, &clip).await;
    let catalog = ingest.catalog().clone();
    let video = catalog.video().cloned().expect("video");
    assert_eq!(video.mime, "video/H264");
    let hub = Hub::new(HubConfig::default());
    let (stream, _publisher_handle, _ingested) = forward(&hub, ingest);

    // A player offering only VP8 cannot play it: 415-ish, no panic.
    let vp8_only = Player::new(
        &PlayerOptions {
            codecs: vec![ClientCodec::vp8(96)],
        },
        &ClientConfig::default(),
    )
    .await
    .expect("player");
    let offer = vp8_only.offer().await.expect("offer");
    match engine.accept_player(&offer, &stream).await {
        Err(e) => assert!(e.is_unsupported_media(), "{e}"),
        Ok(_) => panic!("a VP8-only player was accepted for an H.264 stream"),
    }

    let (mut player, _session) = play(
        &engine,
        &stream,
        PlayerOptions {
            codecs: vec![ClientCodec::h264(125)],
        },
    )
    .await;
    let _sender = pace(Arc::clone(&publisher), clip, 1);
    let first = timeout(STEP, player.recv())
        .await
        .expect("video arrives")
        .expect("packet");
    assert_eq!(first.kind, TrackKind::Video);
    assert!(first.is_keyframe(), "H.264 starts with SPS/IDR");
    assert_eq!(first.payload_type, 125);
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_many_players_share_one_port() {
    in_netns("netns_many_players_share_one_port");
    const PLAYERS: usize = 8;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let engine = RtcEngine::with_socket(
        RtcConfig {
            announce_ips: vec![],
            ..RtcConfig::default()
        },
        socket,
    )
    .expect("engine");
    assert_eq!(engine.local_addr().port(), port);
    let clip = Arc::new(Clip::load(fixture_path("clip-vp8.strm")).expect("fixture"));
    let (publisher, ingest) = publish(&engine, &clip).await;
    let hub = Hub::new(HubConfig::default());
    let (stream, _publisher_handle, _ingested) = forward(&hub, ingest);
    let mut clients = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..PLAYERS {
        // Alternate payload type numbering between players.
        let options = PlayerOptions {
            codecs: vec![
                ClientCodec::vp8(96 + (i as u8 % 2) * 24),
                ClientCodec::opus(111),
            ],
        };
        let (client, session) = play(&engine, &stream, options).await;
        clients.push(client);
        sessions.push(session);
    }
    let handles = sessions;
    let _sender = pace(Arc::clone(&publisher), clip, 1);
    for (i, client) in clients.iter_mut().enumerate() {
        let mut video = Vec::new();
        timeout(STEP, async {
            while video.len() < 60 {
                match client.recv().await {
                    Some(p) if p.kind == TrackKind::Video => video.push(p),
                    Some(_) => {}
                    None => break,
                }
            }
        })
        .await
        .expect("video keeps coming");
        assert!(video[0].is_keyframe(), "player {i} starts with a keyframe");
        let pt = 96 + (i as u8 % 2) * 24;
        assert!(video.iter().all(|p| p.payload_type == pt), "player {i}");
        for w in video.windows(2) {
            assert_eq!(w[1].sequence_number, w[0].sequence_number.wrapping_add(1));
        }
    }
    for handle in &handles {
        assert_eq!(handle.state(), SessionState::Connected);
    }
    publisher.close().await;
    for handle in &handles {
        handle.close().await;
    }
}
