//! Retransmission with a budget: a player's NACKs cannot make the node send more than a
//! share of the stream's bitrate, and a packet is not resent to the same player twice within
//! about one round trip. Sans-IO: time comes in as an argument.

use std::time::{Duration, Instant};

use strata_media::TrackId;

/// Share of the stream's bitrate a player may take in retransmissions.
pub(crate) const BUDGET_SHARE: f64 = 0.15;
/// Budget of a player before the stream's bitrate is known, and its floor, in bytes/s.
pub(crate) const MIN_BUDGET_BYTES_PER_SEC: f64 = 16_000.0;
/// How much unused budget may accumulate, in seconds of budget.
const BURST_SECS: f64 = 0.25;
/// Resends remembered per player for de-duplication.
const RECENT: usize = 128;
/// The shortest de-duplication window, whatever the measured RTT.
const MIN_WINDOW: Duration = Duration::from_millis(20);

/// What to do with one NACKed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NackVerdict {
    /// Resend it.
    Send,
    /// Resent to this player within about one RTT already.
    Duplicate,
    /// The player's budget is spent.
    OverBudget,
}

/// One player's retransmission budget: a token bucket in bytes plus recent resends.
#[derive(Debug, Clone)]
pub(crate) struct NackBudget {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
    recent: Vec<(TrackId, u16, Instant)>,
    next: usize,
}

impl NackBudget {
    pub(crate) fn new() -> NackBudget {
        NackBudget {
            rate: MIN_BUDGET_BYTES_PER_SEC,
            tokens: MIN_BUDGET_BYTES_PER_SEC * BURST_SECS,
            last: None,
            recent: Vec::with_capacity(RECENT),
            next: 0,
        }
    }

    /// Follows the stream's bitrate (bytes/s): the budget is [`BUDGET_SHARE`] of it.
    pub(crate) fn set_stream_rate(&mut self, stream_bytes_per_sec: f64) {
        self.rate = (stream_bytes_per_sec * BUDGET_SHARE).max(MIN_BUDGET_BYTES_PER_SEC);
    }

    /// Decides about resending `len` bytes of `(track, seq)` at `now`.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        track: TrackId,
        seq: u16,
        len: usize,
        rtt: Duration,
    ) -> NackVerdict {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * BURST_SECS);
        }
        self.last = Some(now);
        let len = len as f64;
        if self.tokens < len {
            return NackVerdict::OverBudget;
        }
        let window = rtt.max(MIN_WINDOW);
        let repeated = self.recent.iter().any(|&(t, s, at)| {
            t == track && s == seq && now.saturating_duration_since(at) < window
        });
        if repeated {
            return NackVerdict::Duplicate;
        }
        self.tokens -= len;
        if self.recent.len() < RECENT {
            self.recent.push((track, seq, now));
        } else {
            self.recent[self.next] = (track, seq, now);
            self.next = (self.next + 1) % RECENT;
        }
        NackVerdict::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_held_to_the_budget_and_repeats_are_dropped() {
        let start = Instant::now();
        let mut b = NackBudget::new();
        // A 1 Mbit/s stream: 125 kB/s, so 18.75 kB/s of retransmissions.
        b.set_stream_rate(125_000.0);
        let rtt = Duration::from_millis(40);
        let mut sent = 0usize;
        // Five seconds of 20 NACKs a second, each naming 4,000 packets of 1,200 bytes.
        for tick in 0..100u32 {
            let now = start + Duration::from_millis(u64::from(tick) * 50);
            for seq in 0..4000u16 {
                if b.admit(now, 0, seq, 1200, rtt) == NackVerdict::Send {
                    sent += 1200;
                }
            }
        }
        let allowed = 125_000.0 * BUDGET_SHARE * 5.0 + 125_000.0 * BUDGET_SHARE * BURST_SECS;
        assert!(sent as f64 <= allowed + 1200.0, "{sent} > {allowed}");
        assert!(sent > 0);

        // The same packet twice within one RTT: once.
        let mut b = NackBudget::new();
        b.set_stream_rate(1_000_000.0);
        let later = start + Duration::from_secs(1);
        assert_eq!(b.admit(later, 1, 7, 100, rtt), NackVerdict::Send);
        assert_eq!(
            b.admit(later + Duration::from_millis(10), 1, 7, 100, rtt),
            NackVerdict::Duplicate
        );
        assert_eq!(
            b.admit(later + Duration::from_millis(60), 1, 7, 100, rtt),
            NackVerdict::Send
        );
    }
}
