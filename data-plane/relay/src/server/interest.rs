//! A subscription's layer interest as the serving side applies it: at most
//! one change per interval, the latest one winning. A downstream that flips
//! its interest on every message then costs at most one filter change (and
//! its keyframe requests, themselves coalesced by the hub) per interval.

use std::time::{Duration, Instant};

use strata_media::hub::LayerSet;

/// Changes applied at most this often per subscription.
pub(crate) const APPLY_INTERVAL: Duration = Duration::from_millis(250);

/// Sans-IO: [`on_message`](Self::on_message) for each `LayerInterest`,
/// [`poll`](Self::poll) at [`deadline`](Self::deadline).
#[derive(Debug, Default)]
pub(crate) struct InterestIn {
    applied_at: Option<Instant>,
    pending: Option<LayerSet>,
}

impl InterestIn {
    /// A message arrived: the set to apply now, if the interval allows.
    pub(crate) fn on_message(&mut self, now: Instant, layers: LayerSet) -> Option<LayerSet> {
        self.pending = Some(layers);
        self.poll(now)
    }

    /// The pending set, once the interval since the last change has passed.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<LayerSet> {
        if self.applied_at.is_some_and(|at| now < at + APPLY_INTERVAL) {
            return None;
        }
        let layers = self.pending.take()?;
        self.applied_at = Some(now);
        Some(layers)
    }

    /// When a pending set may be applied.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.pending?;
        Some(
            self.applied_at
                .map_or_else(Instant::now, |at| at + APPLY_INTERVAL),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_applied_once_per_interval_latest_last() {
        let t0 = Instant::now();
        let low = LayerSet::EMPTY.with(strata_media::Layer::Low);
        let mut i = InterestIn::default();
        assert_eq!(i.on_message(t0, low), Some(low));
        let mut applied = 0;
        // 9,990 messages over 1 s, alternating.
        for n in 1..=9_990u64 {
            let now = t0 + Duration::from_micros(n * 100);
            let layers = if n % 2 == 0 { low } else { LayerSet::ALL };
            applied += u32::from(i.on_message(now, layers).is_some());
        }
        assert_eq!(applied, 3, "changes applied in 1 s after the first");
        // The last message (even: low) is applied at the next deadline.
        let at = i.deadline();
        assert_eq!(at, Some(t0 + Duration::from_secs(1)));
        assert_eq!(i.poll(t0 + Duration::from_millis(999)), None);
        assert_eq!(i.poll(t0 + Duration::from_secs(1)), Some(low));
        assert_eq!(i.deadline(), None);
    }
}
