//! [`super::Kv`] in process memory, with etcd's semantics (revisions, leases
//! that expire, guarded transactions, prefix watches with replay).
//!
//! For a single-machine dev cluster and unit tests. It is **not HA**: the
//! state lives and dies with one control-plane process, so only one replica
//! may use it. Lease expiry runs on tokio's clock, so tests can pause time.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::{Compare, KeyValue, KvError, Op, TxnOutcome, WatchBatch, WatchEvent, WatchReceiver};

/// Events kept for watches that start at an older revision.
const HISTORY: usize = 16 * 1024;

/// The in-memory store. Cloning shares the state.
#[derive(Clone)]
pub struct MemoryKv {
    inner: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    lease_changed: Arc<Notify>,
}

#[derive(Default)]
struct State {
    revision: i64,
    keys: BTreeMap<String, KeyValue>,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
    history: VecDeque<(i64, WatchEvent)>,
    watchers: Vec<(String, mpsc::Sender<Result<WatchBatch, KvError>>)>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKv {
    /// An empty store; spawns the lease-expiry task on the current runtime.
    pub fn new() -> Self {
        let inner = Arc::new(Shared {
            state: Mutex::new(State {
                next_lease: 0x5_7a7a,
                ..State::default()
            }),
            lease_changed: Arc::new(Notify::new()),
        });
        tokio::spawn(expire_leases(Arc::downgrade(&inner)));
        Self { inner }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }

    pub(super) async fn grant(&self, ttl: Duration) -> Result<i64, KvError> {
        let id = {
            let mut st = self.lock();
            st.next_lease += 1;
            let id = st.next_lease;
            let lease = Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: HashSet::new(),
            };
            st.leases.insert(id, lease);
            id
        };
        self.inner.lease_changed.notify_one();
        Ok(id)
    }

    pub(super) async fn keep_alive(&self, lease: i64) -> Result<(), KvError> {
        let mut st = self.lock();
        let l = st
            .leases
            .get_mut(&lease)
            .ok_or(KvError::LeaseNotFound(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    pub(super) async fn revoke(&self, lease: i64) -> Result<i64, KvError> {
        let mut st = self.lock();
        st.revoke(lease);
        Ok(st.revision)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        Ok(self.lock().keys.get(key).cloned())
    }

    pub(super) async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), KvError> {
        let st = self.lock();
        let kvs = st
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((kvs, st.revision))
    }

    pub(super) async fn probe(&self) -> Result<(), KvError> {
        Ok(())
    }

    pub(super) async fn txn(
        &self,
        compares: Vec<Compare>,
        then: Vec<Op>,
        otherwise: Vec<Op>,
    ) -> Result<TxnOutcome, KvError> {
        let mut st = self.lock();
        let holds = compares.iter().all(|c| st.holds(c));
        let ops = if holds { then } else { otherwise };
        // Check leases before changing anything: a transaction is all or nothing.
        st.check_leases(&ops)?;
        let writes = ops.iter().any(|op| !matches!(op, Op::Get(_)));
        let rev = if writes { st.revision + 1 } else { st.revision };
        let mut events = Vec::new();
        let mut gets = Vec::new();
        let deleted = |key| WatchEvent::Delete {
            key,
            mod_revision: rev,
        };
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    events.push(WatchEvent::Put(st.put(key, value, lease, rev)));
                }
                Op::Delete(key) => {
                    if st.remove(&key) {
                        events.push(deleted(key));
                    }
                }
                Op::DeletePrefix(prefix) => {
                    events.extend(st.remove_prefix(&prefix).into_iter().map(deleted));
                }
                Op::Get(key) => gets.push(st.keys.get(&key).cloned()),
            }
        }
        if writes {
            st.revision = rev;
            st.publish(rev, events);
        }
        Ok(TxnOutcome {
            succeeded: holds,
            revision: st.revision,
            gets,
        })
    }

    pub(super) async fn watch(&self, prefix: &str, from: i64) -> Result<WatchReceiver, KvError> {
        let mut st = self.lock();
        let (tx, rx) = mpsc::channel(1024);
        if let Some((oldest, _)) = st.history.front()
            && from < *oldest
            && from <= st.revision
            && st.history.len() == HISTORY
        {
            return Err(KvError::Compacted);
        }
        let replay: Vec<(i64, WatchEvent)> = st
            .history
            .iter()
            .filter(|(rev, ev)| *rev >= from && key_of(ev).starts_with(prefix))
            .cloned()
            .collect();
        for (rev, ev) in replay {
            let batch = WatchBatch {
                revision: rev,
                events: vec![ev],
            };
            if tx.try_send(Ok(batch)).is_err() {
                return Err(KvError::Compacted);
            }
        }
        st.watchers.push((prefix.to_owned(), tx));
        Ok(rx)
    }
}

impl State {
    /// Whether the compare holds (a missing key has revisions 0).
    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::CreateRevision(k, r) => {
                self.keys.get(k).map(|kv| kv.create_revision).unwrap_or(0) == *r
            }
            Compare::ModRevision(k, r) => {
                self.keys.get(k).map(|kv| kv.mod_revision).unwrap_or(0) == *r
            }
        }
    }

    /// Every lease the puts of `ops` bind to exists.
    fn check_leases(&self, ops: &[Op]) -> Result<(), KvError> {
        for op in ops {
            if let Op::Put { lease, .. } = op
                && *lease != 0
                && !self.leases.contains_key(lease)
            {
                return Err(KvError::LeaseNotFound(*lease));
            }
        }
        Ok(())
    }

    /// Writes `key` at revision `rev`, bound to `lease` (moved off its old
    /// one); returns what is stored.
    fn put(&mut self, key: String, value: Vec<u8>, lease: i64, rev: i64) -> KeyValue {
        let old = self.keys.get(&key).map(|o| (o.lease, o.create_revision));
        let create_revision = match old {
            Some((old_lease, created)) => {
                if let Some(l) = self.leases.get_mut(&old_lease) {
                    l.keys.remove(&key);
                }
                created
            }
            None => rev,
        };
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.clone());
        }
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: rev,
            lease,
        };
        self.keys.insert(key, kv.clone());
        kv
    }

    /// Removes every key under `prefix`; returns them in key order.
    fn remove_prefix(&mut self, prefix: &str) -> Vec<String> {
        let doomed: Vec<String> = self
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            self.remove(key);
        }
        doomed
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.keys.remove(key) {
            Some(old) => {
                if let Some(l) = self.leases.get_mut(&old.lease) {
                    l.keys.remove(key);
                }
                true
            }
            None => false,
        }
    }

    fn revoke(&mut self, lease: i64) {
        let Some(l) = self.leases.remove(&lease) else {
            return;
        };
        if l.keys.is_empty() {
            return;
        }
        let rev = self.revision + 1;
        let mut keys: Vec<String> = l.keys.into_iter().collect();
        keys.sort();
        let mut events = Vec::new();
        for key in keys {
            if self.keys.remove(&key).is_some() {
                events.push(WatchEvent::Delete {
                    key,
                    mod_revision: rev,
                });
            }
        }
        self.revision = rev;
        self.publish(rev, events);
    }

    fn publish(&mut self, rev: i64, events: Vec<WatchEvent>) {
        for ev in &events {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((rev, ev.clone()));
        }
        self.watchers.retain(|(prefix, tx)| {
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| key_of(e).starts_with(prefix.as_str()))
                .cloned()
                .collect();
            if mine.is_empty() {
                return !tx.is_closed();
            }
            // A watcher too slow to keep up is dropped; it resyncs from a range.
            tx.try_send(Ok(WatchBatch {
                revision: rev,
                events: mine,
            }))
            .is_ok()
        });
    }
}

fn key_of(ev: &WatchEvent) -> &str {
    match ev {
        WatchEvent::Put(kv) => &kv.key,
        WatchEvent::Delete { key, .. } => key,
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the maps half-updated in a
    // way later calls could not cope with; keep serving.
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn expire_leases(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let next = {
            let mut st = lock(&strong);
            let now = Instant::now();
            let expired: Vec<i64> = st
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                st.revoke(id);
            }
            st.leases.values().map(|l| l.deadline).min()
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                // Nothing to expire: wake up now and then to notice a dropped store.
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        // Do not keep the store alive while waiting.
        let notify = strong.lease_changed.clone();
        drop(strong);
        tokio::select! {
            _ = notify.notified() => {}
            _ = sleep => {}
        }
    }
}
