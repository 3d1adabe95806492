//! Which RTP sequence numbers of one stream never arrived. A retransmission (an older number
//! arriving late) fills its hole instead of counting as a new discontinuity, so a player that
//! NACKs can still be checked for numbers the sender never produced. Sans-IO.

use std::collections::BTreeSet;

/// At most this many missing numbers are remembered (a longer jump is recorded as its first
/// numbers only).
const MAX_HOLES: u64 = 4_096;

/// Missing sequence numbers, extended past the 16-bit wrap.
#[derive(Debug, Clone, Default)]
pub struct SeqHoles {
    highest: Option<u64>,
    missing: BTreeSet<u64>,
}

impl SeqHoles {
    /// A packet with this sequence number arrived.
    pub fn on_packet(&mut self, seq: u16) {
        let Some(h) = self.highest else {
            // Start one wrap in, so that numbers just before the first stay positive.
            self.highest = Some((1 << 16) + u64::from(seq));
            return;
        };
        let mut diff = i64::from(seq) - (h & 0xffff) as i64;
        if diff > 1 << 15 {
            diff -= 1 << 16;
        } else if diff < -(1 << 15) {
            diff += 1 << 16;
        }
        let ext = h.saturating_add_signed(diff);
        if ext > h {
            for n in h + 1..ext.min(h + 1 + MAX_HOLES) {
                self.missing.insert(n);
            }
            self.highest = Some(ext);
        } else {
            self.missing.remove(&ext);
        }
    }

    /// The highest (extended) number so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// How many numbers above `ext` are still missing.
    pub fn missing_above(&self, ext: u64) -> usize {
        self.missing.range(ext + 1..).count()
    }

    /// How many numbers are still missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_fill_holes_and_the_wrap_is_followed() {
        let mut h = SeqHoles::default();
        for s in [65_533u16, 65_534, 1, 2] {
            h.on_packet(s);
        }
        // 65535 and 0 are missing across the wrap.
        assert_eq!(h.missing(), 2);
        let top = h.highest().unwrap_or_default();
        h.on_packet(65_535);
        assert_eq!(h.missing(), 1);
        h.on_packet(0);
        assert_eq!(h.missing(), 0);
        // A duplicate changes nothing; a jump leaves holes above the old top.
        h.on_packet(2);
        h.on_packet(6);
        assert_eq!(h.missing_above(top), 3);
        assert_eq!(h.missing_above(top + 3), 0);
    }
}
