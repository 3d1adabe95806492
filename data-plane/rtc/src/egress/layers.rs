//! Which simulcast layer a player's video track forwards, and the switch to another one.
//!
//! A player's video track follows one layer (one catalog track) at a time. A switch names a
//! target layer; the player keeps receiving the current layer until the target's next
//! keyframe arrives, and from that packet on receives the target. The rewriter sees a new
//! SSRC and starts a new run, so the player's SSRC, sequence numbers and timestamps stay
//! continuous, and its decoder sees a keyframe first. Sans-IO: no clock, no socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_media::hub::LayerSet;
use strata_media::{Layer, TrackId};

use super::selector::{Selector, SelectorConfig};
use super::stats::EgressCounters;

/// A switch (or a player) still waiting for its keyframe asks for one again after this long
/// (the first request may have been coalesced away or lost).
pub(crate) const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

/// What to do with a packet of one of the track's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A packet of the current layer.
    Current,
    /// The target's keyframe: the track switched to it with this packet.
    Switched,
    /// Not forwarded (the target's packets before its keyframe, or another layer).
    Drop,
}

/// The layer state of one player's video track.
#[derive(Debug)]
pub(crate) struct Layers {
    /// Every layer, lowest first; empty for a stream without simulcast.
    all: Vec<(Layer, TrackId)>,
    current: TrackId,
    target: Option<TrackId>,
    /// When the target's keyframe was last asked for.
    asked: Option<Instant>,
    /// Chooses the layer for a player in `auto` mode; `None` when pinned.
    selector: Option<Selector>,
    counters: Option<Arc<EgressCounters>>,
}

impl Layers {
    /// A track starting on `current`, among `all` (lowest first). The players-per-layer
    /// gauge counts it while it lives.
    pub(crate) fn new(
        all: Vec<(Layer, TrackId)>,
        current: TrackId,
        counters: Option<Arc<EgressCounters>>,
    ) -> Layers {
        let layers = Layers {
            all,
            current,
            target: None,
            asked: None,
            selector: None,
            counters,
        };
        layers.gauge(current, true);
        layers
    }

    /// Lets the player's feedback choose the layer (`auto`); a stream without layers has
    /// nothing to choose.
    pub(crate) fn with_selector(mut self, cfg: SelectorConfig, now: Instant) -> Layers {
        if let Some(start) = self.current_layer() {
            let available = self.all.iter().map(|(l, _)| *l).collect();
            self.selector = Some(Selector::new(cfg, available, start, now));
        }
        self
    }

    /// A receiver report for this track: the fraction of packets lost.
    pub(crate) fn on_loss(&mut self, now: Instant, fraction: f32) {
        if let Some(s) = &mut self.selector {
            s.on_loss(now, fraction);
        }
    }

    /// The player's bandwidth estimate (REMB), bit/s.
    pub(crate) fn on_estimate(&mut self, now: Instant, bps: u64) {
        if let Some(s) = &mut self.selector {
            s.on_estimate(now, bps);
        }
    }

    /// The node's transport-cc estimate, bit/s, and whether the path shows trouble.
    pub(crate) fn on_transport_estimate(&mut self, now: Instant, bps: u64, trouble: bool) {
        if let Some(s) = &mut self.selector {
            s.on_transport_estimate(now, bps, trouble);
        }
    }

    /// The stream's measured rates (bytes/s) and upstream loss, by catalog track id.
    pub(crate) fn set_track_flow(&mut self, bytes_per_sec: &[u64], upstream_loss: &[f32]) {
        let Some(s) = &mut self.selector else { return };
        let mut rates = [0u64; 3];
        let mut loss = [0f32; 3];
        for (layer, track) in &self.all {
            let t = usize::from(*track);
            rates[layer.index()] = bytes_per_sec.get(t).copied().unwrap_or(0).saturating_mul(8);
            loss[layer.index()] = upstream_loss.get(t).copied().unwrap_or(0.0);
        }
        s.set_rates(rates);
        s.set_upstream_loss(loss);
    }

    /// The padding probe the selector wants before a move up: the target layer's rate and
    /// the current one's, bit/s.
    pub(crate) fn probe_wanted(&self) -> Option<(u64, u64)> {
        self.selector.as_ref()?.probe_wanted()
    }

    /// The outcome of that probe.
    pub(crate) fn on_probe(&mut self, now: Instant, passed: bool) {
        if let Some(s) = &mut self.selector {
            s.on_probe(now, passed);
        }
    }

    /// The bandwidth estimate, if the player sends one.
    pub(crate) fn estimate(&self) -> Option<u64> {
        self.selector.as_ref().and_then(Selector::estimate)
    }

    /// Time passes: returns the track whose keyframe to ask for when the selector wants
    /// another layer (or a pending switch has waited long for its keyframe).
    pub(crate) fn poll(&mut self, now: Instant) -> Option<TrackId> {
        let want = self.selector.as_mut()?.poll(now);
        let pending = self.target_layer().unwrap_or(self.current_layer()?);
        if want != pending {
            tracing::debug!(from = ?pending, to = ?want, rates = ?self.selector.as_ref().map(Selector::rates), "layer switch wanted");
            let track = self.switch_to(want);
            self.asked = track.map(|_| now);
            return track;
        }
        let target = self.target?;
        if self.asked.is_none_or(|at| now >= at + KEYFRAME_RETRY) {
            self.asked = Some(now);
            return Some(target);
        }
        None
    }

    /// The layer forwarded now (`None` without simulcast).
    pub(crate) fn current_layer(&self) -> Option<Layer> {
        self.layer_of(self.current)
    }

    /// The layer being switched to, if a switch is pending.
    pub(crate) fn target_layer(&self) -> Option<Layer> {
        self.target.and_then(|t| self.layer_of(t))
    }

    /// The layers this track needs the node to receive: the current one, the target of a
    /// pending switch, and in `auto` the one above the current (the selector climbs only to
    /// a layer whose rate it measures, and its probe then starts at once). Empty without
    /// simulcast.
    pub(crate) fn wanted(&self) -> LayerSet {
        let mut set = LayerSet::EMPTY;
        for layer in [self.current_layer(), self.target_layer()]
            .into_iter()
            .flatten()
        {
            set = set.with(layer);
        }
        if self.selector.is_some()
            && let Some(above) = self
                .all
                .iter()
                .map(|(l, _)| *l)
                .find(|l| self.current_layer().is_some_and(|c| *l > c))
        {
            set = set.with(above);
        }
        set
    }

    /// True when packets of `track` concern this player track.
    pub(crate) fn carries(&self, track: TrackId) -> bool {
        track == self.current || Some(track) == self.target
    }

    /// Decides about a packet of `track` (one it [`carries`](Layers::carries)).
    pub(crate) fn admit(&mut self, track: TrackId, keyframe: bool) -> Admit {
        if track == self.current {
            return Admit::Current;
        }
        if Some(track) != self.target || !keyframe {
            return Admit::Drop;
        }
        self.gauge(self.current, false);
        self.gauge(track, true);
        self.current = track;
        self.target = None;
        self.asked = None;
        if let Some(c) = &self.counters {
            c.layer_switches.inc();
        }
        Admit::Switched
    }

    /// Asks to move to `layer` (or the nearest one below it the stream has). Returns the
    /// track whose keyframe the switch waits for, to be requested upstream; `None` when
    /// there is nothing to switch (already there, or no simulcast). Asking for the current
    /// layer cancels a pending switch.
    pub(crate) fn switch_to(&mut self, layer: Layer) -> Option<TrackId> {
        let track = self
            .all
            .iter()
            .rev()
            .find(|(l, _)| *l <= layer)
            .or_else(|| self.all.first())
            .map(|(_, t)| *t)?;
        if track == self.current {
            self.target = None;
            return None;
        }
        self.target = Some(track);
        Some(track)
    }

    fn layer_of(&self, track: TrackId) -> Option<Layer> {
        self.all.iter().find(|(_, t)| *t == track).map(|(l, _)| *l)
    }

    fn gauge(&self, track: TrackId, up: bool) {
        let (Some(counters), Some(layer)) = (&self.counters, self.layer_of(track)) else {
            return;
        };
        let gauge = &counters.players_on_layer[layer.index()];
        if up { gauge.inc() } else { gauge.dec() }
    }
}

impl Drop for Layers {
    fn drop(&mut self) {
        self.gauge(self.current, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(counters: &Arc<EgressCounters>) -> Layers {
        let all = vec![(Layer::Low, 1), (Layer::Mid, 2), (Layer::High, 3)];
        Layers::new(all, 3, Some(Arc::clone(counters)))
    }

    fn on(counters: &EgressCounters) -> [u64; 3] {
        [0, 1, 2].map(|i| counters.players_on_layer[i].get())
    }

    #[test]
    fn switches_only_at_a_keyframe_of_the_target() {
        let counters = Arc::new(EgressCounters::default());
        let mut layers = three(&counters);
        assert_eq!(on(&counters), [0, 0, 1]);
        assert_eq!(layers.switch_to(Layer::Low), Some(1));
        assert!(layers.carries(1) && layers.carries(3) && !layers.carries(2));
        // The current layer keeps flowing until the target's keyframe.
        assert_eq!(layers.admit(3, false), Admit::Current);
        assert_eq!(layers.admit(1, false), Admit::Drop);
        assert_eq!(layers.admit(3, true), Admit::Current);
        assert_eq!(layers.admit(1, true), Admit::Switched);
        assert_eq!(layers.current_layer(), Some(Layer::Low));
        assert_eq!(layers.target_layer(), None);
        // From then on the old layer is not forwarded.
        assert!(!layers.carries(3));
        assert_eq!(layers.admit(1, false), Admit::Current);
        assert_eq!(on(&counters), [1, 0, 0]);
        assert_eq!(counters.layer_switches.get(), 1);
        drop(layers);
        assert_eq!(on(&counters), [0, 0, 0]);
    }

    #[test]
    fn asking_for_the_current_layer_cancels_a_switch() {
        let counters = Arc::new(EgressCounters::default());
        let mut layers = three(&counters);
        assert_eq!(layers.switch_to(Layer::Mid), Some(2));
        assert_eq!(layers.switch_to(Layer::High), None);
        assert_eq!(layers.admit(2, true), Admit::Drop);
        assert_eq!(layers.current_layer(), Some(Layer::High));
        assert_eq!(counters.layer_switches.get(), 0);
    }

    #[test]
    fn auto_follows_the_selector_and_asks_for_keyframes() {
        let t0 = Instant::now();
        let counters = Arc::new(EgressCounters::default());
        let mut layers = three(&counters).with_selector(SelectorConfig::default(), t0);
        // Rates by track id: 0 is audio, 1..=3 the layers.
        layers.set_track_flow(&[4_000, 20_000, 60_000, 190_000], &[0.0; 4]);
        assert_eq!(layers.poll(t0), None, "high is where it starts");
        layers.on_loss(t0 + Duration::from_millis(100), 0.6);
        let t1 = t0 + Duration::from_millis(120);
        assert_eq!(
            layers.poll(t1),
            Some(2),
            "down to mid, its keyframe asked for"
        );
        assert_eq!(layers.poll(t1 + Duration::from_millis(500)), None);
        assert_eq!(
            layers.poll(t1 + Duration::from_millis(1000)),
            Some(2),
            "asked again while no keyframe came"
        );
        assert_eq!(layers.admit(2, true), Admit::Switched);
        assert_eq!(layers.current_layer(), Some(Layer::Mid));
        assert_eq!(layers.poll(t1 + Duration::from_millis(1100)), None);
        // Pinned players have no selector: feedback changes nothing.
        let mut pinned = three(&counters);
        pinned.on_loss(t0, 0.9);
        assert_eq!(pinned.poll(t1), None);
        assert_eq!(pinned.current_layer(), Some(Layer::High));
    }

    #[test]
    fn wanted_layers_are_current_target_and_in_auto_the_next_up() {
        let counters = Arc::new(EgressCounters::default());
        let mut pinned = three(&counters);
        let set = |ls: &[Layer]| ls.iter().fold(LayerSet::EMPTY, |s, l| s.with(*l));
        assert_eq!(pinned.wanted(), set(&[Layer::High]));
        pinned.switch_to(Layer::Low);
        assert_eq!(pinned.wanted(), set(&[Layer::Low, Layer::High]));
        assert_eq!(pinned.admit(1, true), Admit::Switched);
        assert_eq!(pinned.wanted(), set(&[Layer::Low]));
        let all = vec![(Layer::Low, 1), (Layer::Mid, 2), (Layer::High, 3)];
        let auto =
            Layers::new(all, 1, None).with_selector(SelectorConfig::default(), Instant::now());
        assert_eq!(auto.wanted(), set(&[Layer::Low, Layer::Mid]));
        let top = three(&counters).with_selector(SelectorConfig::default(), Instant::now());
        assert_eq!(top.wanted(), set(&[Layer::High]));
        let none = Layers::new(Vec::new(), 0, None);
        assert_eq!(none.wanted(), LayerSet::EMPTY);
    }

    #[test]
    fn missing_layers_fall_to_the_nearest_below() {
        let all = vec![(Layer::Low, 4), (Layer::High, 5)];
        let mut layers = Layers::new(all, 5, None);
        assert_eq!(layers.switch_to(Layer::Mid), Some(4));
        let mut plain = Layers::new(Vec::new(), 0, None);
        assert_eq!(plain.switch_to(Layer::Low), None);
        assert_eq!(plain.admit(0, false), Admit::Current);
        assert_eq!(plain.current_layer(), None);
    }
}
