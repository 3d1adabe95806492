//! The epoch of each origin record this node holds (main or regional), by
//! stream: relay subscriptions must name it (see `relay_auth.rs`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Origin records held by this node: stream → epoch.
#[derive(Debug, Default)]
pub struct OriginEpochs {
    epochs: Mutex<HashMap<String, i64>>,
}

impl OriginEpochs {
    fn epochs(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        // Every step leaves the map whole: a poisoned lock still guards it.
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the epoch of an origin record this node holds.
    pub fn set(&self, stream: &str, epoch: i64) {
        self.epochs().insert(stream.to_owned(), epoch);
    }

    /// Forgets an origin record.
    pub fn clear(&self, stream: &str) {
        self.epochs().remove(stream);
    }

    /// The epoch of this node's origin record of a stream.
    pub fn get(&self, stream: &str) -> Option<i64> {
        self.epochs().get(stream).copied()
    }

    /// Streams this node is an origin of.
    pub fn streams(&self) -> Vec<String> {
        self.epochs().keys().cloned().collect()
    }
}
