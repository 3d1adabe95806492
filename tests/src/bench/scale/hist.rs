//! A latency recorder many tasks share: every sample kept (a bench run records at most a few
//! hundred thousand), percentiles by nearest rank.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Samples at most; later ones are counted but not kept, so memory stays bounded.
const MAX_SAMPLES: usize = 2_000_000;

/// Shared latency samples.
#[derive(Debug, Default)]
pub struct Hist {
    samples_us: Mutex<Vec<u64>>,
}

impl Hist {
    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut s = self.samples_us.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() < MAX_SAMPLES {
            s.push(us);
        }
    }

    /// Takes every sample so far, leaving the recorder empty (one phase's samples).
    pub fn take(&self) -> Summary {
        let mut s = std::mem::take(&mut *self.samples_us.lock().unwrap_or_else(|p| p.into_inner()));
        Summary::of(&mut s)
    }
}

/// Count and percentiles of one phase's samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
}

impl Summary {
    /// The summary of these samples (microseconds, any order).
    pub fn of(samples_us: &mut [u64]) -> Self {
        samples_us.sort_unstable();
        let n = samples_us.len();
        let at = |p: f64| -> Option<f64> {
            if n == 0 {
                return None;
            }
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            Some(samples_us[rank - 1] as f64 / 1000.0)
        };
        Self {
            count: n,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// `12.3 ms`, or `–` without samples.
pub fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) if ms >= 10.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.2} ms"),
        None => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, Some(50.0));
        assert_eq!(s.p99_ms, Some(99.0));
        assert_eq!(s.max_ms, Some(100.0));
        assert_eq!(Summary::of(&mut []).p50_ms, None);
    }

    #[test]
    fn take_empties_the_recorder() {
        let h = Hist::default();
        h.record(Duration::from_millis(3));
        assert_eq!(h.take().count, 1);
        assert_eq!(h.take().count, 0);
    }
}
