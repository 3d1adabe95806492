//! A small key-value interface with etcd's semantics: revisions, leases,
//! transactions guarded by revision compares, and prefix watches.
//!
//! Two implementations: [`etcd::EtcdKv`] (production, HA) and
//! [`memory::MemoryKv`] (a single-process dev store, not HA). Everything above
//! this module is written once against [`Kv`], so one behaviour suite runs
//! against both.

pub mod etcd;
mod lease_stream;
pub mod memory;
pub mod renewals;

use std::time::Duration;

use tokio::sync::mpsc;

/// A stored key with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision at which the key was created (its "epoch").
    pub create_revision: i64,
    /// Revision of the last change to the key.
    pub mod_revision: i64,
    /// Lease the key is bound to, 0 for none.
    pub lease: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or updated.
    Put(KeyValue),
    /// The key was deleted (explicitly or by lease expiry).
    Delete {
        /// The deleted key.
        key: String,
        /// Revision of the deletion.
        mod_revision: i64,
    },
}

/// A batch of changes, all at one revision or ascending revisions.
#[derive(Debug, Clone)]
pub struct WatchBatch {
    /// Store revision after these events.
    pub revision: i64,
    /// The events, in order.
    pub events: Vec<WatchEvent>,
}

/// Receives watch batches; an `Err` ends the watch (the caller resyncs).
pub type WatchReceiver = mpsc::Receiver<Result<WatchBatch, KvError>>;

/// A compare in a transaction guard; all compares must hold.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key's create revision equals this (0: the key does not exist).
    CreateRevision(String, i64),
    /// The key's mod revision equals this (0: the key does not exist).
    ModRevision(String, i64),
}

/// An operation in a transaction branch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Put a key, optionally bound to a lease.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Lease id, 0 for none.
        lease: i64,
    },
    /// Delete one key.
    Delete(String),
    /// Delete every key with this prefix.
    DeletePrefix(String),
    /// Read one key; its value appears in [`TxnOutcome::gets`].
    Get(String),
}

/// The result of a transaction.
#[derive(Debug, Clone)]
pub struct TxnOutcome {
    /// Whether the guard held (the `then` branch ran).
    pub succeeded: bool,
    /// Store revision after the transaction.
    pub revision: i64,
    /// Results of the `Get` operations of the branch that ran, in order.
    pub gets: Vec<Option<KeyValue>>,
}

/// Failures of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// The store could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
    /// The requested watch revision has been compacted away; resync.
    #[error("watch revision compacted")]
    Compacted,
    /// Any other store failure.
    #[error("store error: {0}")]
    Other(String),
}

/// The store: etcd or the in-memory dev store.
#[derive(Clone)]
pub enum Kv {
    /// A real etcd cluster.
    Etcd(Box<etcd::EtcdKv>),
    /// The single-process dev store.
    Memory(memory::MemoryKv),
}

macro_rules! dispatch {
    ($self:ident, $kv:ident => $e:expr) => {
        match $self {
            Kv::Etcd($kv) => $e,
            Kv::Memory($kv) => $e,
        }
    };
}

impl Kv {
    /// Grants a lease with this time to live.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, KvError> {
        dispatch!(self, kv => kv.grant(ttl).await)
    }

    /// Renews a lease for its full time to live.
    pub async fn keep_alive(&self, lease: i64) -> Result<(), KvError> {
        dispatch!(self, kv => kv.keep_alive(lease).await)
    }

    /// Revokes a lease, deleting every key bound to it; returns the store
    /// revision after the deletion.
    pub async fn revoke(&self, lease: i64) -> Result<i64, KvError> {
        dispatch!(self, kv => kv.revoke(lease).await)
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        dispatch!(self, kv => kv.get(key).await)
    }

    /// Reads every key with a prefix, and the store revision of the read.
    pub async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), KvError> {
        dispatch!(self, kv => kv.range(prefix).await)
    }

    /// Runs a transaction: if every compare holds, `then`, else `otherwise`.
    pub async fn txn(
        &self,
        compares: Vec<Compare>,
        then: Vec<Op>,
        otherwise: Vec<Op>,
    ) -> Result<TxnOutcome, KvError> {
        dispatch!(self, kv => kv.txn(compares, then, otherwise).await)
    }

    /// Puts one key unconditionally.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<i64, KvError> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
            lease,
        };
        Ok(self.txn(Vec::new(), vec![op], Vec::new()).await?.revision)
    }

    /// Watches every key with a prefix from a revision on.
    pub async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchReceiver, KvError> {
        dispatch!(self, kv => kv.watch(prefix, from_revision).await)
    }

    /// A cheap read that proves the store answers.
    pub async fn probe(&self) -> Result<(), KvError> {
        dispatch!(self, kv => kv.probe().await)
    }
}
