//! H.264 from AVCC (length-prefixed NAL units, ISO/IEC 14496-15) to RTP
//! payloads (RFC 6184, packetization-mode 1: single NAL unit packets and
//! FU-A fragments).

use crate::IngestError;

/// NAL unit types this module looks at.
pub mod nal {
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter (not sent: RTP marks access units itself).
    pub const AUD: u8 = 9;
    /// FU-A fragmentation unit.
    pub const FU_A: u8 = 28;
}

/// The NAL unit type of a NAL unit.
pub fn nal_type(nalu: &[u8]) -> u8 {
    nalu.first().map_or(0, |b| b & 0x1f)
}

/// An `AVCDecoderConfigurationRecord` (the AVC sequence header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// Bytes of each NAL unit's length prefix (1, 2 or 4).
    pub length_size: usize,
    /// Sequence parameter sets.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// Parses a record (ISO/IEC 14496-15 §5.3.3.1).
    pub fn parse(record: &[u8]) -> Result<AvcConfig, IngestError> {
        const BAD: IngestError = IngestError::Malformed("bad AVCDecoderConfigurationRecord");
        let [1, _profile, _compat, _level, len_byte, n_sps, rest @ ..] = record else {
            return Err(BAD);
        };
        let length_size = usize::from(len_byte & 0x03) + 1;
        if length_size == 3 {
            return Err(BAD);
        }
        let mut rest = rest;
        let sps = take_sets(&mut rest, usize::from(n_sps & 0x1f)).ok_or(BAD)?;
        let [n_pps, tail @ ..] = rest else {
            return Err(BAD);
        };
        rest = tail;
        let pps = take_sets(&mut rest, usize::from(*n_pps)).ok_or(BAD)?;
        if sps.is_empty() || pps.is_empty() || sps.iter().any(|s| s.len() < 4) {
            return Err(BAD);
        }
        Ok(AvcConfig {
            length_size,
            sps,
            pps,
        })
    }

    /// `profile-level-id` (RFC 6184 §8.1) from the first SPS: profile_idc,
    /// constraint flags, level_idc, as six hex digits.
    pub fn profile_level_id(&self) -> String {
        let sps = self.sps.first().map(Vec::as_slice).unwrap_or_default();
        match sps {
            [_, p, c, l, ..] => format!("{p:02x}{c:02x}{l:02x}"),
            _ => "42e01f".into(),
        }
    }

    /// The `a=fmtp` parameters a WebRTC player needs for this stream.
    pub fn fmtp(&self) -> String {
        format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
            self.profile_level_id()
        )
    }
}

/// `count` parameter sets, each behind a 16-bit length, from the front of `rest`.
fn take_sets(rest: &mut &[u8], count: usize) -> Option<Vec<Vec<u8>>> {
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let [h, l, tail @ ..] = *rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*h, *l]));
        if len == 0 || tail.len() < len {
            return None;
        }
        sets.push(tail[..len].to_vec());
        *rest = &tail[len..];
    }
    Some(sets)
}

/// Splits an AVCC access unit into its NAL units.
pub fn split_avcc(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>, IngestError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return Err(IngestError::Malformed("truncated NAL length"));
        }
        let (prefix, tail) = rest.split_at(length_size);
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len > tail.len() {
            return Err(IngestError::Malformed("NAL unit longer than its frame"));
        }
        if len > 0 {
            out.push(&tail[..len]);
        }
        rest = &tail[len..];
    }
    Ok(out)
}

/// RTP payloads (RFC 6184 §5.6, §5.8) for one NAL unit: the unit itself if it
/// fits in `max_payload` bytes, FU-A fragments otherwise.
pub fn packetize(nalu: &[u8], max_payload: usize, out: &mut Vec<Vec<u8>>) {
    let Some((&header, body)) = nalu.split_first() else {
        return;
    };
    if nalu.len() <= max_payload {
        out.push(nalu.to_vec());
        return;
    }
    let indicator = (header & 0xe0) | nal::FU_A;
    let chunk = max_payload.saturating_sub(2).max(1);
    let count = body.len().div_ceil(chunk);
    for (i, part) in body.chunks(chunk).enumerate() {
        let mut fu_header = header & 0x1f;
        if i == 0 {
            fu_header |= 0x80;
        }
        if i + 1 == count {
            fu_header |= 0x40;
        }
        let mut p = Vec::with_capacity(part.len() + 2);
        p.push(indicator);
        p.push(fu_header);
        p.extend_from_slice(part);
        out.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01];
    pub(crate) const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    pub(crate) fn record() -> Vec<u8> {
        let mut r = vec![1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, SPS.len() as u8];
        r.extend_from_slice(SPS);
        r.extend_from_slice(&[1, 0, PPS.len() as u8]);
        r.extend_from_slice(PPS);
        r
    }

    #[test]
    fn config_record() {
        let c = AvcConfig::parse(&record()).expect("record");
        assert_eq!(c.length_size, 4);
        assert_eq!(c.sps, vec![SPS.to_vec()]);
        assert_eq!(c.pps, vec![PPS.to_vec()]);
        assert_eq!(c.profile_level_id(), "42c01f");
        assert!(c.fmtp().contains("packetization-mode=1"));
        // Every truncation is an error, never a panic.
        let full = record();
        for len in 0..full.len() {
            assert!(AvcConfig::parse(&full[..len]).is_err(), "len {len}");
        }
        let mut three = full.clone();
        three[4] = 0xfe;
        assert!(AvcConfig::parse(&three).is_err());
    }

    #[test]
    fn avcc_split() {
        let data = [0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41];
        assert_eq!(
            split_avcc(&data, 4).expect("split"),
            vec![&[0x65, 1][..], &[0x41][..]]
        );
        assert!(split_avcc(&data[..3], 4).is_err());
        assert!(split_avcc(&[0, 0, 0, 9, 1], 4).is_err());
        assert_eq!(
            split_avcc(&[2, 0x65, 1], 1).expect("split"),
            vec![&[0x65, 1][..]]
        );
    }

    #[test]
    fn small_units_go_whole_and_large_ones_in_fu_a() {
        let mut out = Vec::new();
        packetize(&[0x65, 1, 2], 10, &mut out);
        assert_eq!(out, vec![vec![0x65, 1, 2]]);
        out.clear();
        let mut big = vec![0x65];
        big.extend((0..25u8).collect::<Vec<_>>());
        packetize(&big, 12, &mut out);
        // 25 body bytes in fragments of 10.
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..2], &[0x7c, 0x85]);
        assert_eq!(&out[1][..2], &[0x7c, 0x05]);
        assert_eq!(&out[2][..2], &[0x7c, 0x45]);
        let joined: Vec<u8> = out.iter().flat_map(|p| p[2..].to_vec()).collect();
        assert_eq!(joined, big[1..].to_vec());
        assert!(out.iter().all(|p| p.len() <= 12));
        out.clear();
        packetize(&[], 12, &mut out);
        assert!(out.is_empty());
    }
}
