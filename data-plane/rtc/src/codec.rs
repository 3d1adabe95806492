//! The codecs the edge accepts, and the one thing it knows about their payloads: where a
//! keyframe starts.

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters};
use strata_media::{TrackInfo, TrackKind};

/// A codec this edge can ingest and serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 with packetization-mode 1 (RFC 6184).
    H264,
    /// Opus (RFC 7587).
    Opus,
}

impl Codec {
    /// The codec of a MIME type such as `video/VP8` (case-insensitive), if supported.
    pub fn from_mime(mime: &str) -> Option<Codec> {
        let (_, name) = mime.split_once('/')?;
        Codec::from_encoding_name(name)
    }

    /// The codec of an `a=rtpmap` encoding name such as `VP8` (case-insensitive).
    pub(crate) fn from_encoding_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("vp8") {
            Some(Codec::Vp8)
        } else if name.eq_ignore_ascii_case("h264") {
            Some(Codec::H264)
        } else if name.eq_ignore_ascii_case("opus") {
            Some(Codec::Opus)
        } else {
            None
        }
    }

    /// Canonical MIME type, as used in a [`TrackInfo`].
    pub fn mime(self) -> &'static str {
        match self {
            Codec::Vp8 => MIME_TYPE_VP8,
            Codec::H264 => MIME_TYPE_H264,
            Codec::Opus => MIME_TYPE_OPUS,
        }
    }

    /// The `a=rtpmap` encoding name.
    pub(crate) fn encoding_name(self) -> &'static str {
        match self {
            Codec::Vp8 => "VP8",
            Codec::H264 => "H264",
            Codec::Opus => "opus",
        }
    }

    /// Audio or video.
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::Vp8 | Codec::H264 => TrackKind::Video,
            Codec::Opus => TrackKind::Audio,
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Vp8 | Codec::H264 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    /// Whether an RTP payload of this codec is the first packet of a keyframe.
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8_is_keyframe_start(payload),
            Codec::H264 => h264_is_keyframe_start(payload),
            Codec::Opus => false,
        }
    }

    /// Whether an offered `a=fmtp` line is one this edge accepts for the codec.
    pub(crate) fn accepts_fmtp(self, fmtp: &str) -> bool {
        match self {
            // Mode 0 (one NAL unit per packet) and mode 2 (interleaved) are not supported.
            Codec::H264 => fmtp_param(fmtp, "packetization-mode") == Some("1"),
            Codec::Vp8 | Codec::Opus => true,
        }
    }

    /// Whether a player's offered variant (its `a=fmtp`) can decode a stream published with
    /// `published_fmtp`.
    pub(crate) fn player_accepts(self, published_fmtp: &str, offered_fmtp: &str) -> bool {
        match self {
            Codec::H264 => {
                // Same profile (the first byte of profile-level-id); the level is ignored, as
                // with level-asymmetry-allowed.
                // RFC 6184 §8.1: without profile-level-id, the profile is baseline (42).
                let profile = |fmtp| {
                    fmtp_param(fmtp, "profile-level-id")
                        .and_then(|id| id.get(..2))
                        .unwrap_or("42")
                        .to_ascii_lowercase()
                };
                self.accepts_fmtp(offered_fmtp) && profile(offered_fmtp) == profile(published_fmtp)
            }
            Codec::Vp8 | Codec::Opus => true,
        }
    }
}

/// The value of one `key=value` parameter of an `a=fmtp` line.
pub(crate) fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
}

/// The codec of a catalog track, if supported.
pub(crate) fn track_codec(track: &TrackInfo) -> Option<Codec> {
    Codec::from_mime(&track.mime)
}

/// Codec parameters for a media engine, with the feedback the edge uses (NACK, PLI, FIR).
pub(crate) fn codec_parameters(
    codec: Codec,
    payload_type: u8,
    channels: u16,
    fmtp: &str,
) -> RTCRtpCodecParameters {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    let rtcp_feedback = match codec.kind() {
        TrackKind::Video => vec![
            feedback("nack", ""),
            feedback("nack", "pli"),
            feedback("ccm", "fir"),
        ],
        TrackKind::Audio => vec![],
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: codec.mime().to_owned(),
            clock_rate: codec.clock_rate(),
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback,
        },
        payload_type,
    }
}

/// VP8 (RFC 7741 §4.2, §4.3): the packet starts partition 0 (S = 1, PID = 0) of a frame whose
/// payload header has P = 0 (a key frame).
pub fn vp8_is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut offset = 1;
    if first & 0x80 != 0 {
        // X: extension byte with I, L, T, K flags.
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        offset = 2;
        if ext & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits (M flag).
            let Some(&pid) = payload.get(offset) else {
                return false;
            };
            offset += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            offset += 1; // L: TL0PICIDX
        }
        if ext & 0x30 != 0 {
            offset += 1; // T or K: TID / KEYIDX
        }
    }
    payload.get(offset).is_some_and(|header| header & 0x01 == 0)
}

/// H.264 (RFC 6184 §5): an IDR slice (NAL type 5) or an SPS (7) begins in this packet, carried
/// as a single NAL unit, inside a STAP-A, or as the first fragment of an FU-A.
pub fn h264_is_keyframe_start(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let is_key = |nal_type: u8| nal_type == IDR || nal_type == SPS;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        t @ 1..=23 => is_key(t),
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                rest = &rest[2..];
                match (size, rest.first()) {
                    (1.., Some(&nal)) if size <= rest.len() => {
                        if is_key(nal & 0x1f) {
                            return true;
                        }
                        rest = &rest[size..];
                    }
                    _ => return false,
                }
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes() {
        // S=1, PID=0, no extension, P=0.
        assert!(vp8_is_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Interframe: P=1.
        assert!(!vp8_is_keyframe_start(&[0x10, 0x01]));
        // Not the start of partition 0.
        assert!(!vp8_is_keyframe_start(&[0x00, 0x00]));
        assert!(!vp8_is_keyframe_start(&[0x11, 0x00]));
        // X with I (15-bit picture id), L, T: header after 2 + 2 + 1 + 1 bytes.
        assert!(vp8_is_keyframe_start(&[
            0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00
        ]));
        assert!(!vp8_is_keyframe_start(&[
            0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x01
        ]));
        // X with a 7-bit picture id.
        assert!(vp8_is_keyframe_start(&[0x90, 0x80, 0x05, 0x00]));
        // Truncated packets are not keyframes and do not panic.
        for len in 0..6 {
            let _ = vp8_is_keyframe_start(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20][..len]);
        }
        assert!(!vp8_is_keyframe_start(&[]));
    }

    #[test]
    fn h264_keyframes() {
        assert!(h264_is_keyframe_start(&[0x65, 0x88])); // IDR
        assert!(h264_is_keyframe_start(&[0x67, 0x42])); // SPS
        assert!(!h264_is_keyframe_start(&[0x41, 0x9a])); // non-IDR slice
        assert!(!h264_is_keyframe_start(&[0x68, 0xce])); // PPS alone
        // STAP-A with SPS + PPS.
        assert!(h264_is_keyframe_start(&[
            0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce
        ]));
        // STAP-A with SEI + non-IDR.
        assert!(!h264_is_keyframe_start(&[
            0x78, 0x00, 0x01, 0x06, 0x00, 0x01, 0x41
        ]));
        // Malformed STAP-A sizes.
        assert!(!h264_is_keyframe_start(&[0x78, 0x00, 0x09, 0x67]));
        assert!(!h264_is_keyframe_start(&[0x78, 0x00, 0x00, 0x67]));
        // FU-A start of an IDR, middle of an IDR, start of a non-IDR.
        assert!(h264_is_keyframe_start(&[0x7c, 0x85, 0x00]));
        assert!(!h264_is_keyframe_start(&[0x7c, 0x05, 0x00]));
        assert!(!h264_is_keyframe_start(&[0x7c, 0x81, 0x00]));
        assert!(!h264_is_keyframe_start(&[0x7c]));
        assert!(!h264_is_keyframe_start(&[]));
    }

    #[test]
    fn codec_names_and_fmtp() {
        assert_eq!(Codec::from_mime("video/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime("audio/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime("video/AV1"), None);
        assert_eq!(Codec::from_mime("garbage"), None);
        let fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        assert!(Codec::H264.accepts_fmtp(fmtp));
        assert!(!Codec::H264.accepts_fmtp("profile-level-id=42e01f"));
        assert!(Codec::H264.player_accepts(fmtp, "packetization-mode=1;profile-level-id=42001f"));
        assert!(!Codec::H264.player_accepts(fmtp, "packetization-mode=1;profile-level-id=640c1f"));
        assert_eq!(fmtp_param(fmtp, "Profile-Level-Id"), Some("42e01f"));
    }
}
