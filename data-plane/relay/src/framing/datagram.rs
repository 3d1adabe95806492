//! Audio frames as QUIC datagrams: `u8 0x44 ('D')`, `u64 subscription id`,
//! then exactly one frame (as on a group stream) filling the rest.

use bytes::{BufMut, Bytes, BytesMut};

use super::{FRAME_HEADER_LEN, Frame, FrameError, decode_frame_bytes, encode_frame_header};

/// First byte of a media datagram.
pub const DATAGRAM_MAGIC: u8 = 0x44;
/// Bytes of a datagram before its frame.
pub const DATAGRAM_HEADER_LEN: usize = 1 + 8;

/// The datagram carrying `frame` for `subscription`, written into the scratch
/// block `out` (left empty, its spare capacity kept for the next one). The
/// RTP bytes are copied: a datagram goes out whole, and audio is small.
pub fn encode_datagram(
    subscription: u64,
    frame: &Frame,
    out: &mut BytesMut,
) -> Result<Bytes, FrameError> {
    out.reserve(DATAGRAM_HEADER_LEN + FRAME_HEADER_LEN + frame.rtp.len());
    let mark = out.len();
    out.put_u8(DATAGRAM_MAGIC);
    out.put_u64(subscription);
    if let Err(e) = encode_frame_header(frame, out) {
        out.truncate(mark);
        return Err(e);
    }
    out.put_slice(&frame.rtp);
    Ok(out.split().freeze().split_off(mark))
}

/// The subscription and frame of a received datagram; the RTP bytes are a
/// slice of it. Anything but exactly one whole frame is an error.
pub fn decode_datagram(mut datagram: Bytes) -> Result<(u64, Frame), FrameError> {
    let Some(&magic) = datagram.first() else {
        return Err(FrameError::Truncated);
    };
    if magic != DATAGRAM_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let Some(id) = datagram.get(1..DATAGRAM_HEADER_LEN) else {
        return Err(FrameError::Truncated);
    };
    let mut id8 = [0u8; 8];
    id8.copy_from_slice(id);
    let subscription = u64::from_be_bytes(id8);
    let mut rest = datagram.split_off(DATAGRAM_HEADER_LEN);
    let frame = decode_frame_bytes(&mut rest)?.ok_or(FrameError::Truncated)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok((subscription, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            track: 0,
            keyframe: false,
            ingest_us: 7,
            send_us: 9,
            rtp: Bytes::from_static(&[0x80, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xaa]),
        }
    }

    #[test]
    fn round_trip() {
        let mut block = BytesMut::new();
        let d = encode_datagram(42, &frame(), &mut block).unwrap();
        assert_eq!(d.len(), DATAGRAM_HEADER_LEN + FRAME_HEADER_LEN + 13);
        assert_eq!(decode_datagram(d).unwrap(), (42, frame()));
    }

    #[test]
    fn hostile_datagrams_are_errors() {
        let mut block = BytesMut::new();
        let good = encode_datagram(1, &frame(), &mut block).unwrap();
        assert_eq!(decode_datagram(Bytes::new()), Err(FrameError::Truncated));
        assert_eq!(
            decode_datagram(Bytes::from_static(b"G12345678")),
            Err(FrameError::BadMagic(b'G'))
        );
        for cut in 1..good.len() {
            assert!(decode_datagram(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(
            decode_datagram(Bytes::from(long)),
            Err(FrameError::TrailingBytes(1))
        );
        let mut flags = good.to_vec();
        flags[DATAGRAM_HEADER_LEN] = 0x80;
        assert_eq!(
            decode_datagram(Bytes::from(flags)),
            Err(FrameError::BadFlags(0x80))
        );
    }
}
