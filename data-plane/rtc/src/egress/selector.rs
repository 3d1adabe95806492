//! The simulcast layer a player in `auto` mode should receive, with hysteresis: down fast,
//! up only after a stable period, and a move up is a probe that is undone at the first sign
//! of trouble (and then waits twice as long before the next try).
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
}

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
        if fraction > self.cfg.loss_down {
            // What got through of the current layer bounds what fits.
            let delivered = self.rate(self.layer) as f32 * (1.0 - fraction);
            let fits = self.highest_within(delivered * self.cfg.headroom, self.layer);
            self.down(now, fits.unwrap_or(self.lowest()));
        } else if fraction > self.cfg.loss_clean {
            self.clean_since = None;
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
    /// to a layer that flows).
    pub(crate) fn poll(&mut self, now: Instant) -> Layer {
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
        if !measured || self.rate(next) > 0 {
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
mod tests {
    use super::*;

    const RATES: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn selector(t0: Instant) -> Selector {
        let mut s = Selector::new(
            SelectorConfig::default(),
            Layer::ALL.to_vec(),
            Layer::High,
            t0,
        );
        s.set_rates(RATES);
        s
    }

    fn secs(t0: Instant, s: f32) -> Instant {
        t0 + Duration::from_secs_f32(s)
    }

    #[test]
    fn heavy_loss_moves_down_at_once_to_what_got_through() {
        let t0 = Instant::now();
        let mut s = selector(t0);
        // 1.5 Mbit/s through a 600 kbit/s path: 60 % lost, 600 kbit/s delivered.
        s.on_loss(secs(t0, 1.0), 0.6);
        assert_eq!(s.layer(), Layer::Mid);
        // Still too much: mid loses a third.
        s.on_loss(secs(t0, 2.0), 0.35);
        assert_eq!(s.layer(), Layer::Low);
        // Nothing lower: stays.
        s.on_loss(secs(t0, 3.0), 0.5);
        assert_eq!(s.layer(), Layer::Low);
    }

    #[test]
    fn loss_before_the_node_is_not_the_players() {
        let t0 = Instant::now();
        let mut s = selector(t0);
        // The publisher's top layer loses 15 % on its way in: every player sees that much.
        s.set_upstream_loss([0.0, 0.0, 0.15]);
        s.on_loss(secs(t0, 1.0), 0.16);
        assert_eq!(s.layer(), Layer::High);
        s.on_loss(secs(t0, 2.0), 0.45);
        assert_eq!(
            s.layer(),
            Layer::Mid,
            "30 % more than upstream is the player's"
        );
    }

    #[test]
    fn moderate_loss_holds_and_clean_time_climbs() {
        let t0 = Instant::now();
        let mut s = selector(t0);
        s.on_loss(t0, 0.9);
        assert_eq!(s.layer(), Layer::Low);
        s.on_loss(secs(t0, 1.0), 0.0);
        assert_eq!(s.poll(secs(t0, 3.9)), Layer::Low, "not stable long enough");
        s.on_loss(secs(t0, 2.0), 0.05);
        assert_eq!(
            s.poll(secs(t0, 4.5)),
            Layer::Low,
            "a lossy report restarts the wait"
        );
        s.on_loss(secs(t0, 5.0), 0.0);
        assert_eq!(s.poll(secs(t0, 7.9)), Layer::Low);
        assert_eq!(
            s.poll(secs(t0, 8.0)),
            Layer::Mid,
            "up one layer after 3 s clean"
        );
        assert_eq!(
            s.poll(secs(t0, 10.9)),
            Layer::Mid,
            "the probe restarts the clock"
        );
        assert_eq!(s.poll(secs(t0, 11.0)), Layer::High);
    }

    #[test]
    fn a_failed_probe_doubles_the_wait() {
        let t0 = Instant::now();
        let mut s = selector(t0);
        s.on_loss(t0, 0.9);
        s.on_loss(secs(t0, 0.5), 0.0);
        assert_eq!(s.poll(secs(t0, 3.5)), Layer::Mid);
        // Trouble within the probe: back down, and the next try waits 6 s.
        s.on_loss(secs(t0, 4.0), 0.4);
        assert_eq!(s.layer(), Layer::Low);
        s.on_loss(secs(t0, 5.0), 0.0);
        assert_eq!(s.poll(secs(t0, 10.9)), Layer::Low);
        assert_eq!(s.poll(secs(t0, 11.0)), Layer::Mid);
        // This one holds: the wait goes back to 3 s.
        assert_eq!(s.poll(secs(t0, 14.0)), Layer::High);
        // Trouble long after a probe held is no failed probe; repeated failed probes wait
        // 3, 6, 12, then never more than 12 s.
        let mut t = t0 + Duration::from_secs(20);
        s.on_loss(t, 0.9);
        assert_eq!(s.layer(), Layer::Low);
        let mut waits = Vec::new();
        for _ in 0..4 {
            s.on_loss(t, 0.0);
            let mut up = t;
            while s.poll(up) == Layer::Low {
                up += Duration::from_millis(500);
            }
            waits.push((up - t).as_secs());
            t = up + Duration::from_millis(500);
            s.on_loss(t, 0.9);
        }
        assert_eq!(waits, [3, 6, 12, 12]);
    }

    #[test]
    fn the_estimate_moves_down_only_with_loss() {
        let t0 = Instant::now();
        let mut s = selector(t0);
        // A low estimate from a player that loses nothing (a receive-side estimator ramping
        // up) moves nobody.
        s.on_estimate(secs(t0, 0.5), 300_000);
        assert_eq!(s.layer(), Layer::High);
        assert_eq!(s.estimate(), Some(300_000));
        // With some loss reported, the estimate decides where to go.
        s.on_loss(secs(t0, 1.0), 0.05);
        assert_eq!(s.layer(), Layer::High, "5 % alone is no reason to move");
        s.on_estimate(secs(t0, 1.1), 700_000);
        assert_eq!(s.layer(), Layer::Mid);
        s.on_estimate(secs(t0, 1.2), 100_000);
        assert_eq!(s.layer(), Layer::Low, "nothing fits: the lowest");
        // Clean again: it climbs whatever the (stale) estimate says.
        s.on_loss(secs(t0, 2.0), 0.0);
        assert_eq!(s.poll(secs(t0, 5.0)), Layer::Mid);
    }

    #[test]
    fn the_transport_estimate_moves_down_without_loss_and_outranks_remb() {
        let t0 = Instant::now();
        let mut s = selector(t0);
        // A clean path on the top layer: the estimate is above it.
        s.on_transport_estimate(secs(t0, 0.5), 2_300_000, false);
        assert_eq!(s.layer(), Layer::High);
        // A REMB far below is ignored now, even with loss reported.
        s.on_loss(secs(t0, 0.6), 0.05);
        s.on_estimate(secs(t0, 0.7), 100_000);
        assert_eq!(s.layer(), Layer::High);
        assert_eq!(s.estimate(), Some(2_300_000));
        // An estimate still lagging the layer, with no trouble: nothing moves.
        s.on_transport_estimate(secs(t0, 0.9), 700_000, false);
        assert_eq!(s.layer(), Layer::High);
        // A back-off while the path delivered nearly all of the layer (delay variation from
        // a busy receiver, say): it stays.
        s.on_transport_estimate(secs(t0, 0.95), 1_232_500, true);
        assert_eq!(s.layer(), Layer::High);
        s.on_loss(secs(t0, 0.97), 0.0);
        // A back-off to 85 % of a 600 kbit/s path: mid (500 kbit/s) fits, high does not;
        // no receiver report lost anything.
        s.on_loss(secs(t0, 0.8), 0.0);
        s.on_transport_estimate(secs(t0, 1.0), 510_000, true);
        assert_eq!(s.layer(), Layer::Mid);
        // Trouble holds the climb back; 3 s clean on both counts lets it probe.
        s.on_transport_estimate(secs(t0, 2.0), 520_000, true);
        s.on_loss(secs(t0, 2.5), 0.0);
        assert_eq!(s.poll(secs(t0, 5.2)), Layer::Mid, "trouble at 2 s");
        s.on_transport_estimate(secs(t0, 3.0), 560_000, false);
        assert_eq!(s.poll(secs(t0, 5.9)), Layer::Mid);
        assert_eq!(s.poll(secs(t0, 6.0)), Layer::High, "the probe");
        // The probe fails: the estimate backs off again, back to mid, and the wait doubles.
        s.on_transport_estimate(secs(t0, 6.5), 510_000, true);
        assert_eq!(s.layer(), Layer::Mid);
        s.on_transport_estimate(secs(t0, 7.0), 520_000, false);
        assert_eq!(s.poll(secs(t0, 12.9)), Layer::Mid);
        assert_eq!(s.poll(secs(t0, 13.0)), Layer::High);
    }

    #[test]
    fn layers_that_do_not_flow_are_left_and_not_climbed_to() {
        let t0 = Instant::now();
        let mut s = Selector::new(
            SelectorConfig::default(),
            Layer::ALL.to_vec(),
            Layer::High,
            t0,
        );
        // Nothing measured yet: no decision.
        s.set_rates([0; 3]);
        assert_eq!(s.layer(), Layer::High);
        // The publisher sends only low and mid so far.
        s.set_rates([150_000, 500_000, 0]);
        assert_eq!(s.layer(), Layer::Mid);
        assert_eq!(s.poll(secs(t0, 30.0)), Layer::Mid, "high does not flow");
        s.set_rates(RATES);
        assert_eq!(s.poll(secs(t0, 30.0)), Layer::High);
    }

    #[test]
    fn unknown_rates_go_to_the_lowest_layer() {
        let t0 = Instant::now();
        let mut s = Selector::new(
            SelectorConfig::default(),
            Layer::ALL.to_vec(),
            Layer::High,
            t0,
        );
        s.on_loss(t0, 0.5);
        assert_eq!(s.layer(), Layer::Low);
        let mut two = Selector::new(
            SelectorConfig::default(),
            vec![Layer::Low, Layer::High],
            Layer::High,
            t0,
        );
        two.set_rates(RATES);
        two.on_loss(t0, 0.2);
        assert_eq!(two.layer(), Layer::Low);
        two.on_loss(secs(t0, 0.1), 0.0);
        assert_eq!(two.poll(secs(t0, 3.2)), Layer::High);
    }
}
