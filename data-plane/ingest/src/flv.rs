//! FLV audio and video tag bodies, as RTMP carries them (FLV spec v10.1 §E.4.2,
//! §E.4.3; Enhanced RTMP's extended headers only to recognize and refuse them).

use crate::IngestError;

/// A parsed FLV video tag body.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// `AVCDecoderConfigurationRecord` (AVC sequence header).
    AvcConfig(&'a [u8]),
    /// Length-prefixed NAL units of one access unit.
    AvcFrame {
        /// FLV frame type 1 (keyframe).
        keyframe: bool,
        /// Composition time offset (PTS − DTS), in milliseconds.
        cts_ms: i32,
        /// The NAL units, each behind its length prefix.
        data: &'a [u8],
    },
    /// End of sequence, or a video info/command frame: nothing to carry.
    Ignored,
}

/// A parsed FLV audio tag body.
#[derive(Debug, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// `AudioSpecificConfig` (AAC sequence header).
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
}

/// Name of a legacy FLV video codec id, for refusals.
fn video_codec_name(id: u8) -> &'static str {
    match id {
        2 => "Sorenson H.263",
        3 => "Screen video",
        4 => "On2 VP6",
        5 => "On2 VP6 with alpha",
        6 => "Screen video 2",
        12 => "HEVC (legacy FLV id 12)",
        13 => "AV1 (legacy FLV id 13)",
        _ => "unknown",
    }
}

/// Name of an FLV sound format, for refusals.
fn audio_format_name(id: u8) -> &'static str {
    match id {
        0 | 3 => "linear PCM",
        1 => "ADPCM",
        2 => "MP3",
        4..=6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        9 => "Enhanced RTMP audio (FourCC)",
        11 => "Speex",
        14 => "MP3 8 kHz",
        _ => "unknown",
    }
}

/// Parses a video tag body. Only AVC (H.264) is accepted: Enhanced RTMP
/// (HEVC, AV1, VP9 by FourCC) and other legacy codecs are refused.
pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, IngestError> {
    let Some(&first) = body.first() else {
        return Err(IngestError::Malformed("empty video tag"));
    };
    if first & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader, then a FourCC such as hvc1, av01, vp09.
        let fourcc = body
            .get(1..5)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_else(|| "?".into());
        return Err(IngestError::UnsupportedVideo(format!(
            "Enhanced RTMP video {fourcc:?}; only H.264 (AVC) can be played over WebRTC here"
        )));
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    if codec != 7 {
        return Err(IngestError::UnsupportedVideo(format!(
            "FLV video codec {codec} ({}); only H.264 (AVC) is accepted",
            video_codec_name(codec)
        )));
    }
    let [_, packet_type, c0, c1, c2, data @ ..] = body else {
        return Err(IngestError::Malformed("short AVC video tag"));
    };
    // Composition time: a signed 24-bit integer.
    let cts_ms = (i32::from_be_bytes([*c0, *c1, *c2, 0])) >> 8;
    match packet_type {
        0 => Ok(VideoTag::AvcConfig(data)),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == 1,
            cts_ms,
            data,
        }),
        2 => Ok(VideoTag::Ignored),
        _ => Err(IngestError::Malformed("unknown AVC packet type")),
    }
}

/// Parses an audio tag body. Only AAC is accepted.
pub fn parse_audio(body: &[u8]) -> Result<AudioTag<'_>, IngestError> {
    let Some(&first) = body.first() else {
        return Err(IngestError::Malformed("empty audio tag"));
    };
    let format = first >> 4;
    if format != 10 {
        return Err(IngestError::UnsupportedAudio(format!(
            "FLV sound format {format} ({}); only AAC is accepted",
            audio_format_name(format)
        )));
    }
    match body.get(1..) {
        Some([0, rest @ ..]) => Ok(AudioTag::AacConfig(rest)),
        Some([1, rest @ ..]) => Ok(AudioTag::AacFrame(rest)),
        _ => Err(IngestError::Malformed("bad AAC packet type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_tags() {
        assert_eq!(
            parse_video(&[0x17, 0, 0, 0, 0, 1, 2]),
            Ok(VideoTag::AvcConfig(&[1, 2]))
        );
        assert_eq!(
            parse_video(&[0x27, 1, 0xff, 0xff, 0xfe, 9]),
            Ok(VideoTag::AvcFrame {
                keyframe: false,
                cts_ms: -2,
                data: &[9]
            })
        );
        assert_eq!(
            parse_video(&[0x17, 1, 0, 0, 40]),
            Ok(VideoTag::AvcFrame {
                keyframe: true,
                cts_ms: 40,
                data: &[]
            })
        );
        assert_eq!(parse_video(&[0x17, 2, 0, 0, 0]), Ok(VideoTag::Ignored));
        assert_eq!(parse_video(&[0x57, 0]), Ok(VideoTag::Ignored));
        assert!(matches!(parse_video(&[]), Err(IngestError::Malformed(_))));
        assert!(matches!(
            parse_video(&[0x17, 1]),
            Err(IngestError::Malformed(_))
        ));
    }

    #[test]
    fn other_video_codecs_are_refused_by_name() {
        let hevc = parse_video(b"\x90hvc1\x00\x00\x00");
        match hevc {
            Err(IngestError::UnsupportedVideo(why)) => assert!(why.contains("hvc1"), "{why}"),
            other => panic!("{other:?}"),
        }
        match parse_video(&[0x1c, 0, 0, 0, 0]) {
            Err(IngestError::UnsupportedVideo(why)) => assert!(why.contains("HEVC"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_video(&[0x80]),
            Err(IngestError::UnsupportedVideo(_))
        ));
    }

    #[test]
    fn audio_tags() {
        assert_eq!(
            parse_audio(&[0xaf, 0, 0x12, 0x10]),
            Ok(AudioTag::AacConfig(&[0x12, 0x10]))
        );
        assert_eq!(parse_audio(&[0xaf, 1, 7]), Ok(AudioTag::AacFrame(&[7])));
        assert!(matches!(
            parse_audio(&[0x2f, 1]),
            Err(IngestError::UnsupportedAudio(_))
        ));
        assert!(matches!(
            parse_audio(&[0xaf]),
            Err(IngestError::Malformed(_))
        ));
        assert!(matches!(
            parse_audio(&[0xaf, 5]),
            Err(IngestError::Malformed(_))
        ));
        assert!(matches!(parse_audio(&[]), Err(IngestError::Malformed(_))));
    }
}
