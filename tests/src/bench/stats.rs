//! Latency samples, percentiles, and the number formats of the reports.

use std::time::Duration;

/// The outcome of one measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Latencies of the successful calls in nanoseconds, sorted.
    latencies_ns: Vec<u64>,
    /// Failed calls.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// From the start of the measurement until the last caller finished its last call.
    pub elapsed: Duration,
    /// Concurrent callers.
    pub callers: usize,
}

impl Sample {
    /// A sample of these latencies (any order).
    pub fn new(
        mut latencies_ns: Vec<u64>,
        errors: u64,
        first_error: Option<String>,
        elapsed: Duration,
        callers: usize,
    ) -> Self {
        latencies_ns.sort_unstable();
        Self {
            latencies_ns,
            errors,
            first_error,
            elapsed,
            callers,
        }
    }

    /// Successful calls.
    pub fn calls(&self) -> usize {
        self.latencies_ns.len()
    }

    /// Successful calls per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.calls() as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`-quantile (0 < p ≤ 1) of the latencies by the nearest-rank method; `None` without
    /// successful calls.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.latencies_ns.len();
        if n == 0 {
            return None;
        }
        let rank = (p * n as f64).ceil() as usize;
        let i = rank.clamp(1, n) - 1;
        Some(Duration::from_nanos(self.latencies_ns[i]))
    }

    /// The median latency.
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.50)
    }

    /// The 99th-percentile latency.
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(0.99)
    }

    /// The 99.9th-percentile latency.
    pub fn p999(&self) -> Option<Duration> {
        self.percentile(0.999)
    }
}

/// `a / b`, or `None` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// `a / b` of two latencies.
pub fn latency_ratio(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    ratio(a?.as_secs_f64(), b?.as_secs_f64())
}

/// "87 µs", "412 µs", "1.93 ms", "12.4 ms".
pub fn fmt_latency(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "–".into();
    };
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// "12 345".
pub fn fmt_rate(per_sec: f64) -> String {
    let n = per_sec.round() as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// "0.93", or "–".
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Sample::new(
            (1..=100).rev().collect(),
            0,
            None,
            Duration::from_secs(1),
            1,
        );
        assert_eq!(s.p50(), Some(Duration::from_nanos(50)));
        assert_eq!(s.p99(), Some(Duration::from_nanos(99)));
        assert_eq!(s.percentile(1.0), Some(Duration::from_nanos(100)));
        assert_eq!(s.throughput(), 100.0);
        let empty = Sample::new(Vec::new(), 3, None, Duration::ZERO, 1);
        assert_eq!(empty.p50(), None);
        assert_eq!(empty.throughput(), 0.0);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_rate(1_234_567.4), "1 234 567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_latency(Some(Duration::from_micros(87))), "87 µs");
        assert_eq!(fmt_latency(Some(Duration::from_micros(1930))), "1.93 ms");
        assert_eq!(fmt_ratio(ratio(1.0, 0.0)), "–");
    }
}
