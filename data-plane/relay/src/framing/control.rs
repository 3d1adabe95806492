//! Control-stream messages.

use bytes::{BufMut, BytesMut};
use strata_media::hub::LayerSet;
use strata_media::{Catalog, TrackId};

use super::reader::{Reader, put_string};
use super::{FrameError, MAX_CONTROL_MESSAGE, MAX_STREAM_NAME};

/// Longest reason string in `SubscribeError` and `Ended`.
pub const MAX_REASON: usize = 4096;

const SUBSCRIBE: u8 = 0x01;
const SUBSCRIBE_OK: u8 = 0x02;
const SUBSCRIBE_ERROR: u8 = 0x03;
const KEYFRAME_REQUEST: u8 = 0x04;
const ENDED: u8 = 0x05;
const CATALOG_CHANGED: u8 = 0x06;
const LAYER_INTEREST: u8 = 0x07;

/// Why an upstream refused a subscription, as carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeErrorCode {
    /// The upstream does not carry the stream.
    NotFound,
    /// The epoch in the request is not the upstream's current one for the stream.
    StaleEpoch,
    /// The upstream's policy refuses this peer.
    NotAuthorized,
    /// The connection has as many subscriptions as the upstream allows.
    TooManySubscriptions,
    /// The request was malformed (e.g. a subscription id already in use).
    Protocol,
    /// The upstream failed internally.
    Internal,
    /// A code this version does not know.
    Other(u16),
}

impl SubscribeErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::NotFound => 1,
            Self::StaleEpoch => 2,
            Self::NotAuthorized => 3,
            Self::TooManySubscriptions => 4,
            Self::Protocol => 5,
            Self::Internal => 6,
            Self::Other(code) => code,
        }
    }

    /// From the wire value.
    pub fn from_u16(code: u16) -> Self {
        match code {
            1 => Self::NotFound,
            2 => Self::StaleEpoch,
            3 => Self::NotAuthorized,
            4 => Self::TooManySubscriptions,
            5 => Self::Protocol,
            6 => Self::Internal,
            other => Self::Other(other),
        }
    }
}

impl std::fmt::Display for SubscribeErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("not found"),
            Self::StaleEpoch => f.write_str("stale epoch"),
            Self::NotAuthorized => f.write_str("not authorized"),
            Self::TooManySubscriptions => f.write_str("too many subscriptions"),
            Self::Protocol => f.write_str("protocol error"),
            Self::Internal => f.write_str("internal error"),
            Self::Other(code) => write!(f, "error {code}"),
        }
    }
}

/// A message on a subscription's control stream. See the [module docs](super).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Downstream asks for a stream.
    Subscribe {
        /// Chosen by downstream, unique on the connection; tags the media streams.
        id: u64,
        /// The stream's name.
        stream: String,
        /// The epoch of the origin record downstream resolved.
        epoch: u64,
    },
    /// Upstream accepts; media follows on group streams.
    SubscribeOk {
        /// The stream's tracks.
        catalog: Catalog,
    },
    /// Upstream refuses; it then finishes the control stream.
    SubscribeError {
        /// Why.
        code: SubscribeErrorCode,
        /// Human-readable detail.
        reason: String,
    },
    /// Downstream needs a keyframe of a track.
    KeyframeRequest {
        /// The track.
        track: TrackId,
    },
    /// Upstream's stream ended; it then finishes the control stream.
    Ended {
        /// Human-readable detail.
        reason: String,
    },
    /// Upstream's catalog changed.
    CatalogChanged {
        /// The new catalog.
        catalog: Catalog,
    },
    /// Downstream wants only these simulcast layers (until the first one, every layer).
    LayerInterest {
        /// The layers; tracks that are not layers always flow.
        layers: LayerSet,
    },
}

fn put_catalog(out: &mut BytesMut, catalog: &Catalog) -> Result<(), FrameError> {
    let json =
        serde_json::to_vec(catalog).map_err(|e| FrameError::InvalidCatalog(e.to_string()))?;
    out.put_slice(&json);
    Ok(())
}

fn parse_catalog(raw: &[u8]) -> Result<Catalog, FrameError> {
    serde_json::from_slice(raw).map_err(|e| FrameError::InvalidCatalog(e.to_string()))
}

/// Append `msg` to `out`. On error `out` is left as it was.
pub fn encode_control(msg: &ControlMessage, out: &mut BytesMut) -> Result<(), FrameError> {
    let start = out.len();
    let result = encode_body(msg, out, start);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_body(msg: &ControlMessage, out: &mut BytesMut, start: usize) -> Result<(), FrameError> {
    out.put_u32(0); // length, patched below
    match msg {
        ControlMessage::Subscribe { id, stream, epoch } => {
            out.put_u8(SUBSCRIBE);
            out.put_u64(*id);
            out.put_u64(*epoch);
            put_string(out, stream, MAX_STREAM_NAME, "stream name")?;
        }
        ControlMessage::SubscribeOk { catalog } => {
            out.put_u8(SUBSCRIBE_OK);
            put_catalog(out, catalog)?;
        }
        ControlMessage::SubscribeError { code, reason } => {
            out.put_u8(SUBSCRIBE_ERROR);
            out.put_u16(code.to_u16());
            put_string(out, reason, MAX_REASON, "reason")?;
        }
        ControlMessage::KeyframeRequest { track } => {
            out.put_u8(KEYFRAME_REQUEST);
            out.put_u8(*track);
        }
        ControlMessage::Ended { reason } => {
            out.put_u8(ENDED);
            put_string(out, reason, MAX_REASON, "reason")?;
        }
        ControlMessage::CatalogChanged { catalog } => {
            out.put_u8(CATALOG_CHANGED);
            put_catalog(out, catalog)?;
        }
        ControlMessage::LayerInterest { layers } => {
            out.put_u8(LAYER_INTEREST);
            out.put_u8(layers.bits());
        }
    }
    let len = out.len() - start - 4;
    if len > MAX_CONTROL_MESSAGE {
        return Err(FrameError::TooLong {
            what: "control message",
            len,
            max: MAX_CONTROL_MESSAGE,
        });
    }
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLong {
        what: "control message",
        len,
        max: MAX_CONTROL_MESSAGE,
    })?;
    out[start..start + 4].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

/// Take one complete message off the front of `buf`: `Ok(None)` when more
/// bytes are needed, an error when the bytes cannot be a message (the stream
/// should then be closed).
pub fn decode_control(buf: &mut BytesMut) -> Result<Option<ControlMessage>, FrameError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_CONTROL_MESSAGE {
        return Err(FrameError::TooLong {
            what: "control message",
            len,
            max: MAX_CONTROL_MESSAGE,
        });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let raw = buf.split_to(4 + len);
    parse(&raw[4..]).map(Some)
}

fn parse(raw: &[u8]) -> Result<ControlMessage, FrameError> {
    let mut r = Reader::new(raw);
    let msg = match r.u8()? {
        SUBSCRIBE => ControlMessage::Subscribe {
            id: r.u64()?,
            epoch: r.u64()?,
            stream: r.string(MAX_STREAM_NAME, "stream name")?,
        },
        SUBSCRIBE_OK => ControlMessage::SubscribeOk {
            catalog: parse_catalog(r.rest())?,
        },
        SUBSCRIBE_ERROR => ControlMessage::SubscribeError {
            code: SubscribeErrorCode::from_u16(r.u16()?),
            reason: r.string(MAX_REASON, "reason")?,
        },
        KEYFRAME_REQUEST => ControlMessage::KeyframeRequest { track: r.u8()? },
        ENDED => ControlMessage::Ended {
            reason: r.string(MAX_REASON, "reason")?,
        },
        CATALOG_CHANGED => ControlMessage::CatalogChanged {
            catalog: parse_catalog(r.rest())?,
        },
        LAYER_INTEREST => {
            let bits = r.u8()?;
            ControlMessage::LayerInterest {
                layers: LayerSet::from_bits(bits).ok_or(FrameError::BadLayers(bits))?,
            }
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    r.finish()?;
    Ok(msg)
}
