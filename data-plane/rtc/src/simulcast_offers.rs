//! A browser-style simulcast offer through the whole offer path: the publisher's catalog and
//! a player's assignment.

use strata_media::{Layer, TrackKind};

use crate::egress::answer::{LayerPref, assign};
use crate::publisher::catalog_of;
use crate::sdp::parse_offer;

/// What Chromium offers for `addTransceiver(video, {sendEncodings: [l, m, h]})` plus audio
/// (trimmed to the lines that matter here).
const PUBLISH: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\na=rtcp-mux\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rid:l send\r\na=rid:m send\r\na=rid:h send\r\na=simulcast:send l;m;h\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

/// A player's receive-only offer, audio section first.
const PLAY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE a v\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=recvonly\r\n\
a=ice-ufrag:efgh\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=recvonly\r\n\
a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n";

#[test]
fn each_layer_is_a_track_of_the_catalog() {
    let offer = parse_offer(PUBLISH, 65536, 1000).expect("offer parses");
    let (catalog, sources) = catalog_of(&offer).expect("catalog");
    let tracks: Vec<_> = catalog
        .tracks
        .iter()
        .map(|t| (t.id, t.kind, t.layer))
        .collect();
    assert_eq!(
        tracks,
        [
            (0, TrackKind::Video, Some(Layer::Low)),
            (1, TrackKind::Video, Some(Layer::Mid)),
            (2, TrackKind::Video, Some(Layer::High)),
            (3, TrackKind::Audio, None),
        ]
    );
    let rids: Vec<_> = sources
        .iter()
        .map(|(m, r)| (m.as_deref(), r.as_deref()))
        .collect();
    assert_eq!(
        rids,
        [
            (Some("0"), Some("l")),
            (Some("0"), Some("m")),
            (Some("0"), Some("h")),
            (Some("1"), None),
        ]
    );
}

#[test]
fn a_publisher_without_simulcast_keeps_one_video_track() {
    let plain: String = PUBLISH
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with("a=rid") && !l.starts_with("a=simulcast"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let offer = parse_offer(&plain, 65536, 1000).expect("offer parses");
    let (catalog, _) = catalog_of(&offer).expect("catalog");
    assert_eq!(catalog.tracks.len(), 2);
    assert!(catalog.tracks.iter().all(|t| t.layer.is_none()));
}

#[test]
fn a_player_gets_one_video_section_on_the_layer_it_asks_for() {
    let publish = parse_offer(PUBLISH, 65536, 1000).expect("offer parses");
    let (catalog, _) = catalog_of(&publish).expect("catalog");
    let play = parse_offer(PLAY, 65536, 1000).expect("player offer parses");
    for (pref, start) in [
        (LayerPref::Auto, 2),
        (LayerPref::Pinned(Layer::High), 2),
        (LayerPref::Pinned(Layer::Mid), 1),
        (LayerPref::Pinned(Layer::Low), 0),
    ] {
        let mut ssrc = 0;
        let assigned = assign(&play, &catalog, pref, || {
            ssrc += 1;
            ssrc
        })
        .expect("assigned");
        assert_eq!(assigned.len(), 2, "{pref:?}");
        assert_eq!(assigned[0].track.kind, TrackKind::Audio);
        assert!(assigned[0].layers.is_empty());
        let video = &assigned[1];
        assert_eq!(video.track.id, start, "{pref:?}");
        assert_eq!(
            video.layers,
            [(Layer::Low, 0), (Layer::Mid, 1), (Layer::High, 2)]
        );
    }
}

#[test]
fn more_than_three_layers_are_refused() {
    let four = PUBLISH.replace(
        "a=simulcast:send l;m;h",
        "a=rid:x send\r\na=simulcast:send l;m;h;x",
    );
    let err = parse_offer(&four, 65536, 1000).expect_err("four layers");
    assert!(err.is_bad_request(), "{err}");
}
