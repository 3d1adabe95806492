//! Errors of the WebRTC edge.

use strata_media::TrackId;

/// Why a WebRTC operation failed.
///
/// The HTTP layer maps these with [`RtcError::is_bad_request`] (400) and
/// [`RtcError::is_unsupported_media`] (415 for WHEP, "no common codec"); everything else is a
/// server-side failure.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    /// The SDP body is larger than the configured limit.
    #[error("SDP body of {size} bytes exceeds the limit of {limit}")]
    SdpTooLarge {
        /// Size of the body.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The SDP body has more lines than the configured limit.
    #[error("SDP body exceeds the limit of {limit} lines")]
    SdpTooManyLines {
        /// Configured limit.
        limit: usize,
    },
    /// The body is not a parseable SDP description.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// The offer has no audio or video section that could carry media in the needed direction.
    #[error("the offer has no usable audio or video section")]
    NoMedia,
    /// A publisher's offer carries audio or video, but in no codec this edge accepts
    /// (VP8, H.264 packetization-mode 1, Opus).
    #[error("the offer carries no supported codec (VP8, H.264 packetization-mode=1, Opus)")]
    NoUsableCodec,
    /// A player's offer supports none of the codecs the stream is published in.
    #[error("the player supports none of the stream's codecs")]
    NoCommonCodec,
    /// The WebRTC stack rejected the offer (for example, no ICE credentials or no DTLS
    /// fingerprint).
    #[error("offer rejected: {0}")]
    OfferRejected(String),
    /// A trickled ICE candidate (or the `sdpfrag` carrying it) could not be parsed or applied.
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    /// The `sdpfrag` asks for an ICE restart (new ufrag), which this edge does not support.
    #[error("ICE restart is not supported")]
    IceRestartUnsupported,
    /// The session has no track with this id.
    #[error("unknown track {0}")]
    UnknownTrack(TrackId),
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// The connection is not connected (yet).
    #[error("not connected")]
    NotConnected,
    /// The connection did not reach the connected state in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The edge is at a limit (too many sessions still connecting): try again later (503).
    #[error("busy: {0}")]
    Busy(String),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The signaling exchange of a client failed (HTTP error, unexpected status, ...).
    #[error("signaling failed: {0}")]
    Signaling(String),
    /// An RTP packet handed to a client could not be parsed.
    #[error("malformed RTP packet: {0}")]
    MalformedRtp(String),
    /// Binding or using the UDP socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The WebRTC stack failed.
    #[error("WebRTC error: {0}")]
    WebRtc(#[from] webrtc::error::Error),
}

impl RtcError {
    /// True when the request that caused this error was malformed or unacceptable (HTTP 400).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            RtcError::SdpTooLarge { .. }
                | RtcError::SdpTooManyLines { .. }
                | RtcError::InvalidSdp(_)
                | RtcError::NoMedia
                | RtcError::NoUsableCodec
                | RtcError::OfferRejected(_)
                | RtcError::InvalidCandidate(_)
        )
    }

    /// True when a player's offer shares no codec with the stream (HTTP 415 or 406).
    pub fn is_unsupported_media(&self) -> bool {
        matches!(self, RtcError::NoCommonCodec)
    }
}
