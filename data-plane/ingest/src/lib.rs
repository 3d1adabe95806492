//! Media from RTMP and SRT encoders, made into a stream the cluster carries:
//! a [`Catalog`](strata_media::Catalog) and RTP [`MediaPacket`](strata_media::MediaPacket)s
//! that a WebRTC player can take.
//!
//! Everything here is sans-IO: the node's RTMP and SRT listeners feed FLV
//! tag bodies (or elementary streams) in with their timestamps and get
//! packets back.
//!
//! - H.264 passes through: AVCC access units become RTP payloads (RFC 6184,
//!   single NAL unit packets and FU-A), with the SPS and PPS sent again in
//!   front of every IDR picture, timestamps at 90 kHz from the encoder's.
//! - AAC-LC is decoded (symphonia) and encoded again as Opus at 48 kHz
//!   stereo (libopus), since WebRTC players cannot take AAC.
//! - Anything else (Enhanced RTMP's HEVC/AV1/VP9, other FLV codecs, HE-AAC)
//!   is refused with an [`IngestError`] that names it.

pub mod aac;
pub mod convert;
pub mod flv;
pub mod h264;
pub mod resample;
pub mod rtp;
pub mod transcode;
pub mod ts;

pub use convert::{Converter, ConverterConfig};

/// Why media could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The bytes do not parse as what they claim to be.
    #[error("malformed media: {0}")]
    Malformed(&'static str),
    /// A video codec WebRTC players here cannot take.
    #[error("unsupported video: {0}")]
    UnsupportedVideo(String),
    /// An audio codec or layout this ingest cannot transcode.
    #[error("unsupported audio: {0}")]
    UnsupportedAudio(String),
    /// The Opus encoder failed.
    #[error("Opus encoder: {0}")]
    Encoder(String),
}

impl IngestError {
    /// Whether the publisher sends something this node will never take
    /// (the connection should be refused), rather than one bad frame.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            IngestError::UnsupportedVideo(_) | IngestError::UnsupportedAudio(_)
        )
    }
}

#[cfg(test)]
mod hostile {
    //! Every parser that sees a publisher's bytes, on random and truncated
    //! input: an error or a value, never a panic.

    use crate::aac::{AacConfig, parse_adts};
    use crate::convert::{Converter, ConverterConfig};
    use crate::flv::{parse_audio, parse_video};
    use crate::h264::{AvcConfig, split_avcc};

    /// A small deterministic generator (xorshift): the same cases every run.
    fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x5eed_u64;
        let mut c = Converter::new(ConverterConfig::default());
        c.set_avc_config(AvcConfig {
            length_size: 4,
            sps: vec![vec![0x67, 0x42, 0xc0, 0x1f]],
            pps: vec![vec![0x68, 0xce]],
        });
        for case in 0..5_000usize {
            let len = case % 300;
            let mut b = bytes(&mut seed, len);
            // Steer a share of the cases past the first checks.
            if case % 3 == 0 && !b.is_empty() {
                b[0] = 0x17;
            }
            if case % 5 == 0 && !b.is_empty() {
                b[0] = 0xaf;
            }
            let _ = parse_video(&b);
            let _ = parse_audio(&b);
            let _ = AvcConfig::parse(&b);
            let _ = split_avcc(&b, 1 + case % 4);
            let _ = parse_adts(&b);
            let _ = AacConfig::parse_asc(&b);
            let _ = c.push_video(case as u32, 0, &b, 0);
        }
    }
}
