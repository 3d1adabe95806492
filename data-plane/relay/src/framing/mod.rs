//! The relay wire format: encoder and a decoder that never panics.
//!
//! All integers are big-endian. Strings are a `u16` byte length followed by
//! UTF-8. Catalogs are JSON ([`strata_media::Catalog`]'s serde form).
//!
//! ## Control stream (one bidirectional QUIC stream per subscription)
//!
//! A sequence of messages, each
//!
//! ```text
//! u32 length      of type + body, 1..=MAX_CONTROL_MESSAGE
//! u8  type
//! ... body
//! ```
//!
//! | type | message | direction | body |
//! |---|---|---|---|
//! | 0x01 | `Subscribe` | down → up | `u64 subscription id`, `u64 epoch`, `string stream` |
//! | 0x02 | `SubscribeOk` | up → down | catalog JSON (rest of the message) |
//! | 0x03 | `SubscribeError` | up → down | `u16 code`, `string reason` |
//! | 0x04 | `KeyframeRequest` | down → up | `u8 track` |
//! | 0x05 | `Ended` | up → down | `string reason` |
//! | 0x06 | `CatalogChanged` | up → down | catalog JSON (rest of the message) |
//! | 0x07 | `LayerInterest` | down → up | `u8 layers` (bit 0 low, 1 mid, 2 high; others must be 0) |
//!
//! The downstream picks the subscription id (unique per connection) so it can
//! route media streams that arrive before it has read `SubscribeOk`. Closing
//! (finishing) the control stream from downstream unsubscribes.
//!
//! `LayerInterest` narrows the simulcast layers upstream sends on this
//! subscription (tracks without a layer always flow). A downstream that never
//! sends it gets every layer. Downstream sends it only when the catalog has
//! layers, so an upstream that predates simulcast never sees it. Upstream
//! applies at most one per 250 ms (the latest), so a peer flipping its
//! interest costs a bounded rate of filter changes and keyframe requests.
//!
//! ## Media (one unidirectional QUIC stream per group, upstream → downstream)
//!
//! A group starts at a video keyframe (audio-only streams: every ~1 s) and
//! holds every packet of every track until the next group starts.
//!
//! ```text
//! header: u8 0x47 ('G'), u64 subscription id, u64 group sequence
//! frame:  u8 flags (bit 0: keyframe; other bits must be 0), u8 track,
//!         u64 ingest_us, u64 send_us, u16 rtp length (1..), rtp bytes
//! ```
//!
//! `send_us` is the sender's wall clock (µs since the Unix epoch) when the
//! frame was written, so the receiver can measure the hop's latency. A group
//! stream may be reset by the sender when it is too late to be useful; the
//! receiver then skips to the next group. Group streams are independent, so
//! a group's first frames may arrive before the previous group's last ones;
//! the receiver still plays groups in sequence order, holding newer ones
//! back for a bounded time ([`crate::groups::GroupOrder`]).
//!
//! ## Audio (QUIC datagrams, upstream → downstream)
//!
//! In a stream with video, audio frames do not ride the group streams: each
//! goes as one QUIC datagram, so a lost video packet never holds audio back
//! for a retransmission round trip (a retransmitted audio packet would come
//! too late for a player's jitter buffer anyway; Opus conceals the loss).
//!
//! ```text
//! datagram: u8 0x44 ('D'), u64 subscription id, one frame (as above)
//! ```
//!
//! An audio frame too big for the path's datagram size, or a peer without
//! datagram support, falls back to the group stream. Audio-only streams keep
//! their timed groups.

mod control;
mod datagram;
mod group;
mod reader;
#[cfg(test)]
mod tests;

pub use control::{ControlMessage, MAX_REASON, SubscribeErrorCode, decode_control, encode_control};
pub use datagram::{DATAGRAM_HEADER_LEN, DATAGRAM_MAGIC, decode_datagram, encode_datagram};
pub use group::{
    Frame, GroupHeader, decode_frame, decode_frame_bytes, decode_group_header, encode_frame,
    encode_frame_header, encode_group_header,
};

/// Largest control message (type + body) accepted or produced.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;
/// Largest RTP payload of one frame (fits the `u16` length).
pub const MAX_RTP: usize = u16::MAX as usize;
/// Largest encoded frame: header plus [`MAX_RTP`].
pub const MAX_FRAME: usize = FRAME_HEADER_LEN + MAX_RTP;
/// Largest stream name.
pub const MAX_STREAM_NAME: usize = 1024;
/// Bytes of a frame before its RTP payload.
pub const FRAME_HEADER_LEN: usize = 1 + 1 + 8 + 8 + 2;
/// Bytes of a group header.
pub const GROUP_HEADER_LEN: usize = 1 + 8 + 8;
/// First byte of a group stream.
pub const GROUP_MAGIC: u8 = 0x47;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length field is over its limit.
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control message has length 0 (no type byte).
    #[error("empty control message")]
    Empty,
    /// The control message type is not one of this version's.
    #[error("unknown control message type {0:#04x}")]
    UnknownType(u8),
    /// A message ended before one of its fields.
    #[error("message truncated")]
    Truncated,
    /// A message has bytes after its last field.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A string field is not UTF-8.
    #[error("string is not UTF-8")]
    InvalidUtf8,
    /// The catalog JSON does not parse.
    #[error("invalid catalog: {0}")]
    InvalidCatalog(String),
    /// A `LayerInterest` sets bits for layers this version does not know.
    #[error("unknown simulcast layer bits {0:#04x}")]
    BadLayers(u8),
    /// A media stream does not start with the group magic byte.
    #[error("not a group stream (first byte {0:#04x})")]
    BadMagic(u8),
    /// A frame sets flag bits this version does not know.
    #[error("unknown frame flags {0:#04x}")]
    BadFlags(u8),
    /// A frame carries no RTP bytes.
    #[error("empty RTP payload")]
    EmptyPayload,
    /// The stream ended in the middle of a message or frame.
    #[error("stream ended inside a message ({0} bytes pending)")]
    UnexpectedEnd(usize),
}
