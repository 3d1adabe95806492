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
