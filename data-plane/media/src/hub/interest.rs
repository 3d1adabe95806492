//! Which simulcast layers a sink wants, and how that interest travels upstream.
//!
//! A node pulls only the layers its sinks (egress loops, downstream relay
//! subscriptions) use. Three sans-IO pieces:
//! - [`LayerSet`]: a set of layers, one bit each (the wire form too).
//! - [`LayerFilter`]: per sink, passes the tracks it wants; a layer added to
//!   the set starts at its next keyframe, so the sink's consumer never sees a
//!   layer begin mid-group.
//! - [`InterestDebounce`]: turns a changing interest into messages upstream at
//!   a bounded rate: additions go out as soon as the minimum interval allows,
//!   removals only after they held for a while (a player flipping between two
//!   layers must not make the upstream drop one and restart it at a keyframe
//!   every time).
//!
//! The lowest layer is always wanted (see [`LayerSet::with_floor`]): the hub's
//! resume rule and the relay's groups follow the first video track, which is
//! the lowest layer, and it is the layer a player in trouble falls to at once.

use std::time::{Duration, Instant};

use crate::media::{Catalog, Layer, TrackId};

/// A set of simulcast layers: bit 0 `low`, bit 1 `mid`, bit 2 `high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LayerSet(u8);

impl LayerSet {
    /// No layer.
    pub const EMPTY: LayerSet = LayerSet(0);
    /// Every layer: what a sink that never said otherwise gets.
    pub const ALL: LayerSet = LayerSet(0b111);

    /// From the wire form; `None` when a bit this version does not know is set.
    pub fn from_bits(bits: u8) -> Option<LayerSet> {
        (bits & !Self::ALL.0 == 0).then_some(LayerSet(bits))
    }

    /// The wire form.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set with `layer` added.
    #[must_use]
    pub fn with(self, layer: Layer) -> LayerSet {
        LayerSet(self.0 | 1 << layer.index())
    }

    /// Whether `layer` is in the set.
    pub fn contains(self, layer: Layer) -> bool {
        self.0 & 1 << layer.index() != 0
    }

    /// Both sets' layers.
    #[must_use]
    pub fn union(self, other: LayerSet) -> LayerSet {
        LayerSet(self.0 | other.0)
    }

    /// The layers of `self` not in `other`.
    #[must_use]
    pub fn minus(self, other: LayerSet) -> LayerSet {
        LayerSet(self.0 & !other.0)
    }

    /// True when every layer of `other` is in `self`.
    pub fn covers(self, other: LayerSet) -> bool {
        other.minus(self) == LayerSet::EMPTY
    }

    /// The set with the stream's lowest layer added (see the module docs).
    #[must_use]
    pub fn with_floor(self, lowest: Option<Layer>) -> LayerSet {
        match lowest {
            Some(l) => self.with(l),
            None => self,
        }
    }

    /// The layers in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Layer> {
        Layer::ALL.into_iter().filter(move |l| self.contains(*l))
    }
}

/// The layer of each track of a stream's catalog, and the track of each layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayerMap {
    of_track: Vec<Option<Layer>>,
    tracks: [Option<TrackId>; 3],
    lowest: Option<Layer>,
}

impl LayerMap {
    pub(crate) fn for_catalog(catalog: &Catalog) -> LayerMap {
        let mut map = LayerMap::default();
        for t in catalog.layers() {
            let Some(layer) = t.layer else { continue };
            let slot = usize::from(t.id);
            if map.of_track.len() <= slot {
                map.of_track.resize(slot + 1, None);
            }
            map.of_track[slot] = Some(layer);
            map.tracks[layer.index()] = Some(t.id);
            map.lowest = Some(map.lowest.map_or(layer, |l| l.min(layer)));
        }
        map
    }

    /// The layer `track` carries (`None`: not a layer, always forwarded).
    pub(crate) fn layer_of(&self, track: TrackId) -> Option<Layer> {
        self.of_track.get(usize::from(track)).copied().flatten()
    }

    /// The track carrying `layer`.
    pub(crate) fn track_of(&self, layer: Layer) -> Option<TrackId> {
        self.tracks[layer.index()]
    }

    /// The stream's lowest layer, always wanted.
    pub(crate) fn lowest(&self) -> Option<Layer> {
        self.lowest
    }
}

/// A layer waiting for its keyframe asks again this often while its packets
/// arrive: a single request may be lost or coalesced away, and nothing else
/// would ask (a player's own retry is for the layer it switches to; this one
/// may be a layer no player is on yet, e.g. the one an `auto` player may climb to).
pub const KEYFRAME_ASK_AGAIN: Duration = Duration::from_secs(1);

/// What a sink does with a packet of a layer track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerVerdict {
    /// Pass it on (to the sink's gate).
    Pass,
    /// Not wanted, or wanted but waiting for its keyframe.
    Drop,
    /// Waiting for its keyframe, and the last request is old: drop it, ask again.
    DropAndAsk,
}

/// Per sink: the layers it wants, and those waiting for their first keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerFilter {
    wanted: LayerSet,
    waiting: LayerSet,
    /// When each waiting layer's keyframe was last asked for.
    asked: [Option<Instant>; 3],
}

impl Default for LayerFilter {
    fn default() -> Self {
        LayerFilter {
            wanted: LayerSet::ALL,
            waiting: LayerSet::EMPTY,
            asked: [None; 3],
        }
    }
}

impl LayerFilter {
    /// The layers the sink wants now.
    pub fn wanted(&self) -> LayerSet {
        self.wanted
    }

    /// Sets the wanted layers; returns the ones added, whose keyframes to ask for now.
    pub fn set(&mut self, now: Instant, wanted: LayerSet) -> LayerSet {
        let added = wanted.minus(self.wanted);
        // A layer no longer wanted no longer waits; an added one waits for its keyframe.
        self.waiting = self.waiting.minus(self.waiting.minus(wanted)).union(added);
        for layer in added.iter() {
            self.asked[layer.index()] = Some(now);
        }
        self.wanted = wanted;
        added
    }

    /// A packet of `layer` (`keyframe`: it starts a frame the decoder can start on).
    pub fn offer(&mut self, now: Instant, layer: Layer, keyframe: bool) -> LayerVerdict {
        if !self.wanted.contains(layer) {
            return LayerVerdict::Drop;
        }
        if self.waiting.contains(layer) {
            if !keyframe {
                let asked = &mut self.asked[layer.index()];
                if asked.is_none_or(|at| now >= at + KEYFRAME_ASK_AGAIN) {
                    *asked = Some(now);
                    return LayerVerdict::DropAndAsk;
                }
                return LayerVerdict::Drop;
            }
            self.waiting = self.waiting.minus(LayerSet::EMPTY.with(layer));
        }
        LayerVerdict::Pass
    }
}

/// Settings of [`InterestDebounce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceConfig {
    /// At most one message per this interval.
    pub min_interval: Duration,
    /// A layer stops being asked for only after nobody wanted it for this long.
    pub hold_down: Duration,
}

impl Default for DebounceConfig {
    fn default() -> Self {
        DebounceConfig {
            min_interval: Duration::from_millis(250),
            hold_down: Duration::from_secs(2),
        }
    }
}

/// The interest one subscription sends upstream, debounced. Sans-IO: feed it
/// [`want`](Self::want), send what [`poll`](Self::poll) returns, wake at
/// [`next_deadline`](Self::next_deadline).
#[derive(Debug, Clone)]
pub struct InterestDebounce {
    cfg: DebounceConfig,
    /// What upstream was last told (`None`: nothing yet, i.e. every layer).
    sent: Option<LayerSet>,
    sent_at: Option<Instant>,
    wanted: LayerSet,
    /// Since when `wanted` lacks a layer of `sent`.
    shrunk_since: Option<Instant>,
}

impl InterestDebounce {
    /// Nothing sent yet; upstream sends every layer until the first message.
    pub fn new(cfg: DebounceConfig) -> Self {
        InterestDebounce {
            cfg,
            sent: None,
            sent_at: None,
            wanted: LayerSet::ALL,
            shrunk_since: None,
        }
    }

    /// The layers wanted now.
    pub fn want(&mut self, now: Instant, wanted: LayerSet) {
        self.wanted = wanted;
        let shrinks = !wanted.covers(self.sent.unwrap_or(LayerSet::ALL));
        self.shrunk_since = match (shrinks, self.shrunk_since) {
            (false, _) => None,
            (true, Some(at)) => Some(at),
            (true, None) => Some(now),
        };
    }

    /// What upstream should get now: additions at once, removals once held.
    fn target(&self, now: Instant) -> LayerSet {
        let held = self
            .shrunk_since
            .is_some_and(|at| now >= at + self.cfg.hold_down);
        match self.sent {
            Some(sent) if !held => sent.union(self.wanted),
            None if !held => LayerSet::ALL,
            _ => self.wanted,
        }
    }

    /// The set to send now, if any.
    pub fn poll(&mut self, now: Instant) -> Option<LayerSet> {
        let target = self.target(now);
        if Some(target) == self.sent || self.sent.is_none() && target == LayerSet::ALL {
            return None;
        }
        if self
            .sent_at
            .is_some_and(|at| now < at + self.cfg.min_interval)
        {
            return None;
        }
        self.sent = Some(target);
        self.sent_at = Some(now);
        if target.covers(self.wanted) && self.wanted.covers(target) {
            self.shrunk_since = None;
        }
        Some(target)
    }

    /// When to call [`poll`](Self::poll) next, if something is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        let interval = self.sent_at.map(|at| at + self.cfg.min_interval);
        if let Some(at) = self.shrunk_since {
            return [interval, Some(at + self.cfg.hold_down)]
                .into_iter()
                .flatten()
                .max();
        }
        // Only additions can be pending: they wait for the interval.
        (self.sent.is_some_and(|s| s != self.wanted))
            .then_some(interval)
            .flatten()
    }
}

#[cfg(test)]
#[path = "interest_tests.rs"]
mod tests;
