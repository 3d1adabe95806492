//! Probing a player's path before moving it to a higher simulcast layer.
//!
//! A move up that the path cannot carry costs the player a freeze (Chromium's decoder waits
//! for the frames the bottleneck dropped). So before the move the node sends padding at the
//! rate the higher layer needs, for a short window, and moves only if the player's
//! transport-cc feedback shows that the path delivered it: enough of the window's packets
//! acknowledged, at a rate of at least the target's (libwebrtc's probe clusters, simplified:
//! one cluster, the window's media and padding together).
//!
//! The padding is RTP padding-only packets on the player's video SSRC (the node does not
//! negotiate RTX), numbered in the track's sequence (see `RtpRewriter::pad`), sent only
//! after a frame's last packet so that no frame's packets are split by one, each stamped with
//! the player's transport-wide sequence number like every other packet.
//!
//! Budgets, so that no player can turn probes into amplification: at most
//! [`ProbeConfig::per_minute`] probes a minute, a padding rate of at most
//! [`ProbeConfig::max_rate`], and at most [`ProbeConfig::max_bytes`] of padding per probe.
//! Sans-IO: time comes in as arguments, unit-tested with simulated time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::twcc::Acked;

/// Padding bytes per padding-only packet (libwebrtc's largest; RFC 3550 allows 255).
pub(crate) const PADDING_BYTES: usize = 224;
/// Bytes on the wire of one padding packet: RTP header, transport-cc extension, padding,
/// SRTP tag.
const PADDING_WIRE: u64 = 12 + 8 + PADDING_BYTES as u64 + 16;

/// Tuning and budgets of the prober.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeConfig {
    /// How long padding is sent.
    pub duration: Duration,
    /// How long after the window the feedback is waited for.
    pub settle: Duration,
    /// The window's total rate as a multiple of the target layer's rate.
    pub gain: f64,
    /// Padding rate per player at most, bit/s.
    pub max_rate: u64,
    /// Padding per probe at most, bytes.
    pub max_bytes: u64,
    /// Probes per player per minute at most.
    pub per_minute: usize,
    /// Share of the window's packets that must be acknowledged.
    pub min_delivered: f64,
    /// Padding owed is capped at this much sending time (a late tick sends no big burst).
    pub max_burst: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            duration: Duration::from_millis(300),
            settle: Duration::from_millis(400),
            gain: 1.2,
            max_rate: 4_000_000,
            max_bytes: 160_000,
            per_minute: 10,
            min_delivered: 0.95,
            max_burst: Duration::from_millis(40),
        }
    }
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeOutcome {
    /// The path delivered at least the target rate, nearly without loss (bit/s measured).
    Passed(u64),
    /// It did not (bit/s measured, 0 when nothing was acknowledged).
    Failed(u64),
}

#[derive(Debug)]
struct Window {
    target_bps: u64,
    padding_bps: u64,
    started: Instant,
    last: Instant,
    /// Send times (µs, the stamping clock) the window covers: from `start_us`, until
    /// `end_us` once the padding stopped.
    start_us: u64,
    end_us: Option<u64>,
    /// Padding owed, bytes.
    credit: f64,
    padding_sent: u64,
    sent_packets: u32,
    sent_bytes: u64,
    acked_packets: u32,
    acked_bytes: u64,
    arrivals: Option<(i64, i64)>,
}

/// One player's prober. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Prober {
    cfg: ProbeConfig,
    /// When the probes of the last minute started.
    starts: VecDeque<Instant>,
    window: Option<Window>,
}

impl Prober {
    pub(crate) fn new(cfg: ProbeConfig) -> Prober {
        Prober {
            cfg,
            starts: VecDeque::new(),
            window: None,
        }
    }

    /// True while a probe runs (padding, or waiting for its feedback).
    pub(crate) fn active(&self) -> bool {
        self.window.is_some()
    }

    /// Starts a probe of whether the path carries `target_bps`, with `current_bps` flowing
    /// now: padding makes up the difference (times the gain). False when one runs already
    /// or the minute's probes are spent.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        wall_us: u64,
        target_bps: u64,
        current_bps: u64,
    ) -> bool {
        while self
            .starts
            .front()
            .is_some_and(|t| now >= *t + Duration::from_secs(60))
        {
            self.starts.pop_front();
        }
        if self.window.is_some() || self.starts.len() >= self.cfg.per_minute {
            return false;
        }
        self.starts.push_back(now);
        let total = target_bps as f64 * self.cfg.gain;
        let padding_bps = (total - current_bps as f64).clamp(0.0, self.cfg.max_rate as f64);
        self.window = Some(Window {
            target_bps,
            padding_bps: padding_bps as u64,
            started: now,
            last: now,
            start_us: wall_us,
            end_us: None,
            credit: 0.0,
            padding_sent: 0,
            sent_packets: 0,
            sent_bytes: 0,
            acked_packets: 0,
            acked_bytes: 0,
            arrivals: None,
        });
        true
    }

    /// Ends a running probe without an outcome (the player is in trouble, or moved).
    pub(crate) fn cancel(&mut self) {
        self.window = None;
    }

    /// How many padding packets ([`PADDING_BYTES`] each) are due now. `wall_us` is the
    /// stamping clock: the window's end is taken from it when the padding stops.
    pub(crate) fn padding_due(&mut self, now: Instant, wall_us: u64) -> u16 {
        let cfg = self.cfg;
        let Some(w) = self.window.as_mut().filter(|w| w.end_us.is_none()) else {
            return 0;
        };
        if now >= w.started + cfg.duration {
            w.end_us = Some(wall_us);
            return 0;
        }
        let elapsed = now.saturating_duration_since(w.last).as_secs_f64();
        w.last = now;
        let cap = w.padding_bps as f64 / 8.0 * cfg.max_burst.as_secs_f64();
        w.credit = (w.credit + w.padding_bps as f64 / 8.0 * elapsed).min(cap);
        let left = cfg.max_bytes.saturating_sub(w.padding_sent);
        let packets = (w.credit / PADDING_WIRE as f64)
            .min((left / PADDING_WIRE) as f64)
            .floor();
        packets.clamp(0.0, f64::from(u16::MAX)) as u16
    }

    /// `packets` padding packets of the ones due went out (a packet that could not be
    /// sent, e.g. mid-frame, is owed still).
    pub(crate) fn on_padding_sent(&mut self, packets: u16) {
        if let Some(w) = self.window.as_mut() {
            let bytes = u64::from(packets) * PADDING_WIRE;
            w.credit = (w.credit - bytes as f64).max(0.0);
            w.padding_sent += bytes;
        }
    }

    /// Every stamped packet (media, retransmission, padding) at `send_us`, `size` bytes.
    pub(crate) fn on_sent(&mut self, send_us: u64, size: usize) {
        if let Some(w) = self.window.as_mut()
            && w.end_us.is_none()
            && send_us >= w.start_us
        {
            w.sent_packets += 1;
            w.sent_bytes += size as u64;
        }
    }

    /// Packets the player acknowledged (from one feedback packet).
    pub(crate) fn on_acked(&mut self, acked: &[Acked]) {
        let Some(w) = self.window.as_mut() else {
            return;
        };
        for p in acked {
            if p.send_us < w.start_us || w.end_us.is_some_and(|end| p.send_us > end) {
                continue;
            }
            w.acked_packets += 1;
            w.acked_bytes += u64::from(p.size);
            w.arrivals = Some(match w.arrivals {
                None => (p.arrival_us, p.arrival_us),
                Some((lo, hi)) => (lo.min(p.arrival_us), hi.max(p.arrival_us)),
            });
        }
    }

    /// The outcome, once the window's feedback had time to come in.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<ProbeOutcome> {
        let w = self.window.as_ref()?;
        if now < w.started + self.cfg.duration + self.cfg.settle {
            return None;
        }
        let outcome = self.judge(w);
        self.window = None;
        Some(outcome)
    }

    fn judge(&self, w: &Window) -> ProbeOutcome {
        let window_s = self.cfg.duration.as_secs_f64();
        let send_bps = w.sent_bytes as f64 * 8.0 / window_s;
        // Arrivals spread over less than half the window are a clock oddity or a tiny
        // sample: the window's length is the honest span then.
        let span_s = w
            .arrivals
            .map_or(window_s, |(lo, hi)| (hi - lo) as f64 / 1e6)
            .max(window_s / 2.0);
        let receive_bps = w.acked_bytes as f64 * 8.0 / span_s;
        let delivered = send_bps.min(receive_bps) as u64;
        let share = if w.sent_packets == 0 {
            0.0
        } else {
            f64::from(w.acked_packets) / f64::from(w.sent_packets)
        };
        tracing::debug!(
            target_bps = w.target_bps,
            delivered,
            share,
            padding = w.padding_sent,
            "probe ended"
        );
        if share >= self.cfg.min_delivered && delivered >= w.target_bps {
            ProbeOutcome::Passed(delivered)
        } else {
            ProbeOutcome::Failed(delivered)
        }
    }
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
