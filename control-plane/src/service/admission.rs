//! Admission control of claims: a bounded number of claim transactions in flight per
//! replica, so that a storm of stream starts cannot starve lease renewals.
//!
//! Every call that may write a claim (a `Publish`, a `Resolve` that the cache alone cannot
//! answer) takes a slot before it touches etcd and gives it back when it ends. With every
//! slot taken it waits its turn (first come, first served) in a short queue, at most
//! [`QUEUE_PER_SLOT`] waiting per slot and for at most [`MAX_QUEUE_WAIT`] (under the nodes'
//! 2 s request deadline); past either it is refused with RESOURCE_EXHAUSTED and a retry
//! hint in the `grpc-retry-pushback-ms` metadata ([`strata_proto::pushback`]). Nodes wait at
//! least that long (and at least their backoff) before asking again. Keep-alives never come
//! here (they renew over their own etcd connection, `kv/lease_stream.rs`) and neither do
//! resolves answered from the cache, so both go on while claims wait or are refused.
//!
//! The rule is the sans-IO [`Budget`]; [`Admission`] is its shell around a fair semaphore.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::metrics::Metrics;

/// Claims in flight per replica by default (`--claims-in-flight`).
///
/// Each claim is one or two etcd transactions (plus a wait for the cache); 32 in flight keeps
/// etcd's queue a few milliseconds deep on a small machine while a burst still proceeds at
/// etcd's transaction rate.
pub const DEFAULT_CLAIMS_IN_FLIGHT: usize = 32;
/// Claims that may wait for a slot, per slot.
pub const QUEUE_PER_SLOT: usize = 4;
/// The longest a claim waits for a slot before it is refused.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// The shortest retry hint.
pub const MIN_RETRY: Duration = Duration::from_millis(20);
/// The longest retry hint.
pub const MAX_RETRY: Duration = Duration::from_secs(2);
/// What a claim is assumed to take before one has been measured.
const FIRST_HOLD: Duration = Duration::from_millis(50);
/// Hints are spread over `base × 1 .. base × 1.75`, in quarter steps, so that callers
/// refused together do not all come back at the same moment.
const SPREAD: u32 = 4;

/// The admission rule: at most `limit` claims in flight and `limit × QUEUE_PER_SLOT`
/// waiting (0: no limit), and for a refused one how long to wait: the time the claims ahead
/// of it need (those pending, `limit` at a time, each holding its slot for the smoothed hold
/// time), spread so that the callers refused together return apart.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: usize,
    /// Claims running or waiting.
    pending: usize,
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
            pending: 0,
            hold: FIRST_HOLD,
            refused: 0,
        }
    }

    /// Lets a claim run or wait for a slot, or answers how long the caller should wait
    /// before trying again.
    pub fn arrive(&mut self) -> Result<(), Duration> {
        if self.limit == 0 || self.pending < self.limit * (1 + QUEUE_PER_SLOT) {
            self.pending += 1;
            return Ok(());
        }
        Err(self.refuse())
    }

    /// A claim that arrived waited too long for a slot: it leaves, refused; the hint.
    pub fn gave_up(&mut self) -> Duration {
        self.pending = self.pending.saturating_sub(1);
        self.refuse()
    }

    fn refuse(&mut self) -> Duration {
        let step = (self.refused % u64::from(SPREAD)) as u32;
        self.refused += 1;
        let rounds = self.pending.div_ceil(self.limit.max(1)).max(1) as u32;
        let base = self.hold.saturating_mul(rounds);
        let hint = base + (base / 4) * step;
        hint.clamp(MIN_RETRY, MAX_RETRY)
    }

    /// A claim admitted earlier ended after holding its slot for `held`.
    pub fn done(&mut self, held: Duration) {
        self.pending = self.pending.saturating_sub(1);
        // EWMA with weight 1/8: hold += (held - hold) / 8.
        self.hold = if held >= self.hold {
            self.hold + (held - self.hold) / 8
        } else {
            self.hold - (self.hold - held) / 8
        };
    }

    /// Claims running or waiting now.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

/// The replica's admission control of claims.
#[derive(Clone)]
pub struct Admission {
    budget: Arc<Mutex<Budget>>,
    /// The slots (`None`: no limit); tokio's semaphore serves waiters in order.
    slots: Option<Arc<Semaphore>>,
}

/// A claim's slot, given back when dropped.
#[must_use = "the slot is given back when this is dropped"]
pub struct Slot {
    budget: Arc<Mutex<Budget>>,
    since: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// At most `limit` claims in flight (0: no limit).
    pub fn new(limit: usize) -> Self {
        Self {
            budget: Arc::new(Mutex::new(Budget::new(limit))),
            slots: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
        }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one claim, after waiting for one if need be; or RESOURCE_EXHAUSTED with a
    /// retry hint (counted in `metrics`).
    pub async fn admit(&self, metrics: &Metrics) -> Result<Slot, Error> {
        let verdict = self.budget().arrive();
        if let Err(retry_after) = verdict {
            return Err(refused(metrics, retry_after));
        }
        let permit = match &self.slots {
            None => None,
            Some(slots) => {
                let wait = tokio::time::timeout(MAX_QUEUE_WAIT, slots.clone().acquire_owned());
                match wait.await {
                    Ok(Ok(p)) => Some(p),
                    // Timed out (or closed, which this semaphore never is).
                    _ => {
                        let retry_after = self.budget().gave_up();
                        return Err(refused(metrics, retry_after));
                    }
                }
            }
        };
        Ok(Slot {
            budget: self.budget.clone(),
            since: Instant::now(),
            _permit: permit,
        })
    }
}

fn refused(metrics: &Metrics, retry_after: Duration) -> Error {
    metrics.claims_rejected.inc();
    Error::ResourceExhausted {
        message: "too many stream starts in flight on this replica; retry later".into(),
        retry_after,
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
    /// Claims one slot admits before refusing: itself and its queue.
    const PER_SLOT: usize = 1 + QUEUE_PER_SLOT;

    #[test]
    fn admits_the_slots_and_their_queue_then_refuses_until_one_ends() {
        let mut b = Budget::new(2);
        for _ in 0..2 * PER_SLOT {
            assert!(b.arrive().is_ok());
        }
        assert!(b.arrive().is_err());
        assert_eq!(b.pending(), 2 * PER_SLOT);
        b.done(MS(50));
        assert!(b.arrive().is_ok());
        assert!(b.arrive().is_err());
        // One that waited too long leaves and frees its place.
        let hint = b.gave_up();
        assert!(hint >= MIN_RETRY);
        assert!(b.arrive().is_ok());
    }

    #[test]
    fn zero_admits_everything() {
        let mut b = Budget::new(0);
        for _ in 0..10_000 {
            assert!(b.arrive().is_ok());
        }
    }

    #[test]
    fn the_hint_is_the_time_the_claims_ahead_need_and_stays_bounded() {
        let mut b = Budget::new(1);
        for _ in 0..PER_SLOT {
            assert!(b.arrive().is_ok());
        }
        // Before any measurement: 5 pending × the assumed 50 ms.
        assert_eq!(b.arrive(), Err(MS(250)));
        // Claims taking 100 ms pull the smoothed hold time towards 100 ms.
        for _ in 0..60 {
            b.done(MS(100));
            assert!(b.arrive().is_ok());
        }
        let hint = b.arrive().unwrap_err();
        assert!(hint >= MS(450) && hint <= MS(500) * 5 / 4, "{hint:?}");
        // Claims taking 10 s: the hint is capped.
        for _ in 0..80 {
            b.done(Duration::from_secs(10));
            assert!(b.arrive().is_ok());
        }
        for _ in 0..SPREAD {
            assert_eq!(b.arrive(), Err(MAX_RETRY));
        }
        // Instant claims: never below the floor.
        for _ in 0..200 {
            b.done(Duration::ZERO);
            assert!(b.arrive().is_ok());
        }
        assert_eq!(b.arrive(), Err(MIN_RETRY));
    }

    #[test]
    fn refused_callers_are_told_different_times() {
        let mut b = Budget::new(1);
        for _ in 0..PER_SLOT {
            assert!(b.arrive().is_ok());
        }
        let hints: Vec<_> = (0..SPREAD).map(|_| b.arrive().unwrap_err()).collect();
        let want: Vec<_> = (0..u64::from(SPREAD))
            .map(|i| MS(250) + Duration::from_micros(62_500 * i))
            .collect();
        let close = hints
            .iter()
            .zip(&want)
            .all(|(h, w)| h.abs_diff(*w) <= MS(1));
        assert!(close, "{hints:?} vs {want:?}");
        // The spread repeats.
        assert_eq!(b.arrive(), Err(MS(250)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_waits_its_turn_and_is_refused_after_the_longest_wait() {
        let metrics = Metrics::default();
        let a = Admission::new(1);
        let first = a.admit(&metrics).await.ok();
        assert!(first.is_some());
        // The next waits for the slot; once the first ends it gets it.
        let (a2, m2) = (a.clone(), Arc::new(Metrics::default()));
        let waiting = tokio::spawn(async move { a2.admit(&m2).await.is_ok() });
        tokio::time::sleep(MS(100)).await;
        drop(first);
        assert!(waiting.await.unwrap_or(false));
        // Held by someone who never ends: a waiter is refused after MAX_QUEUE_WAIT.
        let held = a.admit(&metrics).await.ok();
        let t0 = tokio::time::Instant::now();
        let refused = a.admit(&metrics).await;
        assert!(matches!(refused, Err(Error::ResourceExhausted { .. })));
        assert_eq!(t0.elapsed(), MAX_QUEUE_WAIT);
        assert_eq!(metrics.claims_rejected.get(), 1);
        drop(held);
        assert!(a.admit(&metrics).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once() {
        let metrics = Arc::new(Metrics::default());
        let a = Admission::new(1);
        let held = a.admit(&metrics).await.ok();
        let waiters: Vec<_> = (0..QUEUE_PER_SLOT)
            .map(|_| {
                let (a, m) = (a.clone(), metrics.clone());
                tokio::spawn(async move { a.admit(&m).await.is_ok() })
            })
            .collect();
        tokio::task::yield_now().await;
        let t0 = tokio::time::Instant::now();
        assert!(a.admit(&metrics).await.is_err());
        assert_eq!(t0.elapsed(), Duration::ZERO);
        drop(held);
        // The waiters get the slot one after another.
        for w in waiters {
            assert!(w.await.unwrap_or(false));
        }
    }
}
