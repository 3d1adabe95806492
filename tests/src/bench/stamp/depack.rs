//! Reading H.264 stamps at a player: RTP payloads (RFC 6184: single NAL unit, STAP-A, FU-A)
//! back into NAL units, and the stamp of each access unit timed at its last packet.

use std::time::{Duration, Instant};

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
/// Largest NAL unit reassembled from FU-A fragments.
const MAX_NAL: usize = 4 * 1024 * 1024;

/// RTP payloads back into NAL units, sans-IO.
#[derive(Debug, Default)]
pub struct Depacketizer {
    /// The FU-A unit being reassembled, and the sequence number of its last fragment.
    partial: Option<(Vec<u8>, u16)>,
}

impl Depacketizer {
    /// The NAL units `payload` (of the packet numbered `seq`) completes. A FU-A unit missing a
    /// fragment is dropped.
    pub fn push(&mut self, seq: u16, payload: &[u8]) -> Vec<Vec<u8>> {
        let Some(&first) = payload.first() else {
            return Vec::new();
        };
        match first & 0x1f {
            1..=23 => vec![payload.to_vec()],
            STAP_A => stap_a(&payload[1..]),
            FU_A => self.fu_a(seq, payload).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn fu_a(&mut self, seq: u16, payload: &[u8]) -> Option<Vec<u8>> {
        let [indicator, fu, body @ ..] = payload else {
            return None;
        };
        let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
        if start {
            let mut unit = Vec::with_capacity(body.len() + 1);
            unit.push((indicator & 0xe0) | (fu & 0x1f));
            unit.extend_from_slice(body);
            self.partial = Some((unit, seq));
        } else {
            let (mut unit, last) = self.partial.take()?;
            if seq != last.wrapping_add(1) || unit.len() + body.len() > MAX_NAL {
                return None;
            }
            unit.extend_from_slice(body);
            self.partial = Some((unit, seq));
        }
        if end {
            return self.partial.take().map(|(unit, _)| unit);
        }
        None
    }
}

/// The units of a STAP-A payload (after its header byte); a truncated tail is dropped.
fn stap_a(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let [h, l, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*h, *l]));
        let Some(unit) = tail.get(..len) else {
            break;
        };
        if !unit.is_empty() {
            out.push(unit.to_vec());
        }
        rest = &tail[len..];
    }
    out
}

/// Glass-to-glass samples from an H.264 track: the stamp an access unit's SEI carries, to the
/// arrival of its last packet (the marker of the same RTP timestamp).
#[derive(Debug, Default)]
pub struct VideoStamps {
    depack: Depacketizer,
    /// (RTP timestamp, send time) of the access unit whose SEI arrived.
    pending: Option<(u32, Instant)>,
}

impl VideoStamps {
    /// Takes one received packet; returns a sample when it completes a stamped access unit.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        arrival: Instant,
    ) -> Option<Duration> {
        for unit in self.depack.push(seq, payload) {
            if let Some(sent) = super::sei::read(&unit) {
                self.pending = Some((timestamp, sent));
            }
        }
        match self.pending {
            Some((ts, sent)) if marker && ts == timestamp => {
                self.pending = None;
                Some(arrival.saturating_duration_since(sent))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{anchor, sei};
    use super::*;

    fn fu_a(unit: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let (h, body) = (unit[0], &unit[1..]);
        let parts: Vec<&[u8]> = body.chunks(chunk).collect();
        let n = parts.len();
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut fu = h & 0x1f;
                if i == 0 {
                    fu |= 0x80;
                }
                if i + 1 == n {
                    fu |= 0x40;
                }
                [&[(h & 0xe0) | FU_A, fu][..], p].concat()
            })
            .collect()
    }

    #[test]
    fn single_stap_a_and_fu_a_give_back_the_units() {
        let mut d = Depacketizer::default();
        assert_eq!(d.push(1, &[0x41, 9, 9]), vec![vec![0x41, 9, 9]]);
        let stap = [0x18, 0, 2, 0x67, 1, 0, 1, 0x68, 0, 9];
        // The last unit claims 9 bytes and has 0: dropped, the others kept.
        assert_eq!(d.push(2, &stap), vec![vec![0x67, 1], vec![0x68]]);
        let idr: Vec<u8> = std::iter::once(0x65).chain(0..=250u8).collect();
        let frags = fu_a(&idr, 100);
        assert_eq!(frags.len(), 3);
        assert!(d.push(10, &frags[0]).is_empty());
        assert!(d.push(11, &frags[1]).is_empty());
        assert_eq!(d.push(12, &frags[2]), vec![idr.clone()]);
        // A lost middle fragment drops the unit; the next one starts clean.
        assert!(d.push(20, &frags[0]).is_empty());
        assert!(d.push(22, &frags[2]).is_empty());
        assert!(d.push(23, &frags[2]).is_empty(), "no start: nothing");
        assert!(d.push(24, &[]).is_empty());
        assert!(d.push(25, &[0x1c]).is_empty(), "a FU-A without its header");
    }

    #[test]
    fn a_sample_is_the_stamp_to_the_last_packet_of_its_access_unit() {
        let sent = anchor() + Duration::from_millis(100);
        let arrival = sent + Duration::from_millis(7);
        let mut v = VideoStamps::default();
        // SEI alone, then a slice in two fragments; the marker comes with the last one.
        assert_eq!(v.push(1, 9000, false, &sei::build(sent), arrival), None);
        let slice: Vec<u8> = std::iter::once(0x41).chain([5u8; 300]).collect();
        let frags = fu_a(&slice, 200);
        assert_eq!(v.push(2, 9000, false, &frags[0], arrival), None);
        let done = arrival + Duration::from_millis(3);
        assert_eq!(
            v.push(3, 9000, true, &frags[1], done),
            Some(Duration::from_millis(10))
        );
        // An access unit without a stamp gives nothing; a stamp inside a STAP-A counts.
        assert_eq!(v.push(4, 12600, true, &slice, done), None);
        let s = sei::build(sent);
        let mut stap = vec![0x18, 0, s.len() as u8];
        stap.extend_from_slice(&s);
        stap.extend_from_slice(&[0, 2, 0x41, 1]);
        assert_eq!(
            v.push(5, 16200, true, &stap, done),
            Some(Duration::from_millis(10))
        );
    }
}
