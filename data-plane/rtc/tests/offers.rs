//! Untrusted offers and trickle bodies: every bad input is a typed error, never a panic.
//! Run with `data-plane/rtc/run-netns-tests.sh` (see `common::in_netns`).

mod common;

use std::time::Duration;

use common::{STEP, in_netns};
use strata_media::hub::{Hub, HubConfig, StreamHandle};
use strata_media::{Catalog, TrackInfo, TrackKind};
use strata_rtc::client::{ClientConfig, Publisher};
use strata_rtc::fixture::{Clip, fixture_path};
use strata_rtc::{RtcConfig, RtcEngine, RtcError, SessionState};
use tokio::time::timeout;

fn vp8_catalog() -> Catalog {
    Clip::load(fixture_path("clip-vp8.strm"))
        .expect("fixture")
        .catalog()
}

/// A live hub stream with this catalog (nothing flows: offers are only negotiated).
fn stream_of(hub: &Hub, name: &str, catalog: Catalog) -> (strata_media::hub::Source, StreamHandle) {
    let source = hub.attach_source(name, catalog).expect("attach");
    let stream = source.stream();
    (source, stream)
}

async fn client_offer() -> (Publisher, String) {
    let publisher = Publisher::new(&vp8_catalog().tracks, &ClientConfig::default())
        .await
        .expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    (publisher, offer)
}

const SESSION_ONLY: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

fn pcmu_only() -> String {
    format!(
        "{SESSION_ONLY}a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
         a=rtcp-mux\r\na=setup:actpass\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_malformed_offers_are_bad_requests() {
    in_netns("netns_malformed_offers_are_bad_requests");
    let engine = RtcEngine::bind(RtcConfig::default()).await.expect("bind");
    let hub = Hub::new(HubConfig::default());
    let (_vp8, catalog) = stream_of(&hub, "vp8", vp8_catalog());
    let (_publisher, good) = client_offer().await;

    let mut cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("not SDP", "hello, world".into()),
        ("JSON", r#"{"type":"offer","sdp":"v=0"}"#.into()),
        ("binary", "\u{0}\u{1}\u{2}v=0\r\n".into()),
        ("too large", "v=0\r\n".repeat(20_000)),
        ("too many lines", "a=x\n".repeat(3000)),
        ("no media", SESSION_ONLY.into()),
        ("no usable codec", pcmu_only()),
        (
            "no ICE credentials",
            good.lines()
                .filter(|l| !l.starts_with("a=ice-"))
                .map(|l| format!("{l}\r\n"))
                .collect(),
        ),
    ];
    // Hostile simulcast: more than three layers, a rid never declared, a rid twice, a rid
    // that is not a token, a very long one.
    let video = good.find("m=video").expect("the client offers video");
    let end = good[video + 1..]
        .find("\nm=")
        .map_or(good.len(), |i| video + 1 + i + 1);
    let simulcast = |lines: &str| {
        let mut offer = good.clone();
        offer.insert_str(end, lines);
        offer
    };
    for (name, lines) in [
        (
            "four layers",
            "a=rid:a send\r\na=rid:b send\r\na=rid:c send\r\na=rid:d send\r\n\
             a=simulcast:send a;b;c;d\r\n",
        ),
        ("undeclared rid", "a=rid:a send\r\na=simulcast:send a;b\r\n"),
        ("rid twice", "a=rid:a send\r\na=simulcast:send a;a\r\n"),
        (
            "rid not a token",
            "a=rid:a/b send\r\na=simulcast:send a/b\r\n",
        ),
        (
            "rid too long",
            "a=rid:abcdefghijklmnopq send\r\na=simulcast:send abcdefghijklmnopq\r\n",
        ),
        (
            "two simulcast lines",
            "a=rid:a send\r\na=simulcast:send a\r\na=simulcast:send a\r\n",
        ),
    ] {
        cases.push((name, simulcast(lines)));
    }
    // Every truncation of a real offer.
    for cut in (0..good.len()).step_by(97) {
        cases.push(("truncated", good[..cut].to_owned()));
    }
    for (name, offer) in &cases {
        match engine.accept_publisher(offer).await {
            Err(e) => assert!(e.is_bad_request(), "{name}: {e} is not a bad request"),
            Ok((session, _)) => {
                // Some truncations are still a complete offer; those must be fine sessions.
                assert!(!session.catalog().tracks.is_empty(), "{name}");
                session.close().await;
            }
        }
        match engine.accept_player(offer, &catalog).await {
            Err(e) => assert!(
                e.is_bad_request() || e.is_unsupported_media(),
                "{name}: {e} is neither 400 nor 415"
            ),
            Ok((session, _)) => session.close().await,
        }
    }

    // A publisher's send-only offer presented as a player: nothing to receive.
    assert!(matches!(
        engine.accept_player(&good, &catalog).await,
        Err(RtcError::NoMedia)
    ));
    // An empty catalog: nothing in common.
    let (player, _) = {
        let options = strata_rtc::client::PlayerOptions::default();
        let player = strata_rtc::client::Player::new(&options, &ClientConfig::default())
            .await
            .expect("player");
        let offer = player.offer().await.expect("offer");
        (player, offer)
    };
    let offer = player.offer().await.expect("offer");
    let (_empty, empty) = stream_of(&hub, "empty", Catalog::default());
    let err = engine
        .accept_player(&offer, &empty)
        .await
        .err()
        .expect("no tracks to play");
    assert!(err.is_unsupported_media(), "{err}");
    // A catalog in a codec nobody supports.
    let av1 = Catalog {
        tracks: vec![TrackInfo {
            id: 0,
            kind: TrackKind::Video,
            mime: "video/AV1".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
            payload_type: 45,
            layer: None,
        }],
    };
    let (_av1, av1) = stream_of(&hub, "av1", av1);
    assert!(matches!(
        engine.accept_player(&offer, &av1).await,
        Err(RtcError::NoCommonCodec)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_trickle_candidates() {
    in_netns("netns_trickle_candidates");
    let engine = RtcEngine::bind(RtcConfig::default()).await.expect("bind");
    let (_publisher, offer) = client_offer().await;
    let ufrag = offer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("ufrag")
        .to_owned();
    let (session, _answer) = engine.accept_publisher(&offer).await.expect("accept");
    let frag = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:whatever\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
         a=candidate:9 1 udp 2122260223 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
    );
    session
        .add_remote_candidates(&frag)
        .await
        .expect("valid candidate");
    let restart = frag.replace(&ufrag, "other");
    assert!(matches!(
        session.add_remote_candidates(&restart).await,
        Err(RtcError::IceRestartUnsupported)
    ));
    for bad in [
        "garbage",
        "a=candidate:1 1 udp\r\n",
        "a=candidate:1 1 udp 1 127.0.0.1 notaport typ host\r\n",
    ] {
        let err = session.add_remote_candidates(bad).await.expect_err(bad);
        assert!(err.is_bad_request(), "{bad}: {err}");
    }
    session.close().await;
    assert!(matches!(
        session.add_remote_candidates(&frag).await,
        Err(RtcError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_unanswered_session_times_out() {
    in_netns("netns_unanswered_session_times_out");
    let engine = RtcEngine::bind(RtcConfig {
        connect_timeout: Duration::from_millis(500),
        ..RtcConfig::default()
    })
    .await
    .expect("bind");
    // The client never applies the answer, so ICE never completes.
    let (_publisher, offer) = client_offer().await;
    let (session, _answer) = engine.accept_publisher(&offer).await.expect("accept");
    timeout(STEP, session.closed())
        .await
        .expect("closed after the connect timeout");
    assert_eq!(session.handle().state(), SessionState::Closed);
    assert!(matches!(
        session.request_keyframe(0).await,
        Err(RtcError::Closed)
    ));
}
