//! RTP packets (RFC 3550 §5.1) of one track: fixed SSRC and payload type,
//! consecutive sequence numbers.

use bytes::{BufMut, Bytes, BytesMut};

/// Writes the RTP packets of one track.
#[derive(Debug)]
pub struct RtpTrack {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
}

impl RtpTrack {
    /// A track with this SSRC and payload type, numbering from `first_seq`.
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16) -> RtpTrack {
        RtpTrack {
            ssrc,
            payload_type: payload_type & 0x7f,
            seq: first_seq,
        }
    }

    /// The next packet: version 2, no padding, extension or CSRCs.
    pub fn packet(&mut self, timestamp: u32, marker: bool, payload: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(12 + payload.len());
        b.put_u8(0x80);
        b.put_u8(self.payload_type | if marker { 0x80 } else { 0 });
        b.put_u16(self.seq);
        b.put_u32(timestamp);
        b.put_u32(self.ssrc);
        b.put_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let mut t = RtpTrack::new(0x0102_0304, 102, 0xffff);
        let a = t.packet(90_000, true, &[9]);
        assert_eq!(
            &a[..],
            &[
                0x80,
                0x80 | 102,
                0xff,
                0xff,
                0,
                1,
                0x5f,
                0x90,
                1,
                2,
                3,
                4,
                9
            ]
        );
        let b = t.packet(1, false, &[]);
        assert_eq!(&b[1..4], &[102, 0, 0]);
    }
}
