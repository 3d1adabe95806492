//! What each track of a stream brings into a loop per period: its rate, and the share of its
//! packets lost before they reached the node (sequence numbers that never arrived). The layer
//! choice compares layers by rate, and discounts upstream loss from what a player reports:
//! loss every player sees is not the player's path. Sans-IO.

/// Largest forward sequence step counted as loss; beyond it the source restarted.
const MAX_STEP: u16 = 1_000;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    bytes: u64,
    received: u64,
    expected: u64,
    last_seq: Option<u16>,
}

/// Per-track counters of one stream in one loop, indexed by catalog track id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flow {
    slots: Vec<Slot>,
    /// Last period: bytes/s by track id.
    rates: Vec<u64>,
    /// Last period: fraction lost upstream by track id.
    loss: Vec<f32>,
}

impl Flow {
    /// Counters for track ids below `tracks`.
    pub(crate) fn new(tracks: usize) -> Flow {
        Flow {
            slots: vec![Slot::default(); tracks],
            rates: vec![0; tracks],
            loss: vec![0.0; tracks],
        }
    }

    /// One packet of `track`, `len` bytes, with this RTP sequence number.
    pub(crate) fn on_packet(&mut self, track: u8, len: usize, seq: Option<u16>) {
        let Some(slot) = self.slots.get_mut(usize::from(track)) else {
            return;
        };
        slot.bytes += len as u64;
        slot.received += 1;
        let step = match (slot.last_seq, seq) {
            (Some(last), Some(seq)) => seq.wrapping_sub(last),
            _ => 1,
        };
        if (1..=MAX_STEP).contains(&step) {
            slot.expected += u64::from(step);
            slot.last_seq = seq;
        } else if step > MAX_STEP && step < u16::MAX - MAX_STEP {
            // A restart: counts as one, no loss.
            slot.expected += 1;
            slot.last_seq = seq;
        }
        // Otherwise late or duplicate: it fills a hole counted before (a duplicate can make
        // `received` exceed `expected`; the loss is clamped at 0).
    }

    /// Ends a period of `secs` seconds: rates and upstream loss become the period's.
    pub(crate) fn end_period(&mut self, secs: f64) {
        for ((slot, rate), loss) in self
            .slots
            .iter_mut()
            .zip(self.rates.iter_mut())
            .zip(self.loss.iter_mut())
        {
            *rate = (slot.bytes as f64 / secs) as u64;
            *loss = if slot.expected > 0 {
                (1.0 - slot.received as f32 / slot.expected as f32).clamp(0.0, 1.0)
            } else {
                0.0
            };
            slot.bytes = 0;
            slot.received = 0;
            slot.expected = 0;
        }
    }

    /// Bytes/s by track id, last period.
    pub(crate) fn rates(&self) -> &[u64] {
        &self.rates
    }

    /// Fraction lost upstream by track id, last period.
    pub(crate) fn loss(&self) -> &[f32] {
        &self.loss
    }

    /// All tracks' bytes/s, last period.
    pub(crate) fn total_rate(&self) -> u64 {
        self.rates.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_upstream_loss_per_track() {
        let mut flow = Flow::new(2);
        // Track 0: 100 packets of 1,000 bytes, 10 of the numbers never arrive.
        for seq in (0u16..110).filter(|s| s % 11 != 5) {
            flow.on_packet(0, 1_000, Some(seq.wrapping_add(65_500)));
        }
        // Track 1: clean, one late duplicate.
        for seq in 0u16..50 {
            flow.on_packet(1, 100, Some(seq));
        }
        flow.on_packet(1, 100, Some(10));
        // An id beyond the catalog is ignored.
        flow.on_packet(7, 100, Some(1));
        flow.end_period(2.0);
        assert_eq!(flow.rates(), [50_000, 2_550]);
        assert_eq!(flow.total_rate(), 52_550);
        assert!(
            (flow.loss()[0] - 10.0 / 109.0).abs() < 0.01,
            "{:?}",
            flow.loss()
        );
        assert_eq!(flow.loss()[1], 0.0);
        // A new period starts from zero; a source restart is no loss.
        flow.on_packet(0, 10, Some(30_000));
        flow.on_packet(0, 10, Some(30_001));
        flow.end_period(1.0);
        assert_eq!(flow.rates(), [20, 0]);
        assert_eq!(flow.loss(), [0.0, 0.0]);
    }
}
