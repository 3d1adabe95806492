use super::*;
use crate::sdp::parse_offer;

fn catalog() -> Catalog {
    let track = |id, kind, mime: &str, clock_rate, channels| TrackInfo {
        id,
        kind,
        mime: mime.into(),
        clock_rate,
        channels,
        fmtp: String::new(),
        payload_type: 96,
        layer: None,
    };
    Catalog {
        tracks: vec![
            track(0, TrackKind::Audio, "audio/opus", 48_000, 2),
            track(1, TrackKind::Video, "video/VP8", 90_000, 0),
        ],
    }
}

/// A player's offer the way Chromium writes the parts that matter here; `audio_ext` and
/// `video_ext` are the transport-cc extension ids (none: not offered), `fb` whether the
/// codecs take transport-cc feedback.
fn offer(audio_ext: Option<u8>, video_ext: Option<u8>, fb: bool) -> String {
    let ext = |id: Option<u8>| {
        id.map(|id| format!("a=extmap:{id} {}\r\n", super::super::twcc::URI))
            .unwrap_or_default()
    };
    let fb = |pt: u8| {
        if fb {
            format!("a=rtcp-fb:{pt} transport-cc\r\n")
        } else {
            String::new()
        }
    };
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
         {}a=rtpmap:111 opus/48000/2\r\n{}\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n{}a=rtpmap:96 VP8/90000\r\n\
         a=rtcp-fb:96 nack\r\n{}",
        ext(audio_ext),
        fb(111),
        ext(video_ext),
        fb(96),
    )
}

fn answer(sdp: &str) -> (Vec<Assigned>, String) {
    let offer = parse_offer(sdp, 65_536, 1_000).expect("offer parses");
    let assigned = assign(&offer, &catalog(), LayerPref::Auto, || 7).expect("assigned");
    let local = LocalDescription {
        ice_ufrag: "u",
        ice_pwd: "p",
        fingerprint: "AB",
        candidates: &[],
        session_id: 1,
    };
    let answer = write(&offer, &assigned, &local).expect("answer");
    (assigned, answer)
}

#[test]
fn transport_cc_is_answered_when_offered() {
    let (assigned, sdp) = answer(&offer(Some(3), Some(3), true));
    assert!(assigned.iter().all(|a| a.transport_cc == Some(3)));
    let uri = super::super::twcc::URI;
    assert_eq!(
        sdp.matches(&format!("a=extmap:3 {uri}\r\n")).count(),
        2,
        "{sdp}"
    );
    assert!(sdp.contains("a=rtcp-fb:96 transport-cc\r\n"), "{sdp}");
    assert!(sdp.contains("a=rtcp-fb:111 transport-cc\r\n"), "{sdp}");
    // The other extensions the offer lists are not answered: the node does not send them.
    assert!(!sdp.contains("sdes:mid"), "{sdp}");
}

#[test]
fn transport_cc_is_left_out_unless_fully_offered() {
    for (audio, video, fb) in [
        (None, None, false),
        (None, None, true),
        (Some(3), Some(3), false),
        // Ids the one-byte form cannot carry.
        (Some(15), Some(15), true),
    ] {
        let (assigned, sdp) = answer(&offer(audio, video, fb));
        assert!(assigned.iter().all(|a| a.transport_cc.is_none()));
        assert!(
            !sdp.contains("transport-cc"),
            "{audio:?} {video:?} {fb}: {sdp}"
        );
        assert!(!sdp.contains(super::super::twcc::URI), "{sdp}");
    }
    // Only the video offers it: only the video has it.
    let (assigned, sdp) = answer(&offer(None, Some(5), true));
    assert_eq!(assigned[0].transport_cc, None);
    assert_eq!(assigned[1].transport_cc, Some(5));
    assert_eq!(sdp.matches("a=extmap:5 ").count(), 1, "{sdp}");
    assert_eq!(sdp.matches("transport-cc").count(), 1, "{sdp}");
    assert!(sdp.contains("a=rtcp-fb:96 transport-cc"), "{sdp}");
    // Bundled sections naming two ids: the first one's wins, the other goes without.
    let (assigned, _) = answer(&offer(Some(2), Some(5), true));
    assert_eq!(assigned[0].transport_cc, Some(2));
    assert_eq!(assigned[1].transport_cc, None);
}
