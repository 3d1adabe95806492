//! The simulcast layer a player in `auto` mode should receive, with hysteresis: down fast,
//! up only after a stable period, and a move up is undone at the first sign of trouble (and
//! then waits twice as long before the next try).
//!
//! With the node's own estimate (transport-cc), a move up waits for a probe first: the
//! selector asks for one ([`Selector::probe_wanted`]), the session's prober (`probe.rs`) sends
//! padding at the target layer's rate and reports whether the path delivered it
//! ([`Selector::on_probe`]); only a probe that passed moves the player. Trouble while probing
//! fails the probe. The probe's padding can itself overflow a bottleneck, so loss reported
//! while a probe runs, and for [`PROBE_SHADOW`] after one failed, fails the probe and holds
//! back the next move up but does not move the player down (the transport-cc estimate,
//! which sees the padding, still does when it falls below the layer). Without transport-cc (REMB or receiver reports only) nothing can measure
//! a probe, and the move up itself is the probe, as before.
//!
//! Inputs are the player's feedback: the loss its receiver reports state, a bandwidth
//! estimate (the node's own from transport-cc feedback, `estimate.rs`; else the player's
//! REMB), and each layer's bitrate as the loop measures it.
//! Sans-IO: time comes in as an argument, so every case is unit-tested with simulated time.

use std::time::{Duration, Instant};

use strata_media::Layer;

/// Tuning of the selector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SelectorConfig {
    /// A receiver report losing more than this fraction moves down at once.
    pub loss_down: f32,
    /// Reports losing at most this fraction count as clean.
    pub loss_clean: f32,
    /// Clean time before the first try of a higher layer.
    pub stable: Duration,
    /// Longest wait between tries after failed probes.
    pub max_stable: Duration,
    /// A move up is a probe for this long: trouble within it counts as a failed probe.
    pub probe: Duration,
    /// Share of the bandwidth estimate a layer's bitrate may take.
    pub headroom: f32,
    /// Longest wait between padding probes after failed ones (a failed probe costs the
    /// player half a second of extra traffic, a failed move up a freeze: it may come back
    /// sooner; the prober's budget bounds how often).
    pub max_probe_wait: Duration,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            loss_down: 0.10,
            loss_clean: 0.02,
            stable: Duration::from_secs(3),
            max_stable: Duration::from_secs(12),
            probe: Duration::from_secs(3),
            headroom: 0.85,
            max_probe_wait: Duration::from_secs(6),
        }
    }
}

/// Per-player layer choice. See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    cfg: SelectorConfig,
    /// The layers the stream has, lowest first (not empty).
    available: Vec<Layer>,
    layer: Layer,
    /// Bits per second of each layer (by `Layer::index`), 0 while unknown.
    rates: [u64; 3],
    /// The player's bandwidth estimate in bit/s, if there is one.
    estimate: Option<u64>,
    /// The estimate is the node's own, from transport-cc feedback: REMB is then ignored.
    transport: bool,
    /// The transport-cc estimator sees trouble now (a queue building, or loss).
    transport_trouble: bool,
    /// The last receiver report lost more than `loss_clean`.
    lossy: bool,
    /// Loss before the node, by `Layer::index`.
    upstream_loss: [f32; 3],
    clean_since: Option<Instant>,
    stable: Duration,
    /// When the current move up started, while it is still a probe.
    probe_started: Option<Instant>,
    /// The layer a padding probe runs for, and when it was asked for.
    probing: Option<(Layer, Instant)>,
    /// Until when loss may be the last failed probe's.
    shadow_until: Option<Instant>,
}

/// A probe asked for and not reported within this long counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Loss reported this long after a failed probe may be the probe's own: it moves nobody
/// down (a receiver report covers about a second; the outcome comes 0.4 s after the padding).
pub(crate) const PROBE_SHADOW: Duration = Duration::from_millis(1500);

impl Selector {
    /// A selector starting on `start` among `available` (lowest first).
    pub(crate) fn new(
        cfg: SelectorConfig,
        available: Vec<Layer>,
        start: Layer,
        now: Instant,
    ) -> Selector {
        Selector {
            stable: cfg.stable,
            cfg,
            available,
            layer: start,
            rates: [0; 3],
            estimate: None,
            transport: false,
            transport_trouble: false,
            lossy: false,
            upstream_loss: [0.0; 3],
            clean_since: Some(now),
            probe_started: None,
            probing: None,
            shadow_until: None,
        }
    }

    /// The padding probe wanted now, if any: the rate the target layer needs and the rate
    /// of the current one, bit/s.
    pub(crate) fn probe_wanted(&self) -> Option<(u64, u64)> {
        let (target, _) = self.probing?;
        Some((self.rate(target), self.rate(self.layer)))
    }

    /// The outcome of the probe asked for: passed moves up to its layer (still watched for
    /// trouble as a move up is), failed waits twice as long before the next try.
    pub(crate) fn on_probe(&mut self, now: Instant, passed: bool) {
        let Some((target, _)) = self.probing.take() else {
            return;
        };
        if passed && target > self.layer {
            tracing::debug!(from = ?self.layer, to = ?target, "probe passed");
            self.layer = target;
            self.probe_started = Some(now);
        } else {
            tracing::debug!(layer = ?target, "probe failed");
            self.stable = (self.stable * 2).min(self.cfg.max_probe_wait);
            self.shadow_until = Some(now + PROBE_SHADOW);
        }
        self.clean_since = Some(now);
    }

    /// Trouble while a probe runs: the probe failed.
    fn probe_troubled(&mut self, now: Instant) {
        if self.probing.take().is_some() {
            self.stable = (self.stable * 2).min(self.cfg.max_probe_wait);
            self.shadow_until = Some(now + PROBE_SHADOW);
        }
    }

    /// The layer chosen now.
    #[cfg(test)]
    pub(crate) fn layer(&self) -> Layer {
        self.layer
    }

    /// Each layer's bitrate in bit/s now, by `Layer::index`.
    pub(crate) fn rates(&self) -> [u64; 3] {
        self.rates
    }

    /// The bandwidth estimate, if any.
    pub(crate) fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// Each layer's bitrate in bit/s, by `Layer::index`. A layer measured at 0 while others
    /// flow is not being sent (a publisher pauses layers its own bandwidth or CPU cannot
    /// carry): a player on it moves to the highest layer that flows, and none climbs to it.
    pub(crate) fn set_rates(&mut self, rates: [u64; 3]) {
        self.rates = rates;
        if self.rate(self.layer) == 0
            && let Some(flowing) = self
                .available
                .iter()
                .rev()
                .copied()
                .find(|l| self.rate(*l) > 0)
        {
            self.layer = flowing;
            self.probe_started = None;
            self.probing = None;
        }
    }

    /// Each layer's loss before the node (by `Layer::index`): every player sees it, so it
    /// says nothing about a player's path and is taken off what the player reports.
    pub(crate) fn set_upstream_loss(&mut self, loss: [f32; 3]) {
        self.upstream_loss = loss;
    }

    /// A receiver report for the video: `fraction` of packets lost since the last one.
    pub(crate) fn on_loss(&mut self, now: Instant, fraction: f32) {
        let fraction = (fraction - self.upstream_loss[self.layer.index()]).max(0.0);
        self.lossy = fraction > self.cfg.loss_clean;
        if self.lossy {
            tracing::debug!(fraction, layer = ?self.layer, "player reports loss");
        }
        let probes_loss = self.probing.is_some() || self.shadow_until.is_some_and(|t| now < t);
        if fraction > self.cfg.loss_down && !probes_loss {
            // What got through of the current layer bounds what fits.
            let delivered = self.rate(self.layer) as f32 * (1.0 - fraction);
            let fits = self.highest_within(delivered * self.cfg.headroom, self.layer);
            self.down(now, fits.unwrap_or(self.lowest()));
        } else if fraction > self.cfg.loss_clean {
            self.clean_since = None;
            self.probe_troubled(now);
        } else if self.clean_since.is_none() && !self.transport_trouble {
            self.clean_since = Some(now);
        }
    }

    /// The node's estimate from transport-cc feedback, in bit/s, and whether the path shows
    /// trouble now. It takes precedence over REMB. The estimator backs off to 85 % of what
    /// the path delivered when it sees a queue building or loss, so `estimate / 0.85` is what
    /// the path delivered. With trouble, a layer of which the path delivered less than 85 %
    /// is left at once for the highest whose rate it delivered, without waiting for receiver
    /// reports to show loss. (A path delivering nearly all of the layer with some delay
    /// variation, as a busy receiver shows, is no reason to leave it.) Without trouble a low estimate only
    /// means the path has not been shown more yet (it lags a move up, which is the probe),
    /// and moves nothing. Trouble also holds back (and restarts the wait for) the next move up.
    pub(crate) fn on_transport_estimate(&mut self, now: Instant, bps: u64, trouble: bool) {
        self.estimate = Some(bps);
        self.transport = true;
        self.transport_trouble = trouble;
        // What the path delivered when the estimator last backed off.
        let fits = bps as f32 / self.cfg.headroom;
        if trouble && self.rate(self.layer) as f32 * self.cfg.headroom > fits {
            tracing::debug!(bps, layer = ?self.layer, "transport estimate below the layer");
            let target = self
                .highest_within(fits, self.layer)
                .unwrap_or(self.lowest());
            self.down(now, target);
        } else if trouble {
            self.clean_since = None;
            self.probe_troubled(now);
        } else if self.clean_since.is_none() && !self.lossy {
            self.clean_since = Some(now);
        }
    }

    /// A bandwidth estimate from the player (REMB), in bit/s; ignored once the node has its
    /// own from transport-cc feedback. A receive-side estimate
    /// cannot see capacity beyond what the player receives, and it starts low: on its own it
    /// would pin every player to a low layer. It moves a player down only while the player
    /// also reports loss, and never holds a climb back (the climb is the probe).
    pub(crate) fn on_estimate(&mut self, now: Instant, bps: u64) {
        if self.transport {
            // The node's own estimate (transport-cc) is the better one.
            return;
        }
        self.estimate = Some(bps);
        if self.lossy && self.rate(self.layer) as f32 > bps as f32 * self.cfg.headroom {
            let target = self
                .highest_within(bps as f32 * self.cfg.headroom, self.layer)
                .unwrap_or(self.lowest());
            self.down(now, target);
        }
    }

    /// Time passes: returns the layer to be on now (a move up after a clean, stable period,
    /// to a layer that flows; with transport-cc, after a probe that passed).
    pub(crate) fn poll(&mut self, now: Instant) -> Layer {
        if let Some((_, asked)) = self.probing {
            if now >= asked + PROBE_TIMEOUT {
                self.on_probe(now, false);
            }
            return self.layer;
        }
        if let Some(started) = self.probe_started
            && now >= started + self.cfg.probe
        {
            // The probe held: the next try waits the base period again.
            self.probe_started = None;
            self.stable = self.cfg.stable;
        }
        let Some(clean) = self.clean_since else {
            return self.layer;
        };
        if now < clean + self.stable {
            return self.layer;
        }
        let Some(next) = self.available.iter().copied().find(|l| *l > self.layer) else {
            return self.layer;
        };
        let measured = self.rates.iter().any(|&r| r > 0);
        if measured && self.transport && self.rate(next) > 0 {
            // The node can measure a probe: padding first, the move after it passed.
            self.probing = Some((next, now));
        } else if !measured || self.rate(next) > 0 {
            self.layer = next;
            self.probe_started = Some(now);
            self.clean_since = Some(now);
        }
        self.layer
    }

    fn down(&mut self, now: Instant, target: Layer) {
        if let Some(started) = self.probe_started.take()
            && now < started + self.cfg.probe
        {
            // The last move up did not hold: wait longer before the next one.
            self.stable = (self.stable * 2).min(self.cfg.max_stable);
        }
        self.probe_troubled(now);
        if target < self.layer {
            self.layer = target;
        }
        self.clean_since = None;
    }

    fn rate(&self, layer: Layer) -> u64 {
        self.rates[layer.index()]
    }

    fn lowest(&self) -> Layer {
        self.available.first().copied().unwrap_or(Layer::Low)
    }

    /// The highest available layer below `below` whose known rate fits in `bps`.
    fn highest_within(&self, bps: f32, below: Layer) -> Option<Layer> {
        self.available
            .iter()
            .rev()
            .copied()
            .filter(|l| *l < below)
            .find(|l| self.rate(*l) > 0 && self.rate(*l) as f32 <= bps)
    }
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
