//! [`StreamHandle`]: a stream as everyone but its source sees it, and the way from an
//! endpoint to its stream's handle.

use std::sync::Arc;

use tokio::sync::watch;

use super::endpoints::{Sink, Source};
use super::interest::LayerSet;
use super::shared::{StreamShared, StreamState};
use crate::media::Catalog;

/// A stream of this node, as seen by everyone but its source. Clone freely.
#[derive(Clone)]
pub struct StreamHandle {
    shared: Arc<StreamShared>,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl StreamHandle {
    pub(crate) fn new(shared: Arc<StreamShared>) -> Self {
        StreamHandle { shared }
    }

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
        let (shared, id, rx, skipped) = self.shared.subscribe(layers);
        Sink::new(shared, id, rx, skipped)
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
        self.shared.close();
    }
}

impl Source {
    /// The stream this source feeds.
    pub fn stream(&self) -> StreamHandle {
        StreamHandle::new(self.shared.clone())
    }
}

impl Sink {
    /// The stream this sink consumes.
    pub fn stream(&self) -> StreamHandle {
        StreamHandle::new(self.shared.clone())
    }
}
