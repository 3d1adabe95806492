// The body of every fuzz target: what one input goes through, with the
// properties checked beyond "does not panic". Plain Rust, no fuzzer types, so
// the workspace test `tests/tests/fuzz_corpus.rs` includes this file too.

use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::BytesMut;
use strata_common::names::{self, NameKind, validate};
use strata_media::Catalog;
use strata_node::auth::{self, Action, TokenKeys};
use strata_relay::framing::{
    decode_control, decode_frame, decode_group_header, encode_control, encode_frame,
    encode_group_header,
};

/// The SDP limits of the node's default RTC config.
const MAX_SDP_BYTES: usize = 64 * 1024;
/// See [`MAX_SDP_BYTES`].
const MAX_SDP_LINES: usize = 2000;

/// A VP8 + Opus publisher offer, the shape browsers send.
const GOOD_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0 1\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n\
    a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
    a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
    a=rtpmap:96 VP8/90000\r\n";

fn catalog() -> Option<&'static Catalog> {
    static CATALOG: OnceLock<Option<Catalog>> = OnceLock::new();
    CATALOG
        .get_or_init(|| {
            strata_rtc::check::publisher_offer(GOOD_OFFER, MAX_SDP_BYTES, MAX_SDP_LINES).ok()
        })
        .as_ref()
}

/// WHIP/WHEP offer bodies and PATCH sdpfrags: limits, parse, codec choice,
/// answer candidate rewrite. Must never panic; a publisher catalog has at
/// most one track per offered media section, except the one simulcast video
/// section, which gives at most three (one per layer).
pub fn sdp_offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = strata_rtc::check::publisher_offer(text, MAX_SDP_BYTES, MAX_SDP_LINES) {
        let sections = text.lines().filter(|l| l.starts_with("m=")).count();
        let layers = c.tracks.iter().filter(|t| t.layer.is_some()).count();
        assert!(layers <= 3, "more than three simulcast layers");
        let per_section = c.tracks.len() - layers + usize::from(layers > 0);
        assert!(per_section <= sections, "more tracks than m= sections");
    }
    if let Some(c) = catalog()
        && let Ok(n) = strata_rtc::check::player_offer(text, MAX_SDP_BYTES, MAX_SDP_LINES, c)
    {
        assert!(
            n <= c.tracks.len(),
            "more player tracks than the catalog has"
        );
    }
    if let Ok(n) = strata_rtc::check::sdpfrag(text, 4096, 100) {
        assert!(n <= 64, "sdpfrag over the candidate bound");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 4000));
    let rewritten = strata_rtc::check::rewrite_candidates(text, &[addr]);
    assert!(
        !rewritten
            .lines()
            .any(|l| l.starts_with("a=candidate:") && !l.contains("127.0.0.1 4000 typ host")),
        "a candidate of the input survived the rewrite"
    );
}

/// The relay wire format: the first byte picks the decoder (control stream,
/// group stream). Decoders must never panic, must consume what they return,
/// and what they return must encode back to something that decodes equal.
pub fn relay_framing(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(rest);
    if selector % 2 == 0 {
        // A control stream: messages back to back.
        loop {
            let before = buf.len();
            match decode_control(&mut buf) {
                Ok(Some(msg)) => {
                    assert!(buf.len() < before, "control message consumed nothing");
                    let mut out = BytesMut::new();
                    if encode_control(&msg, &mut out).is_ok() {
                        let again = decode_control(&mut out);
                        assert_eq!(again.ok().flatten().as_ref(), Some(&msg), "round trip");
                        assert!(out.is_empty(), "re-encoded message left bytes");
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    } else {
        // A media datagram (audio), then the same bytes as a group stream.
        if let Ok((id, frame)) = strata_relay::framing::decode_datagram(buf.clone().freeze()) {
            let mut out = BytesMut::new();
            let again = strata_relay::framing::encode_datagram(id, &frame, &mut out)
                .map(strata_relay::framing::decode_datagram);
            assert_eq!(
                again.ok().and_then(Result::ok),
                Some((id, frame)),
                "round trip"
            );
        }
        // A group stream: one header, then frames.
        match decode_group_header(&mut buf) {
            Ok(Some(h)) => {
                let mut out = BytesMut::new();
                encode_group_header(&h, &mut out);
                assert_eq!(decode_group_header(&mut out).ok().flatten(), Some(h));
            }
            Ok(None) | Err(_) => return,
        }
        loop {
            let before = buf.len();
            match decode_frame(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "frame consumed nothing");
                    let mut out = BytesMut::new();
                    if encode_frame(&frame, &mut out).is_ok() {
                        let again = decode_frame(&mut out);
                        assert_eq!(again.ok().flatten().as_ref(), Some(&frame), "round trip");
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Names that become etcd keys and URL path segments: the checked and the
/// yes/no form of the one rule agree, and a token subject never covers a
/// stream name the node would refuse.
pub fn names(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [NameKind::Stream, NameKind::Region, NameKind::Node] {
        let control = validate(kind, name);
        assert_eq!(
            control.is_ok(),
            names::is_valid(name),
            "validate and is_valid disagree on {name:?}"
        );
        if let Err(e) = control {
            // Hostile input is shown only as a bounded prefix.
            assert!(e.to_string().len() < 512, "error message echoes the input");
        }
    }
    // Split the input into a subject and a stream: a match needs a valid stream.
    if let Some((sub, stream)) = name.split_once('\n')
        && auth::subject_matches(sub, stream)
        && !sub.ends_with('*')
    {
        assert_eq!(sub, stream);
    }
}

const FUZZ_SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";

fn keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut k = TokenKeys::new();
        // A constant, valid key: insert cannot fail.
        let _ = k.insert("k1", FUZZ_SECRET);
        k
    })
}

/// Tokens: the input as a whole token, and the input as the claims of a
/// correctly signed token (so the claim checks see hostile JSON). Must never
/// panic; what verifies has a valid subject and an expiry in the future.
pub fn token(data: &[u8]) {
    let keys = keys();
    let now = 1_700_000_000;
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(g) = keys.verify(text, now) {
            assert!(g.exp + auth::LEEWAY_SECS > now);
        }
        let _ = strata_common::http::bearer(Some(text), Some(text));
        let redacted = auth::redact_uri(&format!("/play/x?token={text}"));
        assert!(!redacted.contains("token=") || redacted.contains("token=REDACTED"));
    }
    let header = br#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#;
    if let Some(signed) = keys.sign_parts("k1", header, data)
        && let Ok(g) = keys.verify(&signed, now)
    {
        assert!(g.exp + auth::LEEWAY_SECS > now, "expired token accepted");
        // An exact subject is a valid stream name; a prefix is the start of one
        // and ends at a separator, so it covers whole parts (`cam-1-*`, never `cam-1*`).
        let valid = match g.sub.strip_suffix('*') {
            Some(prefix) => {
                (prefix.is_empty() || prefix.ends_with(['-', '.', '_', '~']))
                    && names::is_valid(&format!("{prefix}x"))
            }
            None => names::is_valid(&g.sub),
        };
        assert!(valid, "invalid subject accepted: {:?}", g.sub);
        let _ = g.allows("stream", Action::Play);
    }
}
