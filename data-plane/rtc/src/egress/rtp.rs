//! The few RTP header fields the egress needs, read in place (RFC 3550 §5.1).

/// A parsed view of an RTP packet held elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpView {
    pub marker: bool,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    payload_start: usize,
    payload_end: usize,
}

impl RtpView {
    /// Parses the header; `None` unless `data` is RTP version 2 with a non-empty payload.
    pub(crate) fn parse(data: &[u8]) -> Option<RtpView> {
        if data.len() < 12 || data[0] >> 6 != 2 {
            return None;
        }
        let csrc = usize::from(data[0] & 0x0f);
        let mut start = 12 + 4 * csrc;
        if data[0] & 0x10 != 0 {
            let ext = data.get(start..start + 4)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
        }
        let mut end = data.len();
        if data[0] & 0x20 != 0 {
            let pad = usize::from(*data.last()?);
            end = end.checked_sub(pad)?;
        }
        if start >= end {
            return None;
        }
        Some(RtpView {
            marker: data[1] & 0x80 != 0,
            sequence_number: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
            payload_start: start,
            payload_end: end,
        })
    }

    /// The payload within the packet this view was parsed from.
    pub(crate) fn payload<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        data.get(self.payload_start..self.payload_end)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_skips_csrcs_extensions_and_padding() {
        // V=2, P=1, X=1, CC=1; M=1, PT=96; seq 0x0102; ts; ssrc; one CSRC; a one-word
        // extension; payload "abc"; two bytes of padding.
        let mut p = vec![0xb1, 0xe0, 1, 2, 0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
        p.extend_from_slice(b"abc");
        p.extend_from_slice(&[0, 2]);
        let v = RtpView::parse(&p).expect("valid");
        assert!(v.marker);
        assert_eq!(v.sequence_number, 0x0102);
        assert_eq!(v.timestamp, 9);
        assert_eq!(v.ssrc, 0xdead_beef);
        assert_eq!(v.payload(&p), b"abc");
        for len in 0..p.len() {
            let _ = RtpView::parse(&p[..len]);
        }
        assert_eq!(RtpView::parse(&[0x40; 20]), None, "version 1");
    }
}
