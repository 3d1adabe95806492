//! One stream's shared state and the handle the rest of the node uses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::{mpsc, watch};

use super::coalesce::KeyframeCoalescer;
use super::config::HubConfig;
use super::endpoints::Sink;
use super::gate::{ResumeRule, SinkGate, Verdict};
use super::gop::GopCache;
use super::interest::{LayerFilter, LayerMap, LayerSet, LayerVerdict};
use super::registry::HubInner;
use crate::media::{Catalog, Layer, MediaPacket, TrackId};

/// Lock a mutex, recovering the data if a panicking thread poisoned it: every
/// critical section here leaves the state consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a stream looks like now; observe changes with [`StreamHandle::watch_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The tracks, as given by the current (or last) source.
    pub catalog: Catalog,
    /// True while a source is attached.
    pub has_source: bool,
    /// How many sources have attached so far: changes on every upstream switch.
    pub source_epoch: u64,
}

pub(crate) struct SourceSlot {
    pub(crate) id: u64,
    pub(crate) keyframe_tx: mpsc::Sender<TrackId>,
}

pub(crate) struct SinkSlot {
    tx: mpsc::Sender<MediaPacket>,
    gate: SinkGate,
    skipped: Arc<AtomicU64>,
    layers: LayerFilter,
}

impl SinkSlot {
    /// Wait for the next keyframe again (the source changed).
    pub(crate) fn rewind(&mut self) {
        self.gate.rewind();
    }

    /// Offer a packet through the gate; false when the sink is gone.
    /// `layer`: the simulcast layer the packet's track carries, if any; `keyframes`: where
    /// to ask the source for a keyframe of a layer the sink waits for.
    pub(crate) fn offer(
        &mut self,
        now: std::time::Instant,
        rule: &ResumeRule,
        pkt: &MediaPacket,
        (layer, keyframes): (Option<Layer>, Option<&mpsc::Sender<TrackId>>),
    ) -> bool {
        if let Some(layer) = layer {
            match self.layers.offer(now, layer, pkt.keyframe) {
                LayerVerdict::Pass => {}
                LayerVerdict::Drop => return !self.tx.is_closed(),
                LayerVerdict::DropAndAsk => {
                    if let Some(tx) = keyframes {
                        // A full queue already holds requests enough to trigger one.
                        let _ = tx.try_send(pkt.track);
                    }
                    return !self.tx.is_closed();
                }
            }
        }
        let room = self.tx.capacity();
        let alive = match self.gate.offer(rule, pkt, room) {
            Verdict::Drop => !self.tx.is_closed(),
            Verdict::Deliver => match self.tx.try_send(pkt.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Only the holder of the stream lock sends, so the room the
                    // gate saw is still there; treat a surprise as an overflow.
                    self.gate.offer(rule, pkt, 0);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        };
        self.skipped
            .store(self.gate.skipped_groups(), Ordering::Relaxed);
        alive
    }
}

pub(crate) struct StreamInner {
    pub(crate) catalog: Catalog,
    pub(crate) rule: ResumeRule,
    pub(crate) layers: LayerMap,
    pub(crate) source: Option<SourceSlot>,
    pub(crate) source_epoch: u64,
    next_id: u64,
    pub(crate) sinks: HashMap<u64, SinkSlot>,
    pub(crate) gop: GopCache,
    pub(crate) coalescer: KeyframeCoalescer,
    /// Taken out of the hub's map (no source, no sinks).
    pub(crate) removed: bool,
}

impl StreamInner {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The catalog changed (a new source, or the source's new catalog).
    pub(crate) fn set_catalog(&mut self, catalog: Catalog) {
        self.rule = ResumeRule::for_catalog(&catalog);
        self.layers = LayerMap::for_catalog(&catalog);
        self.catalog = catalog;
    }

    /// The layers some sink wants (always the lowest).
    fn interest(&self) -> LayerSet {
        self.sinks
            .values()
            .fold(LayerSet::EMPTY, |acc, s| acc.union(s.layers.wanted()))
            .with_floor(self.layers.lowest())
    }

    fn idle(&self) -> bool {
        self.source.is_none() && self.sinks.is_empty()
    }
}

pub(crate) struct StreamShared {
    pub(crate) name: String,
    pub(crate) hub: Weak<HubInner>,
    pub(crate) cfg: HubConfig,
    pub(crate) inner: Mutex<StreamInner>,
    state: watch::Sender<StreamState>,
    sink_count: watch::Sender<usize>,
    interest: watch::Sender<LayerSet>,
}

impl StreamShared {
    pub(crate) fn new(name: &str, hub: Weak<HubInner>, cfg: &HubConfig) -> Self {
        let catalog = Catalog::default();
        let state = StreamState {
            catalog: catalog.clone(),
            has_source: false,
            source_epoch: 0,
        };
        StreamShared {
            name: name.to_owned(),
            hub,
            inner: Mutex::new(StreamInner {
                rule: ResumeRule::for_catalog(&catalog),
                layers: LayerMap::default(),
                catalog,
                source: None,
                source_epoch: 0,
                next_id: 0,
                sinks: HashMap::new(),
                gop: GopCache::new(cfg.gop_max_bytes, cfg.gop_max_packets),
                coalescer: KeyframeCoalescer::new(cfg.keyframe_request_interval),
                removed: false,
            }),
            cfg: cfg.clone(),
            state: watch::Sender::new(state),
            sink_count: watch::Sender::new(0),
            interest: watch::Sender::new(LayerSet::EMPTY),
        }
    }

    /// Publish the state watchers see; call with the lock held so updates stay ordered.
    pub(crate) fn publish(&self, inner: &StreamInner) {
        let next = StreamState {
            catalog: inner.catalog.clone(),
            has_source: inner.source.is_some(),
            source_epoch: inner.source_epoch,
        };
        self.state.send_if_modified(|cur| {
            let changed = *cur != next;
            *cur = next;
            changed
        });
        self.sink_count.send_if_modified(|cur| {
            let changed = *cur != inner.sinks.len();
            *cur = inner.sinks.len();
            changed
        });
        let interest = inner.interest();
        self.interest.send_if_modified(|cur| {
            let changed = *cur != interest;
            *cur = interest;
            changed
        });
    }

    /// A sink's layers changed: its filter, keyframes for the layers it gained, the union.
    pub(crate) fn set_sink_layers(&self, id: u64, wanted: LayerSet) {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let wanted = wanted.with_floor(inner.layers.lowest());
        let Some(slot) = inner.sinks.get_mut(&id) else {
            return;
        };
        let added = slot
            .layers
            .set(tokio::time::Instant::now().into_std(), wanted);
        if let Some(source) = &inner.source {
            for track in added.iter().filter_map(|l| inner.layers.track_of(l)) {
                // A full queue already holds requests enough to trigger one.
                let _ = source.keyframe_tx.try_send(track);
            }
        }
        self.publish(inner);
    }

    /// Add a sink, starting it on the cached group when there is one.
    pub(crate) fn add_sink(
        self: &Arc<Self>,
        inner: &mut StreamInner,
        layers: Option<LayerSet>,
    ) -> Sink {
        let (tx, rx) = mpsc::channel(self.cfg.sink_queue.max(1));
        let skipped = Arc::new(AtomicU64::new(0));
        let mut slot = SinkSlot {
            tx,
            gate: SinkGate::new(),
            skipped: skipped.clone(),
            layers: LayerFilter::default(),
        };
        let now = tokio::time::Instant::now().into_std();
        if let Some(wanted) = layers {
            slot.layers
                .set(now, wanted.with_floor(inner.layers.lowest()));
        }
        for pkt in inner.gop.packets() {
            let layer = inner.layers.layer_of(pkt.track);
            slot.offer(now, &inner.rule, pkt, (layer, None));
        }
        let id = inner.next_id();
        inner.sinks.insert(id, slot);
        self.publish(inner);
        Sink::new(self.clone(), id, rx, skipped)
    }

    /// Run `f` on the state, then take the stream out of the hub if it has
    /// neither source nor sinks left.
    pub(crate) fn update_and_release(&self, f: impl FnOnce(&mut StreamInner)) {
        let hub = self.hub.upgrade();
        let mut map = hub.as_ref().map(|hub| lock(&hub.streams));
        let mut inner = lock(&self.inner);
        f(&mut inner);
        if inner.idle() && !inner.removed {
            inner.removed = true;
            if let Some(map) = map.as_mut()
                && map
                    .get(&self.name)
                    .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), self))
            {
                map.remove(&self.name);
                tracing::debug!(stream = %self.name, "stream released from hub");
            }
        }
        self.publish(&inner);
    }
}

/// A stream of this node, as seen by everyone but its source. Clone freely.
#[derive(Clone)]
pub struct StreamHandle {
    pub(crate) shared: Arc<StreamShared>,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl StreamHandle {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current catalog (empty until a source attached).
    pub fn catalog(&self) -> Catalog {
        self.shared.state.borrow().catalog.clone()
    }

    /// True while a source is attached.
    pub fn has_source(&self) -> bool {
        self.shared.state.borrow().has_source
    }

    /// Number of sinks.
    pub fn sink_count(&self) -> usize {
        *self.shared.sink_count.borrow()
    }

    /// A new sink. It starts on the cached group from its keyframe if there is
    /// one, else it waits for the next keyframe.
    pub fn subscribe(&self) -> Sink {
        self.subscribe_with(None)
    }

    /// A new sink that wants only these simulcast layers from the start (see
    /// [`Sink::set_layers`]), so the stream's interest never widens for it.
    pub fn subscribe_layers(&self, wanted: LayerSet) -> Sink {
        self.subscribe_with(Some(wanted))
    }

    fn subscribe_with(&self, layers: Option<LayerSet>) -> Sink {
        let hub = self.shared.hub.upgrade();
        let Some(hub) = hub else {
            let mut inner = lock(&self.shared.inner);
            return self.shared.add_sink(&mut inner, layers);
        };
        let mut map = lock(&hub.streams);
        // The stream may have been released since this handle was taken:
        // subscribe to whatever now carries the name, bringing it back if needed.
        let shared = map
            .entry(self.shared.name.clone())
            .or_insert_with(|| self.shared.clone())
            .clone();
        let mut inner = lock(&shared.inner);
        inner.removed = false;
        shared.add_sink(&mut inner, layers)
    }

    /// Watch the stream's state: catalog known or changed, source attached or
    /// ended, upstream switched. `changed().await` on the receiver to wait.
    pub fn watch_state(&self) -> watch::Receiver<StreamState> {
        self.shared.state.subscribe()
    }

    /// Watch the simulcast layers the stream's sinks want (always the lowest; every
    /// layer while a sink never said otherwise), to pull only those upstream.
    pub fn watch_interest(&self) -> watch::Receiver<LayerSet> {
        self.shared.interest.subscribe()
    }

    /// Watch the number of sinks, e.g. to linger and release the upstream once
    /// it drops to 0.
    pub fn watch_sink_count(&self) -> watch::Receiver<usize> {
        self.shared.sink_count.subscribe()
    }

    /// Wait until no source is attached (returns at once if none is).
    pub async fn source_ended(&self) {
        let mut rx = self.watch_state();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|s| !s.has_source).await;
    }

    /// Disconnect every sink: their `recv` returns `None` once drained. The
    /// stream leaves the hub if it has no source either.
    pub fn close(&self) {
        self.shared.update_and_release(|inner| inner.sinks.clear());
    }
}
