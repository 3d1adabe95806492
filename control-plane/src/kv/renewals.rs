//! Lease renewals multiplexed over one etcd LeaseKeepAlive stream: the sans-IO core.
//!
//! etcd's LeaseKeepAlive is a bidirectional stream: every request names a lease, every answer
//! names the lease and its new TTL (0: the lease is unknown). One stream carries the renewals
//! of every node a replica serves, instead of a stream opened per renewal. This core decides
//! what to write and whom an answer wakes; the shell (`lease_stream.rs`) owns the stream, the
//! clock and the reconnects.
//!
//! - **Coalescing.** A renewal asked for while the same lease's renewal is queued, or was
//!   written less than `join_age` ago, joins it. One written earlier may have renewed the
//!   lease well before the caller asked, so the caller gets the next renewal instead.
//! - **Window.** At most `window` renewals are unanswered on the stream at once (etcd serves
//!   a stream's requests one after another); the rest wait here, in order.
//! - **Deadlines.** A waiter not answered within `timeout` fails with `Unavailable`; a stream
//!   whose oldest renewal went unanswered that long is stalled and the shell replaces it.
//! - **Reconnects.** Renewals written to a stream that broke are written again to the next
//!   one (renewing twice is harmless); when no stream can be opened every waiter fails at once.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::KvError;

/// Waiters woken by an event, each with its result.
pub type Wake<W> = Vec<(W, Result<(), KvError>)>;

/// The stream's state as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No stream.
    Down,
    /// A stream is being opened with one renewal written to it (etcd answers the stream's
    /// headers together with its first answer).
    Opening,
    /// Open: renewals are written as the window allows.
    Up,
}

/// One lease with renewals asked for.
struct Entry<W> {
    /// Waiters the renewal in hand answers, with their deadlines (ascending).
    waiters: Vec<(Instant, W)>,
    /// When the renewal was written to the stream; `None` while it is queued.
    sent_at: Option<Instant>,
    /// Waiters that came too long after the renewal was written: they get the next one.
    later: Vec<(Instant, W)>,
}

/// Renewals waiting for a stream, written to it, and their waiters.
pub struct Renewals<W> {
    timeout: Duration,
    window: usize,
    join_age: Duration,
    link: Link,
    leases: HashMap<i64, Entry<W>>,
    /// Leases to write, in the order they were asked for (may name leases already written or
    /// gone: skipped).
    queue: VecDeque<i64>,
    /// Every waiter's deadline in arrival order, so the earliest is in front.
    deadlines: VecDeque<(Instant, i64)>,
    /// Written renewals in order, to find the oldest unanswered one.
    sent: VecDeque<(Instant, i64)>,
    in_flight: usize,
    coalesced: u64,
}

impl<W> Renewals<W> {
    /// A core whose waiters wait at most `timeout`, with at most `window` (at least 1)
    /// renewals unanswered on the stream, and renewals joinable for `join_age` after writing.
    pub fn new(timeout: Duration, window: usize, join_age: Duration) -> Self {
        Self {
            timeout,
            window: window.max(1),
            join_age,
            link: Link::Down,
            leases: HashMap::new(),
            queue: VecDeque::new(),
            deadlines: VecDeque::new(),
            sent: VecDeque::new(),
            in_flight: 0,
            coalesced: 0,
        }
    }

    /// A renewal of `lease` asked for at `now`, answered to `waiter`.
    pub fn request(&mut self, now: Instant, lease: i64, waiter: W) {
        let deadline = now + self.timeout;
        self.deadlines.push_back((deadline, lease));
        let Some(entry) = self.leases.get_mut(&lease) else {
            self.leases.insert(
                lease,
                Entry {
                    waiters: vec![(deadline, waiter)],
                    sent_at: None,
                    later: Vec::new(),
                },
            );
            self.queue.push_back(lease);
            return;
        };
        match entry.sent_at {
            Some(at) if now.saturating_duration_since(at) > self.join_age => {
                entry.later.push((deadline, waiter));
            }
            _ => {
                entry.waiters.push((deadline, waiter));
                self.coalesced += 1;
            }
        }
    }

    /// Renewals that joined one already asked for, since the start.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// Whether renewals wait for a stream that is not open.
    pub fn wants_stream(&self) -> bool {
        self.link == Link::Down && !self.leases.is_empty()
    }

    /// Starts opening a stream: the first renewal to write with it, or `None` when nothing
    /// waits (no stream is needed then).
    pub fn open(&mut self, now: Instant) -> Option<i64> {
        if self.link != Link::Down {
            return None;
        }
        let lease = self.pop_queued()?;
        self.link = Link::Opening;
        self.mark_sent(now, lease);
        Some(lease)
    }

    /// The stream opened: the window is open.
    pub fn opened(&mut self) {
        if self.link == Link::Opening {
            self.link = Link::Up;
        }
    }

    /// The next renewal to write, while the stream is up and the window has room.
    pub fn poll_send(&mut self, now: Instant) -> Option<i64> {
        if self.link != Link::Up || self.in_flight >= self.window {
            return None;
        }
        let lease = self.pop_queued()?;
        self.mark_sent(now, lease);
        Some(lease)
    }

    fn pop_queued(&mut self) -> Option<i64> {
        while let Some(lease) = self.queue.pop_front() {
            if self.leases.get(&lease).is_some_and(|e| e.sent_at.is_none()) {
                return Some(lease);
            }
        }
        None
    }

    fn mark_sent(&mut self, now: Instant, lease: i64) {
        if let Some(entry) = self.leases.get_mut(&lease) {
            entry.sent_at = Some(now);
            self.in_flight += 1;
            self.sent.push_back((now, lease));
        }
    }

    /// etcd answered a renewal of `lease` with `ttl` seconds (0 or less: lease unknown).
    /// An answer to nothing written (a duplicate) wakes nobody.
    pub fn answered(&mut self, lease: i64, ttl: i64) -> Wake<W> {
        let Some(entry) = self.leases.get_mut(&lease) else {
            return Vec::new();
        };
        if entry.sent_at.is_none() {
            return Vec::new();
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let result = if ttl > 0 {
            Ok(())
        } else {
            Err(KvError::LeaseNotFound(lease))
        };
        let woken = std::mem::take(&mut entry.waiters);
        if entry.later.is_empty() {
            self.leases.remove(&lease);
        } else {
            entry.waiters = std::mem::take(&mut entry.later);
            entry.sent_at = None;
            self.queue.push_back(lease);
        }
        woken
            .into_iter()
            .map(|(_, w)| (w, result.clone()))
            .collect()
    }

    /// The stream broke (or was given up as stalled): renewals written to it go first to
    /// the next one.
    pub fn disconnected(&mut self) {
        self.link = Link::Down;
        self.in_flight = 0;
        let mut again = Vec::new();
        for (at, lease) in self.sent.drain(..) {
            if let Some(entry) = self.leases.get_mut(&lease)
                && entry.sent_at == Some(at)
            {
                entry.sent_at = None;
                again.push(lease);
            }
        }
        for lease in again.into_iter().rev() {
            self.queue.push_front(lease);
        }
    }

    /// No stream could be opened on any member: every waiter fails now, not at its deadline.
    pub fn fail_all(&mut self, why: &str) -> Wake<W> {
        self.link = Link::Down;
        self.in_flight = 0;
        self.queue.clear();
        self.sent.clear();
        self.deadlines.clear();
        let err = KvError::Unavailable(format!("no lease keep-alive stream: {why}"));
        self.leases
            .drain()
            .flat_map(|(_, e)| e.waiters.into_iter().chain(e.later))
            .map(|(_, w)| (w, Err(err.clone())))
            .collect()
    }

    /// Waiters whose deadline passed fail with `Unavailable`.
    pub fn expire(&mut self, now: Instant) -> Wake<W> {
        let mut woken = Vec::new();
        while let Some(&(deadline, lease)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(entry) = self.leases.get_mut(&lease) else {
                continue;
            };
            for list in [&mut entry.waiters, &mut entry.later] {
                let due = list.partition_point(|(d, _)| *d <= now);
                woken.extend(list.drain(..due).map(|(_, w)| w));
            }
            // A written renewal keeps its place in the window until it is answered.
            if entry.waiters.is_empty() && entry.later.is_empty() && entry.sent_at.is_none() {
                self.leases.remove(&lease);
            }
        }
        let err = KvError::Unavailable(format!(
            "lease renewal not answered within {:?}",
            self.timeout
        ));
        woken.into_iter().map(|w| (w, Err(err.clone()))).collect()
    }

    /// Whether the oldest unanswered renewal on the stream has waited a whole timeout: the
    /// stream is stuck and should be replaced.
    pub fn stalled(&mut self, now: Instant) -> bool {
        while let Some(&(at, lease)) = self.sent.front() {
            match self.leases.get(&lease) {
                Some(e) if e.sent_at == Some(at) => return now >= at + self.timeout,
                _ => {
                    self.sent.pop_front();
                }
            }
        }
        false
    }

    /// When [`expire`](Self::expire) or [`stalled`](Self::stalled) next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let waiter = self.deadlines.front().map(|&(d, _)| d);
        let stall = self.sent.front().map(|&(at, _)| at + self.timeout);
        match (waiter, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
#[path = "renewals_tests.rs"]
mod tests;
