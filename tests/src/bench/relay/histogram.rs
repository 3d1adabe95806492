//! Exact latency percentiles at 1 µs resolution, recorded lock-free from many tasks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Samples up to this many µs are kept exactly; longer ones only count and set the max.
const RANGE_US: usize = 100_000;

/// A histogram with one bucket per microsecond, and an on/off switch so that only the
/// measurement window is recorded.
#[derive(Debug)]
pub struct UsHistogram {
    buckets: Vec<AtomicU64>,
    over: AtomicU64,
    max_us: AtomicU64,
    recording: AtomicBool,
}

impl Default for UsHistogram {
    fn default() -> Self {
        UsHistogram {
            buckets: (0..RANGE_US).map(|_| AtomicU64::new(0)).collect(),
            over: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            recording: AtomicBool::new(false),
        }
    }
}

impl UsHistogram {
    /// Start or stop recording.
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Record one sample, if recording.
    pub fn record(&self, us: u64) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        match self.buckets.get(us as usize) {
            Some(bucket) => bucket.fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.over.load(Ordering::Relaxed)
    }

    /// The `p`-quantile (0 < p ≤ 1) by the nearest-rank method; `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (us, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(Duration::from_micros(us as u64));
            }
        }
        Some(self.max())
    }

    /// The largest sample.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_over_microsecond_buckets() {
        let h = UsHistogram::default();
        h.record(5);
        assert_eq!(h.count(), 0, "not recording yet");
        h.set_recording(true);
        for us in 1..=100 {
            h.record(us);
        }
        h.record(1_000_000);
        assert_eq!(h.count(), 101);
        assert_eq!(h.percentile(0.5), Some(Duration::from_micros(51)));
        assert_eq!(h.percentile(0.99), Some(Duration::from_micros(100)));
        assert_eq!(h.percentile(1.0), Some(Duration::from_secs(1)));
        assert_eq!(h.max(), Duration::from_secs(1));
        assert_eq!(UsHistogram::default().percentile(0.5), None);
    }
}
