//! Admission control of claims: a bounded number of claim transactions in flight per
//! replica, so that a storm of stream starts cannot starve lease renewals.
//!
//! Every call that may write a claim (a `Publish`, a `Resolve` that the cache alone cannot
//! answer) takes a slot before it touches etcd and gives it back when it ends. When every
//! slot is taken the call is refused at once with RESOURCE_EXHAUSTED and a retry hint in
//! the `grpc-retry-pushback-ms` metadata ([`strata_proto::pushback`]); nodes wait at least
//! that long (and at least their backoff) before asking again. Keep-alives never come here
//! (they renew over their own etcd connection, `kv/lease_stream.rs`) and neither do
//! resolves answered from the cache, so both go on while claims are refused.
//!
//! The rule is the sans-IO [`Budget`]; [`Admission`] is its thread-safe shell.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::metrics::Metrics;

/// Claims in flight per replica by default (`--claims-in-flight`).
///
/// Each claim is one or two etcd transactions (plus a wait for the cache); 32 in flight keeps
/// etcd's queue a few milliseconds deep on a small machine while a burst still proceeds at
/// etcd's transaction rate.
pub const DEFAULT_CLAIMS_IN_FLIGHT: usize = 32;
/// The shortest retry hint.
pub const MIN_RETRY: Duration = Duration::from_millis(20);
/// The longest retry hint.
pub const MAX_RETRY: Duration = Duration::from_secs(2);
/// What a claim is assumed to take before one has been measured.
const FIRST_HOLD: Duration = Duration::from_millis(50);
/// Hints are spread over `base × 1 .. base × (1 + SPREAD-1)/2`, in steps of half the base,
/// so refused callers do not all come back at the same moment.
const SPREAD: u32 = 6;

/// The admission rule: at most `limit` claims in flight (0: no limit), and for a refused one
/// how long to wait. The hint is about twice the smoothed time a claim holds its slot (a
/// slot frees about that often per `limit` claims), spread so that the callers refused
/// together return apart.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: usize,
    in_flight: usize,
    /// Smoothed time a claim held its slot (EWMA, 1/8 per sample).
    hold: Duration,
    /// Refusals so far, to spread the hints.
    refused: u64,
}

impl Budget {
    /// At most `limit` claims in flight; 0 admits everything.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            in_flight: 0,
            hold: FIRST_HOLD,
            refused: 0,
        }
    }

    /// Takes a slot, or answers how long the caller should wait before trying again.
    pub fn admit(&mut self) -> Result<(), Duration> {
        if self.limit == 0 || self.in_flight < self.limit {
            self.in_flight += 1;
            return Ok(());
        }
        let step = (self.refused % u64::from(SPREAD)) as u32;
        self.refused += 1;
        let base = self.hold.saturating_mul(2);
        let hint = base + (base / 2) * step;
        Err(hint.clamp(MIN_RETRY, MAX_RETRY))
    }

    /// A claim admitted earlier ended after holding its slot for `held`.
    pub fn done(&mut self, held: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        // EWMA with weight 1/8: hold += (held - hold) / 8.
        self.hold = if held >= self.hold {
            self.hold + (held - self.hold) / 8
        } else {
            self.hold - (self.hold - held) / 8
        };
    }

    /// Claims in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// The replica's admission control of claims.
#[derive(Clone)]
pub struct Admission {
    budget: Arc<Mutex<Budget>>,
}

/// A claim's slot, given back when dropped.
#[must_use = "the slot is given back when this is dropped"]
pub struct Slot {
    budget: Arc<Mutex<Budget>>,
    since: Instant,
}

impl Admission {
    /// At most `limit` claims in flight (0: no limit).
    pub fn new(limit: usize) -> Self {
        Self {
            budget: Arc::new(Mutex::new(Budget::new(limit))),
        }
    }

    /// A slot for one claim, or RESOURCE_EXHAUSTED with a retry hint (counted in `metrics`).
    pub fn admit(&self, metrics: &Metrics) -> Result<Slot, Error> {
        let verdict = self
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit();
        match verdict {
            Ok(()) => Ok(Slot {
                budget: self.budget.clone(),
                since: Instant::now(),
            }),
            Err(retry_after) => {
                metrics.claims_rejected.inc();
                Err(Error::ResourceExhausted {
                    message: "too many stream starts in flight on this replica; retry later".into(),
                    retry_after,
                })
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .done(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn admits_up_to_the_limit_then_refuses_until_a_slot_frees() {
        let mut b = Budget::new(2);
        assert!(b.admit().is_ok());
        assert!(b.admit().is_ok());
        assert!(b.admit().is_err());
        assert_eq!(b.in_flight(), 2);
        b.done(MS(50));
        assert!(b.admit().is_ok());
        assert!(b.admit().is_err());
    }

    #[test]
    fn zero_admits_everything() {
        let mut b = Budget::new(0);
        for _ in 0..10_000 {
            assert!(b.admit().is_ok());
        }
    }

    #[test]
    fn the_hint_follows_the_measured_hold_time_and_stays_bounded() {
        let mut b = Budget::new(1);
        assert!(b.admit().is_ok());
        // Before any measurement: twice the assumed 50 ms.
        assert_eq!(b.admit(), Err(MS(100)));
        // Claims taking 400 ms pull the smoothed hold time up towards 400 ms.
        for _ in 0..40 {
            b.done(MS(400));
            assert!(b.admit().is_ok());
        }
        let slow = b.admit().unwrap_err();
        assert!(slow >= MS(700) && slow <= MAX_RETRY, "{slow:?}");
        // Claims taking 10 s: the hint is capped.
        for _ in 0..80 {
            b.done(Duration::from_secs(10));
            assert!(b.admit().is_ok());
        }
        for _ in 0..SPREAD {
            assert_eq!(b.admit(), Err(MAX_RETRY));
        }
        // Instant claims: never below the floor.
        for _ in 0..200 {
            b.done(Duration::ZERO);
            assert!(b.admit().is_ok());
        }
        assert_eq!(b.admit(), Err(MIN_RETRY));
    }

    #[test]
    fn refused_callers_are_told_different_times() {
        let mut b = Budget::new(1);
        assert!(b.admit().is_ok());
        let hints: Vec<_> = (0..SPREAD).map(|_| b.admit().unwrap_err()).collect();
        let want: Vec<_> = (0..u64::from(SPREAD)).map(|i| MS(100 + 50 * i)).collect();
        assert_eq!(hints, want);
        // The spread repeats.
        assert_eq!(b.admit(), Err(MS(100)));
    }

    #[test]
    fn a_dropped_slot_is_given_back() {
        let metrics = Metrics::default();
        let a = Admission::new(1);
        let slot = a.admit(&metrics).ok();
        assert!(slot.is_some());
        let refused = a.admit(&metrics);
        assert!(matches!(refused, Err(Error::ResourceExhausted { .. })));
        assert_eq!(metrics.claims_rejected.get(), 1);
        drop(slot);
        assert!(a.admit(&metrics).is_ok());
    }
}
