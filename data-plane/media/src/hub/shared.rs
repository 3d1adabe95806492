//! The hub's shared state and every function that takes its locks.
//!
//! # Locks
//!
//! There are two kinds of mutex, both here and taken only by the functions of this module
//! (the registry, the handles and the endpoints call these; they never lock anything):
//!
//! 1. the hub's map of streams, [`HubShared::streams`];
//! 2. each stream's own state, [`StreamShared::inner`].
//!
//! **Lock order: the map first, then a stream's lock.** Nothing takes the map while it
//! holds a stream's lock, and nothing holds two streams' locks at once. Whatever adds a
//! stream to the map or takes one out (attaching a source, subscribing to a released
//! stream, the last endpoint leaving) holds both, so a stream is in the map exactly while
//! it is not `removed`. The watch channels a stream publishes are sent to with its lock
//! held, so their updates stay in order. A poisoned lock is recovered ([`lock`]): every
//! critical section leaves the state consistent between statements.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::{mpsc, watch};

use super::coalesce::KeyframeCoalescer;
use super::config::{HubConfig, HubError};
use super::gate::ResumeRule;
use super::gop::GopCache;
use super::interest::{LayerMap, LayerSet};
use super::slot::SinkSlot;
use crate::media::{Catalog, MediaPacket, TrackId};

/// Lock a mutex, recovering the data if a panicking thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The time the hub's rules run on (tokio's clock, so tests can pause it).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// What a stream looks like now; observe changes with
/// [`StreamHandle::watch_state`](super::StreamHandle::watch_state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The tracks, as given by the current (or last) source.
    pub catalog: Catalog,
    /// True while a source is attached.
    pub has_source: bool,
    /// How many sources have attached so far: changes on every upstream switch.
    pub source_epoch: u64,
}

/// The streams of a hub, by name.
pub(crate) struct HubShared {
    cfg: HubConfig,
    /// Lock 1 of the order: taken before any stream's lock.
    streams: Mutex<HashMap<String, Arc<StreamShared>>>,
}

/// A source just attached: its stream, its id there and its keyframe requests.
pub(crate) type AttachedSource = (Arc<StreamShared>, u64, mpsc::Receiver<TrackId>);

/// A sink just added: its stream, its id there, its queue and its skip counter.
pub(crate) type AddedSink = (
    Arc<StreamShared>,
    u64,
    mpsc::Receiver<MediaPacket>,
    Arc<AtomicU64>,
);

impl HubShared {
    pub(crate) fn new(cfg: HubConfig) -> Self {
        HubShared {
            cfg,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Attach the source of `stream`, creating the stream or re-attaching to it (sinks
    /// rewind to the new source's next keyframe, which is asked for if anyone waits).
    pub(crate) fn attach_source(
        self: &Arc<Self>,
        stream: &str,
        catalog: Catalog,
    ) -> Result<AttachedSource, HubError> {
        let mut map = lock(&self.streams);
        let shared = map
            .entry(stream.to_owned())
            .or_insert_with(|| Arc::new(StreamShared::new(stream, Arc::downgrade(self), &self.cfg)))
            .clone();
        let mut inner = lock(&shared.inner);
        if inner.source.is_some() {
            return Err(HubError::SourceAttached(stream.to_owned()));
        }
        let (keyframe_tx, keyframe_rx) = mpsc::channel(self.cfg.keyframe_request_queue.max(1));
        let id = inner.next_id();
        inner.set_catalog(catalog);
        inner.source_epoch += 1;
        inner.removed = false;
        inner.gop.clear();
        inner.coalescer.reset();
        for slot in inner.sinks.values_mut() {
            slot.rewind();
        }
        if let ResumeRule::VideoKeyframe(track) = inner.rule
            && !inner.sinks.is_empty()
        {
            // Cannot fail: the channel is new and has room.
            let _ = keyframe_tx.try_send(track);
        }
        inner.source = Some(SourceSlot { id, keyframe_tx });
        shared.publish(&inner);
        tracing::debug!(stream, epoch = inner.source_epoch, "source attached");
        drop(inner);
        drop(map);
        Ok((shared, id, keyframe_rx))
    }

    /// The stream, if the hub carries it.
    pub(crate) fn get(&self, stream: &str) -> Option<Arc<StreamShared>> {
        lock(&self.streams).get(stream).cloned()
    }

    /// The names of the streams the hub carries, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.streams).keys().cloned().collect();
        names.sort();
        names
    }
}

struct SourceSlot {
    id: u64,
    keyframe_tx: mpsc::Sender<TrackId>,
}

/// A stream's state behind its lock (lock 2 of the order).
struct StreamInner {
    catalog: Catalog,
    rule: ResumeRule,
    layers: LayerMap,
    source: Option<SourceSlot>,
    source_epoch: u64,
    next_id: u64,
    sinks: HashMap<u64, SinkSlot>,
    gop: GopCache,
    coalescer: KeyframeCoalescer,
    /// Taken out of the hub's map (no source, no sinks).
    removed: bool,
}

impl StreamInner {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The catalog changed (a new source, or the source's new catalog).
    fn set_catalog(&mut self, catalog: Catalog) {
        self.rule = ResumeRule::for_catalog(&catalog);
        self.layers = LayerMap::for_catalog(&catalog);
        self.catalog = catalog;
    }

    /// True if `id` is the attached source.
    fn is_source(&self, id: u64) -> bool {
        self.source.as_ref().map(|s| s.id) == Some(id)
    }

    /// The layers some sink wants (always the lowest).
    fn interest(&self) -> LayerSet {
        self.sinks
            .values()
            .fold(LayerSet::EMPTY, |acc, s| acc.union(s.wanted()))
            .with_floor(self.layers.lowest())
    }

    fn idle(&self) -> bool {
        self.source.is_none() && self.sinks.is_empty()
    }
}

/// One stream: its state and what its watchers see.
pub(crate) struct StreamShared {
    pub(crate) name: String,
    hub: Weak<HubShared>,
    cfg: HubConfig,
    inner: Mutex<StreamInner>,
    /// Sent to with the lock held; read by handles without it.
    pub(crate) state: watch::Sender<StreamState>,
    pub(crate) sink_count: watch::Sender<usize>,
    pub(crate) interest: watch::Sender<LayerSet>,
}

impl StreamShared {
    fn new(name: &str, hub: Weak<HubShared>, cfg: &HubConfig) -> Self {
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

    /// Publish the state watchers see; called with the lock held so updates stay ordered.
    fn publish(&self, inner: &StreamInner) {
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

    /// Source `id` hands a packet to every sink (nothing if it is no longer the source).
    pub(crate) fn push(&self, id: u64, pkt: MediaPacket) {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if !inner.is_source(id) {
            return;
        }
        if pkt.keyframe {
            inner.coalescer.on_keyframe(now(), pkt.track);
        }
        inner.gop.push(&inner.rule, &pkt);
        let rule = inner.rule;
        let layer = inner.layers.layer_of(pkt.track);
        let keyframes = inner.source.as_ref().map(|s| &s.keyframe_tx);
        let at = now();
        let before = inner.sinks.len();
        inner
            .sinks
            .retain(|_, slot| slot.offer(at, &rule, &pkt, (layer, keyframes)));
        if inner.sinks.len() != before {
            self.publish(inner);
        }
    }

    /// A coalesced keyframe request due now, else when the next one may be due.
    pub(crate) fn due_keyframe_request(&self) -> Result<TrackId, Option<std::time::Instant>> {
        let mut inner = lock(&self.inner);
        match inner.coalescer.poll(now()) {
            Some(track) => Ok(track),
            None => Err(inner.coalescer.next_deadline()),
        }
    }

    /// A sink's request for a keyframe of `track`, through the coalescer.
    pub(crate) fn coalesce_keyframe_request(&self, track: TrackId) -> Option<TrackId> {
        lock(&self.inner).coalescer.request(now(), track)
    }

    /// Source `id` has a new catalog (nothing if it is no longer the source).
    pub(crate) fn set_source_catalog(&self, id: u64, catalog: Catalog) {
        let mut inner = lock(&self.inner);
        if !inner.is_source(id) {
            return;
        }
        let rule = ResumeRule::for_catalog(&catalog);
        if rule != inner.rule {
            inner.gop.clear();
            for slot in inner.sinks.values_mut() {
                slot.rewind();
            }
        }
        inner.set_catalog(catalog);
        self.publish(&inner);
    }

    /// Source `id` detached; the stream leaves the hub if no sink is left either.
    pub(crate) fn detach_source(&self, id: u64) {
        self.update_and_release(|inner| {
            if inner.is_source(id) {
                inner.source = None;
                inner.gop.clear();
            }
        });
    }

    /// Ask the source for a keyframe of `track`; dropped while there is no source.
    pub(crate) fn request_keyframe(&self, track: TrackId) {
        let inner = lock(&self.inner);
        if let Some(source) = &inner.source {
            // A full queue already holds requests enough to trigger one.
            let _ = source.keyframe_tx.try_send(track);
        }
    }

    /// Sink `id`'s layers changed: its filter, keyframes for the layers it gained, the union.
    pub(crate) fn set_sink_layers(&self, id: u64, wanted: LayerSet) {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let wanted = wanted.with_floor(inner.layers.lowest());
        let Some(slot) = inner.sinks.get_mut(&id) else {
            return;
        };
        let added = slot.layers.set(now(), wanted);
        if let Some(source) = &inner.source {
            for track in added.iter().filter_map(|l| inner.layers.track_of(l)) {
                // A full queue already holds requests enough to trigger one.
                let _ = source.keyframe_tx.try_send(track);
            }
        }
        self.publish(inner);
    }

    /// Sink `id` left; the stream leaves the hub if nothing is left.
    pub(crate) fn remove_sink(&self, id: u64) {
        self.update_and_release(|inner| {
            inner.sinks.remove(&id);
        });
    }

    /// Disconnect every sink; the stream leaves the hub if it has no source either.
    pub(crate) fn close(&self) {
        self.update_and_release(|inner| inner.sinks.clear());
    }

    /// A new sink of whatever stream now carries this one's name (this one, brought back
    /// into the hub if it was released since), starting on the cached group.
    pub(crate) fn subscribe(self: &Arc<Self>, layers: Option<LayerSet>) -> AddedSink {
        let Some(hub) = self.hub.upgrade() else {
            let mut inner = lock(&self.inner);
            return self.add_sink(&mut inner, layers);
        };
        let mut map = lock(&hub.streams);
        let shared = map
            .entry(self.name.clone())
            .or_insert_with(|| self.clone())
            .clone();
        let mut inner = lock(&shared.inner);
        inner.removed = false;
        shared.add_sink(&mut inner, layers)
    }

    /// Add a sink, starting it on the cached group when there is one.
    fn add_sink(self: &Arc<Self>, inner: &mut StreamInner, layers: Option<LayerSet>) -> AddedSink {
        let (tx, rx) = mpsc::channel(self.cfg.sink_queue.max(1));
        let skipped = Arc::new(AtomicU64::new(0));
        let mut slot = SinkSlot::new(tx, skipped.clone());
        let now = now();
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
        (self.clone(), id, rx, skipped)
    }

    /// Run `f` on the state, then take the stream out of the hub if it has neither
    /// source nor sinks left.
    fn update_and_release(&self, f: impl FnOnce(&mut StreamInner)) {
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
