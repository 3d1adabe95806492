//! [`Source`] and [`Sink`]: the two ends of a stream.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::interest::LayerSet;
use super::shared::StreamShared;
use crate::media::{Catalog, MediaPacket, TrackId};

/// The one producer of a stream. Dropping it detaches it: sinks stay and get
/// nothing until a new source attaches.
pub struct Source {
    pub(super) shared: Arc<StreamShared>,
    id: u64,
    keyframe_rx: mpsc::Receiver<TrackId>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("stream", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Source {
    pub(crate) fn new(
        shared: Arc<StreamShared>,
        id: u64,
        keyframe_rx: mpsc::Receiver<TrackId>,
    ) -> Self {
        Source {
            shared,
            id,
            keyframe_rx,
        }
    }

    /// Hand a packet to every sink. Never blocks and never waits for a sink: a
    /// sink whose queue is full skips to the next keyframe.
    pub fn push(&self, pkt: MediaPacket) {
        self.shared.push(self.id, pkt);
    }

    /// The next keyframe request for the source to act on (a PLI to the
    /// publisher, or a request to the upstream relay), coalesced per track.
    /// Cancel-safe. Returns `None` only if the source was detached.
    pub async fn keyframe_request(&mut self) -> Option<TrackId> {
        loop {
            let deadline = match self.shared.due_keyframe_request() {
                Ok(track) => return Some(track),
                Err(deadline) => deadline,
            };
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                    None => pending().await,
                }
            };
            tokio::select! {
                request = self.keyframe_rx.recv() => {
                    if let Some(track) = self.shared.coalesce_keyframe_request(request?) {
                        return Some(track);
                    }
                }
                () = timer => {}
            }
        }
    }

    /// The publisher renegotiated, or the upstream announced a new catalog.
    pub fn set_catalog(&self, catalog: Catalog) {
        self.shared.set_source_catalog(self.id, catalog);
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.shared.detach_source(self.id);
        tracing::debug!(stream = %self.shared.name, "source detached");
    }
}

/// One consumer of a stream. Dropping it unsubscribes.
pub struct Sink {
    pub(super) shared: Arc<StreamShared>,
    id: u64,
    rx: mpsc::Receiver<MediaPacket>,
    skipped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("stream", &self.shared.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Sink {
    pub(crate) fn new(
        shared: Arc<StreamShared>,
        id: u64,
        rx: mpsc::Receiver<MediaPacket>,
        skipped: Arc<AtomicU64>,
    ) -> Self {
        Sink {
            shared,
            id,
            rx,
            skipped,
        }
    }

    /// The next packet. The first one is a keyframe (or any packet of an
    /// audio-only stream), and so is the first one after a skip. Waits across
    /// source switches; `None` once the stream [closed](super::StreamHandle::close)
    /// this sink. Cancel-safe.
    pub async fn recv(&mut self) -> Option<MediaPacket> {
        self.rx.recv().await
    }

    /// A packet if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<MediaPacket> {
        self.rx.try_recv().ok()
    }

    /// Ask the source for a keyframe of `track` (coalesced with other sinks'
    /// requests). Dropped silently while the stream has no source.
    pub fn request_keyframe(&self, track: TrackId) {
        self.shared.request_keyframe(track);
    }

    /// The simulcast layers this sink wants (the stream's lowest is always added). A layer
    /// it gains starts at that layer's next keyframe, which is asked for; until the first
    /// call the sink gets every layer.
    pub fn set_layers(&self, wanted: LayerSet) {
        self.shared.set_sink_layers(self.id, wanted);
    }

    /// A handle that sets this sink's layers from elsewhere (e.g. the loop whose task
    /// owns the sink).
    pub fn layers_handle(&self) -> SinkLayers {
        SinkLayers {
            shared: self.shared.clone(),
            id: self.id,
        }
    }

    /// How many times this sink fell behind and skipped to the next keyframe.
    pub fn skipped_groups(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

/// Sets one sink's layers ([`Sink::set_layers`]) without owning the sink.
#[derive(Clone)]
pub struct SinkLayers {
    shared: Arc<StreamShared>,
    id: u64,
}

impl std::fmt::Debug for SinkLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkLayers")
            .field("stream", &self.shared.name)
            .field("id", &self.id)
            .finish()
    }
}

impl SinkLayers {
    /// As [`Sink::set_layers`]; nothing once the sink is gone.
    pub fn set(&self, wanted: LayerSet) {
        self.shared.set_sink_layers(self.id, wanted);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.remove_sink(self.id);
    }
}
