//! A player's offer matched to a stream's catalog, and the answer the node writes itself.
//!
//! The egress does not run a peer connection per player, so it writes its answer directly:
//! ICE-lite, our credentials and certificate fingerprint, `a=setup:passive` (the player is the
//! DTLS client), one send-only section per catalog track the player can take, every other
//! section rejected, host candidates on the node's announced addresses.

use std::fmt::Write as _;
use std::net::SocketAddr;

use strata_media::{Catalog, Layer, TrackId, TrackInfo, TrackKind};

use crate::RtcError;
use crate::codec::{Codec, track_codec};
use crate::sdp::{OfferedCodec, ParsedOffer};

/// One offered section that will carry a catalog track.
#[derive(Debug, Clone)]
pub(crate) struct Assigned {
    /// Index of the section in the offer.
    pub section: usize,
    pub track: TrackInfo,
    pub codec: Codec,
    pub offered: OfferedCodec,
    /// The SSRC this player sees for the track.
    pub ssrc: u32,
    /// For a simulcast video: every layer's track, lowest first (`track` is the one to start
    /// on). Empty otherwise.
    pub layers: Vec<(Layer, TrackId)>,
    /// The node chooses the layer by the player's feedback (`auto`), rather than a pin.
    pub auto: bool,
    /// The transport-wide sequence number extension's id, when the offer has both it and
    /// transport-cc feedback on the codec: the answer then has both, and every packet of
    /// the track carries the player's transport-wide sequence number.
    pub transport_cc: Option<u8>,
}

/// Which simulcast layer a player wants (`POST /whep/{s}?layer=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerPref {
    /// The node picks per the player's bandwidth.
    #[default]
    Auto,
    /// Always this layer (or the nearest one below it the stream has, else the lowest).
    Pinned(Layer),
}

impl LayerPref {
    /// Parses `auto`, `low`, `mid` or `high`.
    pub fn parse(s: &str) -> Option<LayerPref> {
        if s == "auto" {
            return Some(LayerPref::Auto);
        }
        Layer::parse(s).map(LayerPref::Pinned)
    }

    /// The layer to start on among `layers` (lowest first, not empty).
    pub(crate) fn start<'a>(self, layers: &[&'a TrackInfo]) -> Option<&'a TrackInfo> {
        match self {
            LayerPref::Auto => layers.last().copied(),
            LayerPref::Pinned(want) => layers
                .iter()
                .rev()
                .find(|t| t.layer.is_some_and(|l| l <= want))
                .or_else(|| layers.first())
                .copied(),
        }
    }
}

/// Matches catalog tracks to the sections the player receives on, in offer order; each
/// track at most once. The simulcast layers of a stream count as one video track: the
/// player gets one section for them and starts on the layer `pref` names.
pub(crate) fn assign(
    offer: &ParsedOffer,
    catalog: &Catalog,
    pref: LayerPref,
    mut next_ssrc: impl FnMut() -> u32,
) -> Result<Vec<Assigned>, RtcError> {
    let layers = catalog.layers();
    // The one layer track that stands for all of them when matching sections.
    let layered = pref.start(&layers).map(|t| t.id);
    let mut assigned: Vec<Assigned> = Vec::new();
    let mut receiving = 0;
    for (index, section) in offer.sections.iter().enumerate() {
        let usable =
            section.kind.is_some() && !section.rejected && section.direction.offerer_receives();
        if !usable {
            continue;
        }
        receiving += 1;
        let found = catalog.tracks.iter().find_map(|track| {
            if Some(track.kind) != section.kind || assigned.iter().any(|a| a.track.id == track.id) {
                return None;
            }
            if track.layer.is_some() && Some(track.id) != layered {
                return None;
            }
            let codec = track_codec(track)?;
            let offered = section
                .codecs
                .iter()
                .find(|c| c.codec == codec && codec.player_accepts(&track.fmtp, &c.fmtp))?;
            Some((track, codec, offered))
        });
        if let Some((track, codec, offered)) = found {
            assigned.push(Assigned {
                section: index,
                track: track.clone(),
                codec,
                offered: offered.clone(),
                ssrc: next_ssrc(),
                layers: if track.layer.is_some() {
                    layers
                        .iter()
                        .filter_map(|t| Some((t.layer?, t.id)))
                        .collect()
                } else {
                    Vec::new()
                },
                auto: pref == LayerPref::Auto,
                transport_cc: section.transport_cc.filter(|_| offered.transport_cc),
            });
        }
    }
    // Bundled sections are one RTP session: one id for the extension (RFC 8285). A section
    // that names another id goes without.
    let id = assigned.iter().find_map(|a| a.transport_cc);
    for a in &mut assigned {
        if a.transport_cc != id {
            a.transport_cc = None;
        }
    }
    if receiving == 0 {
        return Err(RtcError::NoMedia);
    }
    if assigned.is_empty() {
        return Err(RtcError::NoCommonCodec);
    }
    Ok(assigned)
}

/// What the answer announces about the node's side.
pub(crate) struct LocalDescription<'a> {
    pub ice_ufrag: &'a str,
    pub ice_pwd: &'a str,
    /// `sha-256` fingerprint of the DTLS certificate, `AB:CD:…`.
    pub fingerprint: &'a str,
    pub candidates: &'a [SocketAddr],
    pub session_id: u64,
}

/// Writes the answer.
pub(crate) fn write(
    offer: &ParsedOffer,
    assigned: &[Assigned],
    local: &LocalDescription<'_>,
) -> Result<String, RtcError> {
    let mids = assigned_mids(offer, assigned)?;
    let mut out = String::with_capacity(1024 + 512 * offer.sections.len());
    session_header(&mut out, offer.bundle.then_some(&mids[..]), local);
    for (index, section) in offer.sections.iter().enumerate() {
        let mid = section.mid.as_deref();
        match assigned.iter().find(|a| a.section == index) {
            Some(a) => send_section(&mut out, a, mid.unwrap_or_default(), local),
            None => reject(&mut out, section.kind, mid),
        }
    }
    Ok(out)
}

/// The mids of the sections that carry a track, for `a=group:BUNDLE`. Refuses an offer that
/// would need more than one transport, or names no mid on one of them.
fn assigned_mids<'a>(
    offer: &'a ParsedOffer,
    assigned: &[Assigned],
) -> Result<Vec<&'a str>, RtcError> {
    if assigned.len() > 1 && !offer.bundle {
        return Err(RtcError::OfferRejected(
            "the offer does not bundle its media sections (a=group:BUNDLE)".into(),
        ));
    }
    let mids: Vec<&str> = assigned
        .iter()
        .filter_map(|a| offer.sections[a.section].mid.as_deref())
        .collect();
    if mids.len() != assigned.len() {
        return Err(RtcError::OfferRejected(
            "a media section has no a=mid".into(),
        ));
    }
    Ok(mids)
}

// Writing to a String cannot fail; the results of `write!` are ignored below for that reason.

/// The session-level lines: origin on the first announced address, the bundle group when the
/// offer has one, ICE-lite.
fn session_header(out: &mut String, bundle: Option<&[&str]>, local: &LocalDescription<'_>) {
    let ip_version = |addr: &SocketAddr| if addr.is_ipv6() { "IP6" } else { "IP4" };
    let origin = local
        .candidates
        .first()
        .map_or(("IP4", "127.0.0.1".to_owned()), |a| {
            (ip_version(a), a.ip().to_string())
        });
    let _ = write!(
        out,
        "v=0\r\no=strata {} 2 IN {} {}\r\ns=-\r\nt=0 0\r\n",
        local.session_id, origin.0, origin.1
    );
    if let Some(mids) = bundle {
        let _ = write!(out, "a=group:BUNDLE {}\r\n", mids.join(" "));
    }
    out.push_str("a=ice-lite\r\na=msid-semantic: WMS strata\r\n");
}

/// A send-only section carrying the assigned track: transport, codec and feedback, the
/// track's SSRC and msid, the node's candidates.
fn send_section(out: &mut String, a: &Assigned, mid: &str, local: &LocalDescription<'_>) {
    let kind = match a.track.kind {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    };
    let pt = a.offered.payload_type;
    let _ = write!(
        out,
        "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\n\
         a=setup:passive\r\na=mid:{mid}\r\na=sendonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n",
        local.ice_ufrag, local.ice_pwd, local.fingerprint,
    );
    codec_lines(out, a, pt);
    let track_id = format!("strata-{kind}-{}", a.track.id);
    let _ = write!(
        out,
        "a=msid:strata {track_id}\r\na=ssrc:{ssrc} cname:strata\r\n\
         a=ssrc:{ssrc} msid:strata {track_id}\r\n",
        ssrc = a.ssrc
    );
    host_candidates(out, local.candidates);
}

/// `rtpmap`, `fmtp` and the feedback the node answers for the assigned codec.
fn codec_lines(out: &mut String, a: &Assigned, pt: u8) {
    let (name, rate) = (a.codec.encoding_name(), a.codec.clock_rate());
    if a.codec == Codec::Opus {
        let _ = write!(out, "a=rtpmap:{pt} {name}/{rate}/2\r\n");
    } else {
        let _ = write!(out, "a=rtpmap:{pt} {name}/{rate}\r\n");
    }
    if !a.offered.fmtp.is_empty() {
        let _ = write!(out, "a=fmtp:{pt} {}\r\n", a.offered.fmtp);
    }
    if a.track.kind == TrackKind::Video {
        let _ = write!(
            out,
            "a=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\n"
        );
    }
    if let Some(id) = a.transport_cc {
        let _ = write!(
            out,
            "a=rtcp-fb:{pt} transport-cc\r\na=extmap:{id} {}\r\n",
            super::twcc::URI
        );
    }
}

/// One host candidate per announced address, then `a=end-of-candidates`.
fn host_candidates(out: &mut String, candidates: &[SocketAddr]) {
    for (i, addr) in candidates.iter().enumerate() {
        // Host type preference 126, descending local preference per address.
        let priority = (126u32 << 24) | ((65535 - (i as u32 % 65536)) << 8) | 255;
        let _ = write!(
            out,
            "a=candidate:{} 1 udp {priority} {} {} typ host\r\n",
            i + 1,
            addr.ip(),
            addr.port()
        );
    }
    out.push_str("a=end-of-candidates\r\n");
}

/// A section the node does not serve: port 0, same kind and mid (RFC 8843 §7.3.3).
fn reject(out: &mut String, kind: Option<TrackKind>, mid: Option<&str>) {
    let (media, proto, fmt) = match kind {
        Some(TrackKind::Audio) => ("audio", "UDP/TLS/RTP/SAVPF", "0"),
        Some(TrackKind::Video) => ("video", "UDP/TLS/RTP/SAVPF", "96"),
        None => ("application", "UDP/DTLS/SCTP", "webrtc-datachannel"),
    };
    let _ = write!(out, "m={media} 0 {proto} {fmt}\r\nc=IN IP4 0.0.0.0\r\n");
    if let Some(mid) = mid {
        let _ = write!(out, "a=mid:{mid}\r\n");
    }
    out.push_str("a=inactive\r\n");
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
