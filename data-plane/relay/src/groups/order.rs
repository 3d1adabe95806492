//! Receiver side: deliver groups in order.
//!
//! Each group travels on its own QUIC stream, and the sender gives newer
//! groups a higher priority, so the first frames of group n+1 often arrive
//! before the last frames of group n. Playing n+1 at once would lose n's tail
//! (a sequence gap at every group boundary). Instead, while group n is still
//! open, frames of newer groups are held back and released when n ends. The
//! wait is bounded: n is given up on (its remaining frames dropped, the group
//! counted as skipped) when it is reset, when a newer group has been waiting
//! for [`OrderLimits::window`], or when the held frames exceed their bounds.
//! Frames of groups older than the one being delivered are dropped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How long and how much [`GroupOrder`] holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderLimits {
    /// Give up on the open group once a newer group has waited this long.
    pub window: Duration,
    /// Give up on the open group when more frames than this are held back.
    pub max_frames: usize,
    /// Give up on the open group when more bytes than this are held back.
    pub max_bytes: usize,
}

/// Frames of a newer group held back while an older group is open.
#[derive(Debug)]
struct Held<T> {
    frames: VecDeque<T>,
    bytes: usize,
    /// `Some(complete)` once the group's stream ended.
    ended: Option<bool>,
    /// When its first frame arrived.
    since: Instant,
}

/// Receiver-side group ordering of one subscription, generic over the frame
/// type so it can be tested with plain values.
///
/// Feed it with [`on_frame`](Self::on_frame) and
/// [`on_group_end`](Self::on_group_end); take frames out, in order, with
/// [`poll`](Self::poll) until `None`; call `poll` again at
/// [`next_deadline`](Self::next_deadline).
#[derive(Debug)]
pub struct GroupOrder<T> {
    limits: OrderLimits,
    /// The group being delivered (or the last one delivered).
    current: Option<u64>,
    /// `current` is still open: its frames pass through, newer ones are held.
    /// When it is not, nothing is held.
    open: bool,
    held: BTreeMap<u64, Held<T>>,
    held_frames: usize,
    held_bytes: usize,
    ready: VecDeque<T>,
    skipped: u64,
    late_frames: u64,
}

impl<T> GroupOrder<T> {
    /// Nothing received yet.
    pub fn new(limits: OrderLimits) -> Self {
        GroupOrder {
            limits,
            current: None,
            open: false,
            held: BTreeMap::new(),
            held_frames: 0,
            held_bytes: 0,
            ready: VecDeque::new(),
            skipped: 0,
            late_frames: 0,
        }
    }

    /// A frame of group `sequence` arrived; `bytes` is its size for the bounds.
    pub fn on_frame(&mut self, now: Instant, sequence: u64, frame: T, bytes: usize) {
        let Some(current) = self.current else {
            self.start(sequence, frame);
            return;
        };
        if sequence < current || (sequence == current && !self.open) {
            // Superseded, given up on, or already ended.
            self.late_frames += 1;
        } else if sequence == current {
            self.ready.push_back(frame);
        } else if !self.open {
            self.start(sequence, frame);
        } else {
            let held = self.held.entry(sequence).or_insert_with(|| Held {
                frames: VecDeque::new(),
                bytes: 0,
                ended: None,
                since: now,
            });
            held.frames.push_back(frame);
            held.bytes += bytes;
            self.held_frames += 1;
            self.held_bytes += bytes;
            while self.open
                && (self.held_frames > self.limits.max_frames
                    || self.held_bytes > self.limits.max_bytes)
            {
                self.give_up();
            }
        }
    }

    /// Group `sequence`'s stream ended: `complete` when it was finished,
    /// false when it was reset.
    pub fn on_group_end(&mut self, _now: Instant, sequence: u64, complete: bool) {
        match self.current {
            Some(current) if sequence == current && self.open => {
                if !complete {
                    self.skipped += 1;
                }
                self.advance();
            }
            // Already delivered to its end or given up on (and counted then).
            Some(current) if sequence <= current => {}
            _ => match self.held.get_mut(&sequence) {
                Some(held) => held.ended = Some(complete),
                // Ended before any of its frames arrived.
                None if !complete => self.skipped += 1,
                None => {}
            },
        }
    }

    /// The next frame to play, if any. Gives up on the open group first if a
    /// newer one has waited past the window.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        while self.next_deadline().is_some_and(|deadline| deadline <= now) {
            self.give_up();
        }
        self.ready.pop_front()
    }

    /// When [`poll`](Self::poll) will give up on the open group, if frames of
    /// a newer group are waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.open {
            return None;
        }
        let oldest = self.held.values().map(|held| held.since).min()?;
        Some(oldest + self.limits.window)
    }

    /// Groups not delivered to their end: reset, given up on, or ended
    /// incomplete while held back.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Frames dropped because their group was older than the one being
    /// delivered, or had been given up on.
    pub fn late_frames(&self) -> u64 {
        self.late_frames
    }

    /// Frames currently held back.
    pub fn held_frames(&self) -> usize {
        self.held_frames
    }

    fn start(&mut self, sequence: u64, frame: T) {
        self.current = Some(sequence);
        self.open = true;
        self.ready.push_back(frame);
    }

    /// Skip the rest of the open group.
    fn give_up(&mut self) {
        self.skipped += 1;
        self.advance();
    }

    /// The open group is over: release held groups, oldest first, up to the
    /// first one still open (which becomes the open group).
    fn advance(&mut self) {
        self.open = false;
        while let Some((sequence, held)) = self.held.pop_first() {
            self.held_frames -= held.frames.len();
            self.held_bytes -= held.bytes;
            self.current = Some(sequence);
            self.ready.extend(held.frames);
            match held.ended {
                Some(complete) => {
                    if !complete {
                        self.skipped += 1;
                    }
                }
                None => {
                    self.open = true;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const LIMITS: OrderLimits = OrderLimits {
        window: Duration::from_millis(150),
        max_frames: 8,
        max_bytes: 10_000,
    };

    /// Frames are (group, index) pairs; every frame is 100 bytes.
    type F = (u64, u32);

    fn order() -> GroupOrder<F> {
        GroupOrder::new(LIMITS)
    }

    fn frame(o: &mut GroupOrder<F>, now: Instant, group: u64, index: u32) {
        o.on_frame(now, group, (group, index), 100);
    }

    fn drain(o: &mut GroupOrder<F>, now: Instant) -> Vec<F> {
        std::iter::from_fn(|| o.poll(now)).collect()
    }

    #[test]
    fn frames_of_one_group_pass_straight_through_in_order() {
        let t0 = Instant::now();
        let mut o = order();
        for i in 0..5 {
            frame(&mut o, t0, 0, i);
            assert_eq!(o.poll(t0), Some((0, i)));
        }
        assert_eq!(o.poll(t0), None);
        assert_eq!(o.next_deadline(), None, "nothing held, no timer");
    }

    #[test]
    fn late_tail_of_a_group_is_delivered_before_the_next_group() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        frame(&mut o, t0, 0, 1);
        assert_eq!(drain(&mut o, t0), [(0, 0), (0, 1)]);

        // Group 1 starts on its own stream before group 0's tail arrives.
        frame(&mut o, t0 + MS, 1, 0);
        frame(&mut o, t0 + 2 * MS, 1, 1);
        assert_eq!(drain(&mut o, t0 + 2 * MS), [], "held back");
        assert_eq!(o.held_frames(), 2);
        assert_eq!(o.next_deadline(), Some(t0 + MS + LIMITS.window));

        frame(&mut o, t0 + 3 * MS, 0, 2);
        frame(&mut o, t0 + 4 * MS, 0, 3);
        assert_eq!(drain(&mut o, t0 + 4 * MS), [(0, 2), (0, 3)]);
        o.on_group_end(t0 + 5 * MS, 0, true);
        assert_eq!(drain(&mut o, t0 + 5 * MS), [(1, 0), (1, 1)]);
        assert_eq!(o.next_deadline(), None);

        frame(&mut o, t0 + 6 * MS, 1, 2);
        assert_eq!(drain(&mut o, t0 + 6 * MS), [(1, 2)], "1 is open now");
        assert_eq!(o.skipped(), 0);
        assert_eq!(o.late_frames(), 0);
    }

    #[test]
    fn a_reset_of_the_open_group_releases_the_next_at_once() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        frame(&mut o, t0, 1, 0);
        assert_eq!(drain(&mut o, t0), [(0, 0)]);
        o.on_group_end(t0 + MS, 0, false);
        assert_eq!(drain(&mut o, t0 + MS), [(1, 0)]);
        assert_eq!(o.skipped(), 1);
        frame(&mut o, t0 + MS, 0, 1);
        assert_eq!(drain(&mut o, t0 + MS), [], "reset group's stray frame");
        assert_eq!(o.late_frames(), 1);
    }

    #[test]
    fn the_window_releases_the_next_group_and_drops_the_rest_of_the_old() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        frame(&mut o, t0 + 10 * MS, 1, 0);
        frame(&mut o, t0 + 20 * MS, 1, 1);
        let deadline = t0 + 10 * MS + LIMITS.window;
        assert_eq!(o.next_deadline(), Some(deadline));
        assert_eq!(drain(&mut o, deadline - MS), [(0, 0)]);
        assert_eq!(drain(&mut o, deadline), [(1, 0), (1, 1)]);
        assert_eq!(o.skipped(), 1);
        assert_eq!(o.next_deadline(), None);

        frame(&mut o, deadline + MS, 0, 1);
        o.on_group_end(deadline + MS, 0, true);
        frame(&mut o, deadline + MS, 1, 2);
        assert_eq!(drain(&mut o, deadline + MS), [(1, 2)]);
        assert_eq!(o.skipped(), 1, "counted once");
        assert_eq!(o.late_frames(), 1);
    }

    #[test]
    fn overflow_gives_up_on_the_open_group() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        for i in 0..LIMITS.max_frames as u32 {
            frame(&mut o, t0, 1, i);
        }
        assert_eq!(drain(&mut o, t0), [(0, 0)], "at the bound: still held");
        frame(&mut o, t0, 1, 8);
        let released = drain(&mut o, t0);
        assert_eq!(released.len(), 9);
        assert!(
            released
                .iter()
                .enumerate()
                .all(|(i, f)| *f == (1, i as u32))
        );
        assert_eq!(o.skipped(), 1);
        assert_eq!(o.held_frames(), 0);

        // The byte bound too: one big frame of a newer group.
        o.on_frame(t0, 2, (2, 0), LIMITS.max_bytes + 1);
        assert_eq!(drain(&mut o, t0), [(2, 0)]);
        assert_eq!(o.skipped(), 2);
    }

    #[test]
    fn several_held_groups_are_released_oldest_first() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        frame(&mut o, t0, 2, 0);
        frame(&mut o, t0, 1, 0);
        frame(&mut o, t0, 2, 1);
        o.on_group_end(t0, 1, true);
        frame(&mut o, t0, 0, 1);
        o.on_group_end(t0, 0, true);
        assert_eq!(drain(&mut o, t0), [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]);
        // 2 is open now; 1 ended while held, so its late frames are dropped.
        frame(&mut o, t0, 1, 1);
        frame(&mut o, t0, 2, 2);
        assert_eq!(drain(&mut o, t0), [(2, 2)]);
        assert_eq!(o.skipped(), 0);
    }

    #[test]
    fn a_held_group_reset_before_release_counts_as_skipped() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        frame(&mut o, t0, 1, 0);
        o.on_group_end(t0, 1, false);
        frame(&mut o, t0, 2, 0);
        o.on_group_end(t0, 0, true);
        assert_eq!(drain(&mut o, t0), [(0, 0), (1, 0), (2, 0)]);
        assert_eq!(o.skipped(), 1);
    }

    #[test]
    fn after_a_group_ends_the_next_one_to_arrive_starts_at_once() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        o.on_group_end(t0, 0, true);
        // Group 1 was dropped by the sender; 2 is next.
        frame(&mut o, t0, 2, 0);
        assert_eq!(drain(&mut o, t0), [(0, 0), (2, 0)]);
        // A group reset before any frame arrived.
        o.on_group_end(t0, 3, false);
        assert_eq!(o.skipped(), 1);
    }

    #[test]
    fn a_deadline_passed_long_ago_skips_cascading_stale_groups() {
        let t0 = Instant::now();
        let mut o = order();
        frame(&mut o, t0, 0, 0);
        frame(&mut o, t0, 1, 0);
        frame(&mut o, t0 + 200 * MS, 2, 0);
        // At 200 ms, 1 has waited past the window: 0 is given up; 1 becomes
        // open and 2 (waiting since 200 ms) gives it until 350 ms.
        assert_eq!(drain(&mut o, t0 + 200 * MS), [(0, 0), (1, 0)]);
        assert_eq!(o.next_deadline(), Some(t0 + 350 * MS));
        assert_eq!(drain(&mut o, t0 + 350 * MS), [(2, 0)]);
        assert_eq!(o.skipped(), 2);
    }
}
