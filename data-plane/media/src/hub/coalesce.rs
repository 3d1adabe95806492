//! Keyframe-request coalescing, sans IO.
//!
//! Players send PLI/FIR in bursts, and every downstream relay forwards its
//! own. Upstream we forward at most one request per track per interval: the
//! first request goes out at once, later ones inside the interval are
//! remembered and one is forwarded when the interval ends, unless a keyframe
//! of that track arrived meanwhile (which is what they asked for).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::media::TrackId;

#[derive(Debug, Clone, Copy)]
struct TrackState {
    /// When a request for this track was last forwarded.
    last_forward: Instant,
    /// A request arrived inside the window and has not been served yet.
    pending: bool,
}

/// Per-track keyframe-request rate limiter. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct KeyframeCoalescer {
    interval: Duration,
    tracks: BTreeMap<TrackId, TrackState>,
}

impl KeyframeCoalescer {
    /// Forward at most one request per track per `interval`.
    pub fn new(interval: Duration) -> Self {
        KeyframeCoalescer {
            interval,
            tracks: BTreeMap::new(),
        }
    }

    /// A request for a keyframe of `track`: returns the track when the request
    /// should be forwarded now.
    pub fn request(&mut self, now: Instant, track: TrackId) -> Option<TrackId> {
        match self.tracks.get_mut(&track) {
            Some(state) if now < state.last_forward + self.interval => {
                state.pending = true;
                None
            }
            _ => {
                self.tracks.insert(
                    track,
                    TrackState {
                        last_forward: now,
                        pending: false,
                    },
                );
                Some(track)
            }
        }
    }

    /// A keyframe of `track` passed: pending requests for it are served.
    pub fn on_keyframe(&mut self, _now: Instant, track: TrackId) {
        if let Some(state) = self.tracks.get_mut(&track) {
            state.pending = false;
        }
    }

    /// A pending request whose window has ended, to forward now. Call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<TrackId> {
        let interval = self.interval;
        let (&track, state) = self
            .tracks
            .iter_mut()
            .find(|(_, s)| s.pending && now >= s.last_forward + interval)?;
        state.pending = false;
        state.last_forward = now;
        Some(track)
    }

    /// When [`poll`](Self::poll) will next have something, if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter(|s| s.pending)
            .map(|s| s.last_forward + self.interval)
            .min()
    }

    /// Forget all state (e.g. a new source attached).
    pub fn reset(&mut self) {
        self.tracks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_request_goes_out_at_once_then_one_per_window() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        assert_eq!(c.request(t0, 1), Some(1));
        assert_eq!(c.next_deadline(), None);
        assert_eq!(c.request(t0 + 10 * MS, 1), None);
        assert_eq!(c.request(t0 + 20 * MS, 1), None);
        assert_eq!(c.next_deadline(), Some(t0 + 300 * MS));
        assert_eq!(c.poll(t0 + 299 * MS), None);
        assert_eq!(c.poll(t0 + 300 * MS), Some(1));
        assert_eq!(c.poll(t0 + 300 * MS), None, "one forward for the burst");
        assert_eq!(c.next_deadline(), None);
        // The forward at 300 ms opened a new window.
        assert_eq!(c.request(t0 + 400 * MS, 1), None);
        assert_eq!(c.request(t0 + 600 * MS, 1), Some(1));
    }

    #[test]
    fn keyframe_cancels_pending_request() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        assert_eq!(c.request(t0, 1), Some(1));
        assert_eq!(c.request(t0 + 50 * MS, 1), None);
        c.on_keyframe(t0 + 100 * MS, 1);
        assert_eq!(c.next_deadline(), None);
        assert_eq!(c.poll(t0 + 400 * MS), None);
    }

    #[test]
    fn tracks_are_independent() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        assert_eq!(c.request(t0, 1), Some(1));
        assert_eq!(c.request(t0, 2), Some(2));
        assert_eq!(c.request(t0 + 100 * MS, 2), None);
        assert_eq!(c.request(t0 + 200 * MS, 1), None);
        c.on_keyframe(t0 + 250 * MS, 1);
        assert_eq!(c.next_deadline(), Some(t0 + 300 * MS));
        assert_eq!(c.poll(t0 + 300 * MS), Some(2));
        assert_eq!(c.poll(t0 + 300 * MS), None);
    }

    #[test]
    fn reset_forgets_windows() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        assert_eq!(c.request(t0, 1), Some(1));
        c.reset();
        assert_eq!(c.request(t0 + MS, 1), Some(1));
    }
}
