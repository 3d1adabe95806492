//! Group streams: a header, then frames.

use bytes::{BufMut, Bytes, BytesMut};
use strata_media::{MediaPacket, TrackId};

use super::reader::Reader;
use super::{FRAME_HEADER_LEN, FrameError, GROUP_HEADER_LEN, GROUP_MAGIC, MAX_RTP};

const FLAG_KEYFRAME: u8 = 0x01;

/// First bytes of a group stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// The subscription (downstream's id) the group belongs to.
    pub subscription: u64,
    /// Group sequence number within the subscription, increasing from 0.
    pub sequence: u64,
}

/// One media packet on a group stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Track of the catalog.
    pub track: TrackId,
    /// First packet of a keyframe.
    pub keyframe: bool,
    /// When the packet entered the cluster (µs since the Unix epoch).
    pub ingest_us: u64,
    /// Sender's wall clock at send (µs since the Unix epoch).
    pub send_us: u64,
    /// The RTP packet.
    pub rtp: Bytes,
}

impl Frame {
    /// The frame for `pkt`, stamped with the sender's clock.
    pub fn from_packet(pkt: MediaPacket, send_us: u64) -> Self {
        Frame {
            track: pkt.track,
            keyframe: pkt.keyframe,
            ingest_us: pkt.ingest_us,
            send_us,
            rtp: pkt.rtp,
        }
    }

    /// The packet it carries.
    pub fn into_packet(self) -> MediaPacket {
        MediaPacket {
            track: self.track,
            keyframe: self.keyframe,
            ingest_us: self.ingest_us,
            rtp: self.rtp,
        }
    }
}

/// Append a group header.
pub fn encode_group_header(header: &GroupHeader, out: &mut BytesMut) {
    out.put_u8(GROUP_MAGIC);
    out.put_u64(header.subscription);
    out.put_u64(header.sequence);
}

/// Take the group header off the front of `buf` (`Ok(None)`: need more bytes).
pub fn decode_group_header(buf: &mut BytesMut) -> Result<Option<GroupHeader>, FrameError> {
    if let Some(&magic) = buf.first()
        && magic != GROUP_MAGIC
    {
        return Err(FrameError::BadMagic(magic));
    }
    if buf.len() < GROUP_HEADER_LEN {
        return Ok(None);
    }
    let raw = buf.split_to(GROUP_HEADER_LEN);
    let mut r = Reader::new(&raw[1..]);
    Ok(Some(GroupHeader {
        subscription: r.u64()?,
        sequence: r.u64()?,
    }))
}

/// Append a frame. Fails (leaving `out` as it was) if the RTP packet is empty
/// or longer than [`MAX_RTP`].
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
    out.reserve(FRAME_HEADER_LEN + frame.rtp.len());
    encode_frame_header(frame, out)?;
    out.put_slice(&frame.rtp);
    Ok(())
}

/// Append a frame's header only: the sender hands the RTP bytes to QUIC as
/// their own chunk, without copying them. Fails (leaving `out` as it was) if
/// the RTP packet is empty or longer than [`MAX_RTP`].
pub fn encode_frame_header(frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
    let len = frame.rtp.len();
    if len == 0 {
        return Err(FrameError::EmptyPayload);
    }
    let len16 = u16::try_from(len).map_err(|_| FrameError::TooLong {
        what: "rtp packet",
        len,
        max: MAX_RTP,
    })?;
    out.reserve(FRAME_HEADER_LEN);
    out.put_u8(if frame.keyframe { FLAG_KEYFRAME } else { 0 });
    out.put_u8(frame.track);
    out.put_u64(frame.ingest_us);
    out.put_u64(frame.send_us);
    out.put_u16(len16);
    Ok(())
}

/// A frame's header fields, and its whole length on the wire.
struct FrameHead {
    keyframe: bool,
    track: TrackId,
    ingest_us: u64,
    send_us: u64,
    total: usize,
}

/// Parses the frame header at the front of `buf` (`Ok(None)`: need more bytes).
fn frame_head(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    let Some(head) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        if let Some(&flags) = buf.first()
            && flags & !FLAG_KEYFRAME != 0
        {
            return Err(FrameError::BadFlags(flags));
        }
        return Ok(None);
    };
    let mut r = Reader::new(head);
    let flags = r.u8()?;
    let track = r.u8()?;
    let ingest_us = r.u64()?;
    let send_us = r.u64()?;
    let len = usize::from(r.u16()?);
    if flags & !FLAG_KEYFRAME != 0 {
        return Err(FrameError::BadFlags(flags));
    }
    if len == 0 {
        return Err(FrameError::EmptyPayload);
    }
    Ok(Some(FrameHead {
        keyframe: flags & FLAG_KEYFRAME != 0,
        track,
        ingest_us,
        send_us,
        total: FRAME_HEADER_LEN + len,
    }))
}

impl FrameHead {
    fn into_frame(self, rtp: Bytes) -> Frame {
        Frame {
            track: self.track,
            keyframe: self.keyframe,
            ingest_us: self.ingest_us,
            send_us: self.send_us,
            rtp,
        }
    }
}

/// Take one frame off the front of `buf` (`Ok(None)`: need more bytes). The
/// RTP bytes are split off `buf` without copying.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(head) = frame_head(buf)? else {
        return Ok(None);
    };
    if buf.len() < head.total {
        return Ok(None);
    }
    let mut raw = buf.split_to(head.total);
    let rtp = raw.split_off(FRAME_HEADER_LEN).freeze();
    Ok(Some(head.into_frame(rtp)))
}

/// [`decode_frame`] on shared bytes, e.g. a chunk as QUIC received it: the
/// RTP bytes are a slice of `buf`, not a copy.
pub fn decode_frame_bytes(buf: &mut Bytes) -> Result<Option<Frame>, FrameError> {
    let Some(head) = frame_head(buf)? else {
        return Ok(None);
    };
    if buf.len() < head.total {
        return Ok(None);
    }
    let mut raw = buf.split_to(head.total);
    let rtp = raw.split_off(FRAME_HEADER_LEN);
    Ok(Some(head.into_frame(rtp)))
}
