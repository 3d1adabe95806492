//! Untrusted SDP: size limits, a pre-parse of offers, candidate rewriting of answers, and RFC
//! 8840 `sdpfrag` bodies for trickle ICE.

use std::io::Cursor;
use std::net::SocketAddr;

use rtc::sdp::{MediaDescription, SessionDescription};
use strata_media::{Layer, TrackKind};
use webrtc::peer_connection::RTCIceCandidateInit;

use crate::RtcError;
use crate::codec::Codec;
use crate::simulcast;

/// The transport-wide congestion control header extension's URI (`a=extmap`).
pub(crate) const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Direction of an offered media section, from the offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub(crate) fn offerer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub(crate) fn offerer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One codec of an offered media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfferedCodec {
    pub payload_type: u8,
    pub codec: Codec,
    pub channels: u16,
    pub fmtp: String,
    /// The offerer takes transport-wide congestion-control feedback on it
    /// (`a=rtcp-fb:PT transport-cc`, or `*`).
    pub transport_cc: bool,
}

/// One `m=` section of an offer.
#[derive(Debug, Clone)]
pub(crate) struct OfferSection {
    pub mid: Option<String>,
    pub kind: Option<TrackKind>,
    pub direction: Direction,
    /// Port 0: the offerer itself rejected the section.
    pub rejected: bool,
    /// Supported codecs, in the offerer's order of preference.
    pub codecs: Vec<OfferedCodec>,
    /// Simulcast layers the offerer sends (`rid`, layer), lowest first; empty without.
    pub layers: Vec<(String, Layer)>,
    /// The id the offer gives the transport-wide sequence number header extension, when it
    /// is one the one-byte form can carry (1–14).
    pub transport_cc: Option<u8>,
}

/// What the edge needs to know about an offer before handing it to the WebRTC stack.
#[derive(Debug, Clone)]
pub(crate) struct ParsedOffer {
    pub sections: Vec<OfferSection>,
    /// The offerer's ICE ufrag (session level, or the first media section's).
    pub ice_ufrag: Option<String>,
    /// The offerer's ICE password (session level, or the first media section's).
    pub ice_pwd: Option<String>,
    /// The offerer's certificate fingerprints (`a=fingerprint`: algorithm, value).
    pub fingerprints: Vec<(String, String)>,
    /// The offerer's DTLS role (`a=setup`), lower case.
    pub setup: Option<String>,
    /// The offer bundles its sections (`a=group:BUNDLE`).
    pub bundle: bool,
}

impl ParsedOffer {
    /// Sections that can carry audio or video in some direction.
    pub(crate) fn media_sections(&self) -> impl Iterator<Item = &OfferSection> {
        self.sections
            .iter()
            .filter(|s| s.kind.is_some() && !s.rejected && s.direction != Direction::Inactive)
    }
}

/// Rejects bodies over the size and line limits, then parses an SDP offer.
pub(crate) fn parse_offer(
    sdp: &str,
    max_bytes: usize,
    max_lines: usize,
) -> Result<ParsedOffer, RtcError> {
    check_limits(sdp, max_bytes, max_lines)?;
    if !sdp.trim_start().starts_with("v=0") {
        return Err(RtcError::InvalidSdp("does not start with v=0".into()));
    }
    let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;

    let session_ufrag = desc.attribute("ice-ufrag").cloned();
    let mut ice_ufrag = session_ufrag;
    let mut ice_pwd = desc.attribute("ice-pwd").cloned();
    let mut setup = desc.attribute("setup").cloned();
    let mut fingerprints: Vec<(String, String)> = desc
        .attribute("fingerprint")
        .and_then(|f| parse_fingerprint(f))
        .into_iter()
        .collect();
    let bundle = desc
        .attribute("group")
        .is_some_and(|g| g.starts_with("BUNDLE"));
    let mut sections = Vec::with_capacity(desc.media_descriptions.len());
    for media in &desc.media_descriptions {
        if ice_ufrag.is_none() {
            ice_ufrag = media.attribute("ice-ufrag").flatten().map(str::to_owned);
        }
        if ice_pwd.is_none() {
            ice_pwd = media.attribute("ice-pwd").flatten().map(str::to_owned);
        }
        if setup.is_none() {
            setup = media.attribute("setup").flatten().map(str::to_owned);
        }
        if fingerprints.is_empty()
            && let Some(fp) = media.attribute("fingerprint").flatten()
        {
            fingerprints.extend(parse_fingerprint(fp));
        }
        sections.push(parse_section(media)?);
    }
    Ok(ParsedOffer {
        sections,
        ice_ufrag,
        ice_pwd,
        fingerprints,
        setup: setup.map(|s| s.to_ascii_lowercase()),
        bundle,
    })
}

/// One `m=` section of an offer: its kind, direction, the codecs Strata can use, simulcast layers
/// and the transport-cc extension id.
fn parse_section(media: &MediaDescription) -> Result<OfferSection, RtcError> {
    let kind = match media.media_name.media.as_str() {
        "audio" => Some(TrackKind::Audio),
        "video" => Some(TrackKind::Video),
        _ => None,
    };
    let direction = section_direction(media);
    let layers = if kind == Some(TrackKind::Video) && direction.offerer_sends() {
        simulcast::send_layers(
            media
                .attributes
                .iter()
                .map(|a| (a.key.as_str(), a.value.as_deref())),
        )?
    } else {
        Vec::new()
    };
    Ok(OfferSection {
        mid: media.attribute("mid").flatten().map(str::to_owned),
        kind,
        direction,
        rejected: media.media_name.port.value == 0,
        codecs: usable_codecs(media, kind),
        layers,
        transport_cc: media
            .attributes
            .iter()
            .filter(|a| a.key == "extmap")
            .find_map(|a| transport_cc_extmap(a.value.as_deref()?)),
    })
}

fn section_direction(media: &MediaDescription) -> Direction {
    if media.has_attribute("sendonly") {
        Direction::SendOnly
    } else if media.has_attribute("recvonly") {
        Direction::RecvOnly
    } else if media.has_attribute("inactive") {
        Direction::Inactive
    } else {
        Direction::SendRecv
    }
}

/// The section's offered codecs Strata supports, in the offerer's order: a known encoding of the
/// section's kind, at its clock rate, with a format line it accepts.
fn usable_codecs(media: &MediaDescription, kind: Option<TrackKind>) -> Vec<OfferedCodec> {
    let offered = media.codecs();
    media
        .media_name
        .formats
        .iter()
        .filter_map(|format| format.parse::<u8>().ok())
        .filter_map(|pt| {
            let c = offered.get(&pt)?;
            let codec = Codec::from_encoding_name(&c.name)?;
            let channels = c.encoding_parameters.parse::<u16>().unwrap_or(0);
            let usable = kind == Some(codec.kind())
                && c.clock_rate == codec.clock_rate()
                && codec.accepts_fmtp(&c.fmtp);
            usable.then(|| OfferedCodec {
                payload_type: pt,
                codec,
                channels: if codec == Codec::Opus { 2 } else { channels },
                fmtp: c.fmtp.clone(),
                transport_cc: media.attributes.iter().any(|a| {
                    a.key == "rtcp-fb" && a.value.as_deref().is_some_and(|v| transport_cc_fb(v, pt))
                }),
            })
        })
        .collect()
}

/// `a=rtcp-fb:` value naming transport-cc feedback for `pt` (or every payload type).
fn transport_cc_fb(value: &str, pt: u8) -> bool {
    let mut parts = value.split_whitespace();
    let applies = parts
        .next()
        .is_some_and(|p| p == "*" || p.parse::<u8>() == Ok(pt));
    applies && parts.next() == Some("transport-cc")
}

/// The id of an `a=extmap:` value mapping the transport-wide sequence number extension,
/// if the one-byte form can carry it (`ID[/direction] URI`).
fn transport_cc_extmap(value: &str) -> Option<u8> {
    let mut parts = value.split_whitespace();
    let id = parts.next()?.split('/').next()?.parse::<u8>().ok()?;
    (parts.next() == Some(TRANSPORT_CC_URI) && (1..=14).contains(&id)).then_some(id)
}

/// `sha-256 AB:CD:…` → (`sha-256`, `ab:cd:…`).
fn parse_fingerprint(value: &str) -> Option<(String, String)> {
    let (algorithm, fingerprint) = value.trim().split_once(' ')?;
    Some((
        algorithm.to_ascii_lowercase(),
        fingerprint.trim().to_ascii_lowercase(),
    ))
}

fn check_limits(body: &str, max_bytes: usize, max_lines: usize) -> Result<(), RtcError> {
    if body.len() > max_bytes {
        return Err(RtcError::SdpTooLarge {
            size: body.len(),
            limit: max_bytes,
        });
    }
    if body.lines().count() > max_lines {
        return Err(RtcError::SdpTooManyLines { limit: max_lines });
    }
    Ok(())
}

/// The `a=ice-ufrag` of a description (session level or first media section).
pub(crate) fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// Replaces every candidate of an answer with host candidates on `addrs`, in every media
/// section that is not rejected, and marks gathering complete (`a=end-of-candidates`).
pub(crate) fn rewrite_candidates(sdp: &str, addrs: &[SocketAddr]) -> String {
    let mut out = String::with_capacity(sdp.len() + 128 * addrs.len());
    let mut in_media = false;
    let mut media_rejected = false;
    let push_candidates = |out: &mut String, in_media: bool, rejected: bool| {
        if !in_media || rejected {
            return;
        }
        for (i, addr) in addrs.iter().enumerate() {
            // Host type preference 126, descending local preference per address.
            let priority = (126u32 << 24) | ((65535 - i as u32 % 65536) << 8) | 255;
            out.push_str(&format!(
                "a=candidate:{} 1 udp {priority} {} {} typ host\r\n",
                i + 1,
                addr.ip(),
                addr.port()
            ));
        }
        out.push_str("a=end-of-candidates\r\n");
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("m=") {
            push_candidates(&mut out, in_media, media_rejected);
            in_media = true;
            media_rejected = line.split_whitespace().nth(1) == Some("0");
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    push_candidates(&mut out, in_media, media_rejected);
    out
}

/// Trickled candidates of an RFC 8840 `sdpfrag` body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SdpFrag {
    pub ice_ufrag: Option<String>,
    pub candidates: Vec<RTCIceCandidateInit>,
}

/// Parses an `application/trickle-ice-sdpfrag` body.
pub(crate) fn parse_sdpfrag(
    body: &str,
    max_bytes: usize,
    max_lines: usize,
) -> Result<SdpFrag, RtcError> {
    check_limits(body, max_bytes, max_lines)?;
    let mut frag = SdpFrag::default();
    let mut mline_index: Option<u16> = None;
    let mut mid: Option<String> = None;
    for line in body.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
            frag.ice_ufrag = Some(ufrag.to_owned());
        } else if line.starts_with("m=") {
            mline_index = Some(mline_index.map_or(0, |i| i.saturating_add(1)));
            mid = None;
        } else if let Some(value) = line.strip_prefix("a=mid:") {
            mid = Some(value.to_owned());
        } else if let Some(candidate) = line.strip_prefix("a=candidate:") {
            let fields: Vec<&str> = candidate.split_whitespace().collect();
            // foundation component transport priority address port "typ" type ...
            if fields.len() < 8 || fields[6] != "typ" || fields[5].parse::<u16>().is_err() {
                return Err(RtcError::InvalidCandidate(line.chars().take(200).collect()));
            }
            if fields[4].ends_with(".local") {
                // mDNS names cannot be resolved here (mDNS is off); the peer's checks reveal
                // the address as a peer-reflexive candidate anyway.
                continue;
            }
            frag.candidates.push(RTCIceCandidateInit {
                candidate: format!("candidate:{candidate}"),
                sdp_mid: mid.clone(),
                sdp_mline_index: Some(mline_index.unwrap_or(0)),
                username_fragment: None,
                url: None,
            });
        } else if !(line.starts_with("a=") || line.starts_with("c=")) {
            return Err(RtcError::InvalidCandidate(format!(
                "unexpected line in sdpfrag: {}",
                line.chars().take(80).collect::<String>()
            )));
        }
    }
    if frag.candidates.len() > 64 {
        return Err(RtcError::InvalidCandidate("more than 64 candidates".into()));
    }
    for candidate in &mut frag.candidates {
        candidate.username_fragment = frag.ice_ufrag.clone();
    }
    Ok(frag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=0;profile-level-id=42e01f\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    #[test]
    fn parses_codecs_in_preference_order() {
        let offer = parse_offer(OFFER, 65536, 1000).expect("parse");
        assert_eq!(offer.ice_ufrag.as_deref(), Some("abcd"));
        assert_eq!(offer.sections.len(), 3);
        let audio = &offer.sections[0];
        assert_eq!(audio.kind, Some(TrackKind::Audio));
        assert_eq!(audio.mid.as_deref(), Some("0"));
        assert_eq!(audio.direction, Direction::SendOnly);
        assert_eq!(audio.codecs.len(), 1);
        assert_eq!(audio.codecs[0].payload_type, 111);
        assert_eq!(audio.codecs[0].channels, 2);
        // H.264 in mode 0 is skipped, RTX is not a codec.
        let video = &offer.sections[1];
        assert_eq!(video.codecs.len(), 1);
        assert_eq!(video.codecs[0].codec, Codec::Vp8);
        assert!(offer.sections[2].rejected);
        assert_eq!(offer.media_sections().count(), 2);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let cases = [
            "",
            "hello",
            "v=0",
            "v=0\r\nm=",
            "v=0\r\no=\r\ns=\r\nm=video x RTP 96\r\n",
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96\r\n",
            "\u{0}\u{1}v=0",
        ];
        for case in cases {
            if let Ok(offer) = parse_offer(case, 65536, 1000) {
                assert_eq!(offer.media_sections().count(), 0, "{case:?}");
            }
        }
        assert!(matches!(
            parse_offer(&"a".repeat(70_000), 65536, 1000),
            Err(RtcError::SdpTooLarge { .. })
        ));
        assert!(matches!(
            parse_offer(&"v=0\n".repeat(2000), 65536, 1000),
            Err(RtcError::SdpTooManyLines { .. })
        ));
    }

    #[test]
    fn rewrites_candidates() {
        let addrs = ["127.0.0.1:4000".parse().expect("addr")];
        let out = rewrite_candidates(OFFER, &addrs);
        assert!(!out.contains("5000 typ host"));
        // Two live sections, none for the rejected one.
        assert_eq!(out.matches("127.0.0.1 4000 typ host").count(), 2);
        assert_eq!(out.matches("a=end-of-candidates").count(), 2);
        assert!(out.ends_with("a=mid:2\r\n"));
    }

    #[test]
    fn parses_sdpfrag() {
        let body = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
            m=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
            a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
            a=candidate:2 1 udp 2122260223 abc.local 61764 typ host\r\n\
            a=end-of-candidates\r\n";
        let frag = parse_sdpfrag(body, 4096, 100).expect("parse");
        assert_eq!(frag.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.candidates.len(), 1);
        let c = &frag.candidates[0];
        assert!(c.candidate.starts_with("candidate:1387637174 1 udp"));
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_mline_index, Some(0));
        assert_eq!(c.username_fragment.as_deref(), Some("EsAw"));
        assert!(matches!(
            parse_sdpfrag("a=candidate:1 1 udp\r\n", 4096, 100),
            Err(RtcError::InvalidCandidate(_))
        ));
        assert!(parse_sdpfrag("GET / HTTP/1.1\r\n", 4096, 100).is_err());
    }
}
