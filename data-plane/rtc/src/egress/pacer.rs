//! Per-player pacing of media bursts. A layer switch (or a keyframe of any big layer) hands
//! the player a whole keyframe at once, tens of packets in one loop turn; through a
//! bottleneck with little buffer most of it would be dropped. With a bandwidth estimate the
//! session sends at most [`GAIN`] × the estimate (a token bucket with [`BURST`] of credit);
//! what exceeds it waits in the session's backlog (shared packets, no copies), which the
//! loop's 20 ms tick drains, and is sealed (and transport-cc stamped) only when it goes out,
//! so the estimator never mistakes the wait for the path's queue.
//!
//! Drop policy: the backlog holds at most [`MAX_DELAY`] of sending at the paced rate (and
//! at least [`MIN_QUEUE`] bytes); beyond it the player drops what waits and resumes at the
//! next keyframe (the same as a sink that falls behind). Retransmissions, RTCP and probe
//! padding are not paced (they have budgets of their own). Without an estimate nothing is
//! paced: the hot path then costs one branch per packet. Sans-IO: time comes in as µs.

use std::time::Duration;

/// Pacing rate as a multiple of the estimate.
pub(crate) const GAIN: f64 = 2.5;
/// Credit the bucket can save (sending time at the paced rate).
pub(crate) const BURST: Duration = Duration::from_millis(40);
/// The backlog holds at most this much sending time at the paced rate.
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(500);
/// ... and never less than this many bytes (a keyframe of a small layer).
pub(crate) const MIN_QUEUE: usize = 64 * 1024;
/// Credit never less than two full-size packets.
const MIN_BURST: f64 = 3_000.0;

/// One player's pacer. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// Bytes per µs; 0 when off.
    rate: f64,
    tokens: f64,
    last_us: u64,
}

impl Pacer {
    /// Follows the player's bandwidth estimate (bit/s); `None` turns pacing off.
    pub(crate) fn set_estimate(&mut self, bps: Option<u64>) {
        self.rate = bps.map_or(0.0, |b| b as f64 * GAIN / 8e6);
        if self.rate == 0.0 {
            self.tokens = 0.0;
        }
    }

    /// Whether a packet may go out at `wall_us` (refilling the bucket first).
    pub(crate) fn ready(&mut self, wall_us: u64) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = wall_us.saturating_sub(self.last_us) as f64;
        self.last_us = self.last_us.max(wall_us);
        let cap = (self.rate * BURST.as_micros() as f64).max(MIN_BURST);
        self.tokens = (self.tokens + elapsed * self.rate).min(cap);
        self.tokens > 0.0
    }

    /// `bytes` went out (the credit may go negative: the next packets wait for it).
    pub(crate) fn spend(&mut self, bytes: usize) {
        if self.rate > 0.0 {
            self.tokens -= bytes as f64;
        }
    }

    /// Bytes the backlog may hold while pacing.
    pub(crate) fn queue_limit(&self) -> usize {
        ((self.rate * MAX_DELAY.as_micros() as f64) as usize).max(MIN_QUEUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `count` packets of `size` bytes at `at_us`, then keeps ticking every 20 ms
    /// with queued ones; returns each packet's send time.
    fn burst(pacer: &mut Pacer, at_us: u64, count: usize, size: usize) -> Vec<u64> {
        let mut sent = Vec::new();
        let mut waiting = 0usize;
        for _ in 0..count {
            if waiting == 0 && pacer.ready(at_us) {
                pacer.spend(size);
                sent.push(at_us);
            } else {
                waiting += 1;
            }
        }
        let mut now = at_us;
        while waiting > 0 {
            now += 20_000;
            while waiting > 0 && pacer.ready(now) {
                pacer.spend(size);
                sent.push(now);
                waiting -= 1;
            }
        }
        sent
    }

    #[test]
    fn without_an_estimate_nothing_waits() {
        let mut pacer = Pacer::default();
        let sent = burst(&mut pacer, 1_000_000, 100, 1_200);
        assert!(sent.iter().all(|t| *t == 1_000_000));
    }

    #[test]
    fn a_keyframe_burst_goes_out_at_the_paced_rate() {
        let mut pacer = Pacer::default();
        // 1 Mbit/s estimate: 2.5 Mbit/s paced, 312.5 bytes/ms; 12.5 kB of credit.
        pacer.set_estimate(Some(1_000_000));
        pacer.ready(0);
        let t0 = 10_000_000;
        // A 60-packet keyframe (72 kB): the credit goes at once, the rest at the rate.
        let sent = burst(&mut pacer, t0, 60, 1_200);
        let at_once = sent.iter().filter(|t| **t == t0).count();
        assert!((10..=12).contains(&at_once), "{at_once}");
        let span_ms = (sent.last().copied().unwrap_or(t0) - t0) / 1_000;
        // (72,000 − 12,500) bytes at 312.5 bytes/ms ≈ 190 ms, in 20 ms ticks.
        assert!((180..=220).contains(&span_ms), "{span_ms}");
        // No 20 ms tick sent more than the rate allows plus one packet.
        for tick in sent.chunk_by(|a, b| a == b).skip(1) {
            assert!(tick.len() * 1_200 <= 6_250 + 1_200, "{}", tick.len());
        }
    }

    #[test]
    fn the_queue_is_bounded_by_time_at_the_rate() {
        let mut pacer = Pacer::default();
        assert_eq!(pacer.queue_limit(), MIN_QUEUE);
        pacer.set_estimate(Some(4_000_000));
        // 10 Mbit/s paced: half a second is 625 kB.
        assert_eq!(pacer.queue_limit(), 625_000);
        pacer.set_estimate(Some(100_000));
        assert_eq!(pacer.queue_limit(), MIN_QUEUE);
        // A clock going backwards (a wall-clock step) refills nothing and panics nowhere.
        assert!(pacer.ready(5_000_000));
        pacer.spend(10_000);
        assert!(!pacer.ready(4_000_000));
        pacer.set_estimate(None);
        assert!(pacer.ready(0));
    }
}
