//! A player's available bandwidth, estimated by the node from its transport-cc feedback: a
//! send-side estimator in the spirit of Google Congestion Control
//! (draft-ietf-rmcat-gcc-02; libwebrtc's trendline estimator and AIMD rate control),
//! simplified to what layer choice needs. Sans-IO: time comes in as arguments.
//!
//! Three signals, from the packets the player acknowledged (`twcc::Acked`):
//!
//! - **Delivery rate**: bytes acknowledged over the last second of arrival time.
//! - **Delay gradient**: packets are grouped by 5 ms bursts of send time; for consecutive
//!   groups the one-way delay variation `(arrival delta) − (send delta)` is accumulated,
//!   smoothed, and a line is fitted over the last 20 groups. Its slope, scaled, is compared with
//!   an adaptive threshold (12.5 ms to start, following the signal slowly): above it for more
//!   than 10 ms and two groups running is *over-use* (a queue is building on the path), below
//!   its negative is *under-use* (a queue draining).
//! - **Loss**: statuses the feedback reports as not received, per half second.
//!
//! The estimate (AIMD): over-use (at most once per 200 ms), or more than 10 % loss in a half
//! second (once per half second), sets it to 85 % of the delivery rate; otherwise it grows by 8 % a second, and at once to the delivery
//! rate when that is higher (a path that delivered a rate without a queue building carries
//! it: this is how a move up to a bigger layer works as a probe), but never beyond 1.5 × the
//! delivery rate (+10 kbit/s): a sender can only learn that a path carries more by sending
//! more. It starts at 1.5 × the first delivery rate measured. Queueing delay grows before a
//! bottleneck's buffer overflows, so the estimate comes down before loss does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::twcc::{Acked, FeedbackCounts};

/// Packets sent within this long of a group's first form one group.
const BURST_US: u64 = 5_000;
/// Groups the trend line is fitted over.
const WINDOW: usize = 20;
/// Smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The slope's scale before comparison with the threshold.
const THRESHOLD_GAIN: f64 = 4.0;
/// Adaptive threshold: start, bounds, and how fast it follows the signal up and down.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_RANGE: (f64, f64) = (6.0, 600.0);
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A gap this long between two groups (a pause, a clock step) starts the trend over.
const RESET_US: i64 = 3_000_000;
/// Delivery rate is measured over this much arrival time.
const RATE_WINDOW_US: i64 = 1_000_000;
/// Acknowledged packets kept for it, at most.
const RATE_PACKETS: usize = 8_192;
/// Back-off to this share of the delivery rate.
const BETA: f64 = 0.85;
/// At most one back-off per this long (about a round trip and a feedback interval).
const DECREASE_INTERVAL: Duration = Duration::from_millis(200);
/// Growth per second while the path shows nothing.
const INCREASE_PER_SEC: f64 = 1.08;
/// Loss is judged over this long.
const LOSS_INTERVAL: Duration = Duration::from_millis(500);
/// Over-use counts as trouble for the layer choice once it has lasted this long: a queue
/// building at a bottleneck lasts while the layer is too big; a busy receiver's (or
/// sender's) scheduling shows as over-use too, but in bursts of a few hundred ms.
const OVERUSE_TROUBLE: Duration = Duration::from_secs(1);
/// More loss than this backs off; up to it, the estimate holds.
const LOSS_HIGH: f64 = 0.10;
const LOSS_LOW: f64 = 0.02;

/// What the delay gradient says about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Normal,
    Overuse,
    Underuse,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: u64,
    last_send: u64,
    last_arrival: i64,
}

/// Trend of one-way delay variation over packet groups, and the over-use detector on it.
#[derive(Debug)]
struct Trendline {
    prev: Option<Group>,
    current: Option<Group>,
    first_arrival: Option<i64>,
    deltas: u32,
    accumulated: f64,
    smoothed: f64,
    history: VecDeque<(f64, f64)>,
    prev_trend: f64,
    threshold: f64,
    threshold_at: Option<i64>,
    over_using_ms: f64,
    overuse_count: u32,
    signal: Signal,
}

impl Trendline {
    fn new() -> Trendline {
        Trendline {
            prev: None,
            current: None,
            first_arrival: None,
            deltas: 0,
            accumulated: 0.0,
            smoothed: 0.0,
            history: VecDeque::with_capacity(WINDOW),
            prev_trend: 0.0,
            threshold: THRESHOLD_START,
            threshold_at: None,
            over_using_ms: -1.0,
            overuse_count: 0,
            signal: Signal::Normal,
        }
    }

    /// One acknowledged packet, in sequence order.
    fn on_packet(&mut self, p: &Acked) {
        let Some(group) = &mut self.current else {
            self.current = Some(Group {
                first_send: p.send_us,
                last_send: p.send_us,
                last_arrival: p.arrival_us,
            });
            return;
        };
        if p.send_us < group.first_send {
            // Sent before the group started (a retransmission numbered late): no burst info.
            return;
        }
        if p.send_us - group.first_send <= BURST_US {
            group.last_send = group.last_send.max(p.send_us);
            group.last_arrival = group.last_arrival.max(p.arrival_us);
            return;
        }
        let done = *group;
        self.current = Some(Group {
            first_send: p.send_us,
            last_send: p.send_us,
            last_arrival: p.arrival_us,
        });
        if let Some(prev) = self.prev {
            let send_delta = done.last_send as i64 - prev.last_send as i64;
            let arrival_delta = done.last_arrival - prev.last_arrival;
            if arrival_delta.abs() > RESET_US || send_delta > RESET_US {
                let threshold = self.threshold;
                *self = Trendline::new();
                self.threshold = threshold;
                self.current = Some(Group {
                    first_send: p.send_us,
                    last_send: p.send_us,
                    last_arrival: p.arrival_us,
                });
                return;
            }
            if arrival_delta >= 0 {
                self.update(arrival_delta, send_delta, done.last_arrival);
            }
        }
        self.prev = Some(done);
    }

    fn update(&mut self, arrival_delta: i64, send_delta: i64, arrival: i64) {
        let delta_ms = (arrival_delta - send_delta) as f64 / 1_000.0;
        self.deltas = (self.deltas + 1).min(1_000);
        self.accumulated += delta_ms;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival.get_or_insert(arrival);
        if self.history.len() == WINDOW {
            self.history.pop_front();
        }
        self.history
            .push_back(((arrival - first) as f64 / 1_000.0, self.smoothed));
        let trend = if self.history.len() == WINDOW {
            slope(&self.history).unwrap_or(self.prev_trend)
        } else {
            self.prev_trend
        };
        self.detect(trend, send_delta as f64 / 1_000.0, arrival);
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, arrival: i64) {
        let modified = f64::from(self.deltas.min(60)) * trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            if self.over_using_ms < 0.0 {
                self.over_using_ms = send_delta_ms / 2.0;
            } else {
                self.over_using_ms += send_delta_ms;
            }
            self.overuse_count += 1;
            if self.over_using_ms > 10.0 && self.overuse_count > 1 && trend >= self.prev_trend {
                self.over_using_ms = 0.0;
                self.overuse_count = 0;
                self.signal = Signal::Overuse;
            }
        } else if modified < -self.threshold {
            self.over_using_ms = -1.0;
            self.overuse_count = 0;
            self.signal = Signal::Underuse;
        } else {
            self.over_using_ms = -1.0;
            self.overuse_count = 0;
            self.signal = Signal::Normal;
        }
        self.prev_trend = trend;
        self.adapt_threshold(modified, arrival);
    }

    fn adapt_threshold(&mut self, modified: f64, arrival: i64) {
        let last = *self.threshold_at.get_or_insert(arrival);
        self.threshold_at = Some(arrival);
        if modified.abs() > self.threshold + 15.0 {
            // A spike (a route change, a stall) must not drag the threshold along.
            return;
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let dt_ms = ((arrival - last) as f64 / 1_000.0).clamp(0.0, 100.0);
        self.threshold += k * (modified.abs() - self.threshold) * dt_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_RANGE.0, THRESHOLD_RANGE.1);
    }
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

/// A player's bandwidth estimate. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Estimator {
    trend: Trendline,
    /// Acknowledged (arrival µs, bytes), oldest first.
    delivered: VecDeque<(i64, u32)>,
    delivered_bytes: u64,
    estimate: Option<f64>,
    updated: Option<Instant>,
    decreased: Option<Instant>,
    loss_since: Option<Instant>,
    loss_counts: FeedbackCounts,
    /// Loss of the last full interval.
    loss: f64,
    /// Since when the delay gradient has shown over-use without a break.
    overuse_since: Option<Instant>,
    /// The last feedback's time.
    now: Option<Instant>,
}

impl Estimator {
    pub(crate) fn new() -> Estimator {
        Estimator {
            trend: Trendline::new(),
            delivered: VecDeque::new(),
            delivered_bytes: 0,
            estimate: None,
            updated: None,
            decreased: None,
            loss_since: None,
            loss_counts: FeedbackCounts::default(),
            loss: 0.0,
            overuse_since: None,
            now: None,
        }
    }

    /// The estimate in bit/s, once the first delivery rate is measured.
    pub(crate) fn estimate(&self) -> Option<u64> {
        self.estimate.map(|e| e as u64)
    }

    /// The path shows trouble now: more than 2 % loss, or a queue building for a second.
    pub(crate) fn trouble(&self) -> bool {
        let queue = match (self.overuse_since, self.now) {
            (Some(since), Some(now)) => now >= since + OVERUSE_TROUBLE,
            _ => false,
        };
        queue || self.loss > LOSS_LOW
    }

    /// What the delay gradient says now.
    #[cfg(test)]
    pub(crate) fn signal(&self) -> Signal {
        self.trend.signal
    }

    /// Bit/s acknowledged over the last second of arrivals, once that much is known.
    pub(crate) fn delivery_rate(&self) -> Option<f64> {
        let (first, _) = self.delivered.front()?;
        let (last, _) = self.delivered.back()?;
        let span = last - first;
        (span >= RATE_WINDOW_US / 2).then(|| self.delivered_bytes as f64 * 8e6 / span as f64)
    }

    /// One feedback packet's news: `acked` (newly acknowledged, in sequence order) and its
    /// counts, read at `now`.
    pub(crate) fn on_feedback(&mut self, now: Instant, acked: &[Acked], counts: FeedbackCounts) {
        for p in acked {
            self.trend.on_packet(p);
            self.deliver(p);
        }
        let fresh_loss = self.count_loss(now, counts);
        self.now = Some(now);
        if self.trend.signal == Signal::Overuse {
            self.overuse_since.get_or_insert(now);
        } else {
            self.overuse_since = None;
        }
        let Some(rate) = self.delivery_rate() else {
            return;
        };
        let elapsed = self.updated.map_or(0.0, |t| {
            now.saturating_duration_since(t).as_secs_f64().min(1.0)
        });
        self.updated = Some(now);
        let current = *self.estimate.get_or_insert(1.5 * rate + 10_000.0);
        let may_decrease = self
            .decreased
            .is_none_or(|at| now >= at + DECREASE_INTERVAL);
        // Loss backs off once per interval judged (the next interval shows whether the
        // back-off helped); a queue building, whenever it shows.
        let congested =
            self.trend.signal == Signal::Overuse || (fresh_loss && self.loss > LOSS_HIGH);
        if congested {
            if may_decrease {
                self.estimate = Some(current.min(BETA * rate));
                self.decreased = Some(now);
                tracing::debug!(rate, estimate = BETA * rate, loss = self.loss, signal = ?self.trend.signal, "transport estimate backs off");
            }
        } else if self.trend.signal == Signal::Normal && self.loss <= LOSS_LOW {
            let limit = (1.5 * rate + 10_000.0).max(current);
            // What the path just delivered with no queue building and no loss, it carries:
            // a move up to a bigger layer is the probe that shows it.
            let grown = (current * INCREASE_PER_SEC.powf(elapsed)).max(rate);
            self.estimate = Some(grown.min(limit));
        }
    }

    fn deliver(&mut self, p: &Acked) {
        if self
            .delivered
            .back()
            .is_some_and(|(last, _)| p.arrival_us < last - RATE_WINDOW_US)
        {
            // Far out of order (or a bogus delta): not a delivery in this window.
            return;
        }
        if self.delivered.len() == RATE_PACKETS
            && let Some((_, size)) = self.delivered.pop_front()
        {
            self.delivered_bytes -= u64::from(size);
        }
        self.delivered.push_back((p.arrival_us, p.size));
        self.delivered_bytes += u64::from(p.size);
        let newest = self
            .delivered
            .iter()
            .map(|(t, _)| *t)
            .next_back()
            .unwrap_or(p.arrival_us);
        while let Some(&(t, size)) = self.delivered.front() {
            if t >= newest - RATE_WINDOW_US {
                break;
            }
            self.delivered.pop_front();
            self.delivered_bytes -= u64::from(size);
        }
    }

    /// Adds a feedback packet's counts; true when an interval was judged with this one.
    fn count_loss(&mut self, now: Instant, counts: FeedbackCounts) -> bool {
        let since = *self.loss_since.get_or_insert(now);
        self.loss_counts.lost += counts.lost;
        self.loss_counts.received += counts.received;
        if now >= since + LOSS_INTERVAL {
            let total = self.loss_counts.lost + self.loss_counts.received;
            if total > 0 {
                self.loss = f64::from(self.loss_counts.lost) / f64::from(total);
            }
            self.loss_counts = FeedbackCounts::default();
            self.loss_since = Some(now);
            return total > 0;
        }
        false
    }
}

#[cfg(test)]
#[path = "estimate_tests.rs"]
mod tests;
