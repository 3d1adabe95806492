//! [`Hub`]: the streams of this node, by name.

use std::sync::Arc;

use super::config::{HubConfig, HubError};
use super::endpoints::Source;
use super::shared::HubShared;
use super::stream::StreamHandle;
use crate::media::Catalog;

/// All streams of this node. Cheap to clone; clones share the streams.
///
/// A stream exists while it has a source or a sink; it is created by
/// [`attach_source`](Hub::attach_source) and removed when its source is gone
/// and its last sink dropped.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
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
            shared: Arc::new(HubShared::new(cfg)),
        }
    }

    /// Attach the source of `stream`: creates the stream, or re-attaches a
    /// source to an existing one (upstream switch), keeping its sinks. Sinks
    /// then wait for the new source's next keyframe, and the new source is
    /// asked for one if anyone is waiting.
    ///
    /// Fails if the stream has a source already.
    pub fn attach_source(&self, stream: &str, catalog: Catalog) -> Result<Source, HubError> {
        let (shared, id, keyframe_rx) = self.shared.attach_source(stream, catalog)?;
        Ok(Source::new(shared, id, keyframe_rx))
    }

    /// The stream, if this node carries it.
    pub fn get(&self, stream: &str) -> Option<StreamHandle> {
        self.shared.get(stream).map(StreamHandle::new)
    }

    /// Names of the streams this node carries, sorted.
    pub fn streams(&self) -> Vec<String> {
        self.shared.names()
    }
}
