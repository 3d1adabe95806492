//! [`Hub`]: the streams of this node, by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::config::{HubConfig, HubError};
use super::endpoints::Source;
use super::gate::ResumeRule;
use super::stream::{SourceSlot, StreamHandle, StreamShared, lock};
use crate::media::Catalog;

pub(crate) struct HubInner {
    cfg: HubConfig,
    /// Lock order: this map first, then a stream's own lock.
    pub(crate) streams: Mutex<HashMap<String, Arc<StreamShared>>>,
}

/// All streams of this node. Cheap to clone; clones share the streams.
///
/// A stream exists while it has a source or a sink; it is created by
/// [`attach_source`](Hub::attach_source) and removed when its source is gone
/// and its last sink dropped.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("streams", &self.streams())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(cfg: HubConfig) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                cfg,
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Attach the source of `stream`: creates the stream, or re-attaches a
    /// source to an existing one (upstream switch), keeping its sinks. Sinks
    /// then wait for the new source's next keyframe, and the new source is
    /// asked for one if anyone is waiting.
    ///
    /// Fails if the stream has a source already.
    pub fn attach_source(&self, stream: &str, catalog: Catalog) -> Result<Source, HubError> {
        let mut map = lock(&self.inner.streams);
        let shared = map
            .entry(stream.to_owned())
            .or_insert_with(|| {
                Arc::new(StreamShared::new(
                    stream,
                    Arc::downgrade(&self.inner),
                    &self.inner.cfg,
                ))
            })
            .clone();
        let mut inner = lock(&shared.inner);
        if inner.source.is_some() {
            return Err(HubError::SourceAttached(stream.to_owned()));
        }
        let (keyframe_tx, keyframe_rx) =
            mpsc::channel(self.inner.cfg.keyframe_request_queue.max(1));
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
        Ok(Source::new(shared, id, keyframe_rx))
    }

    /// The stream, if this node carries it.
    pub fn get(&self, stream: &str) -> Option<StreamHandle> {
        lock(&self.inner.streams)
            .get(stream)
            .map(|shared| StreamHandle {
                shared: shared.clone(),
            })
    }

    /// Names of the streams this node carries, sorted.
    pub fn streams(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.streams).keys().cloned().collect();
        names.sort();
        names
    }
}
