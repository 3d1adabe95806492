//! A read cache of everything under the key prefix, kept current by a watch.
//!
//! Reads (resolve fast path, placement, listings, stream watches) are answered
//! from here; writes go to the store, and correctness never depends on the
//! cache being fresh: every claim is an etcd transaction, and a miss falls
//! back to a store read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use strata_common::backoff::Backoff;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::keys::{
    self, KeyKind, Keys, LinkPinRecord, LoadRecord, MainRecord, NodeRecord, RegionalRecord,
    RevocationRecord, RevokedBy, StandbyRecord, SubscriberRecord,
};
use crate::kv::{Compare, KeyValue, Kv, Op, WatchEvent};
use crate::signals::{Signals, StreamChanges};

/// A record with the revisions etcd keeps for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The decoded record.
    pub value: T,
    /// Revision at which the key was created.
    pub create_revision: i64,
    /// Revision of the last change.
    pub mod_revision: i64,
}

impl<T> Versioned<T> {
    /// The record's epoch: its key's last-modified revision. Origin records
    /// are written only when claimed, so every claim (including one that
    /// replaces a stale holder in place) gets a new, larger epoch.
    pub fn epoch(&self) -> i64 {
        self.mod_revision
    }
}

/// Every record of one stream. Origin records are shared (`Arc`): a resolve
/// that must keep them past the read guard clones a pointer, not the record.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// The main origin, if live.
    pub main: Option<Arc<Versioned<MainRecord>>>,
    /// Regional origins by region.
    pub regions: BTreeMap<String, Arc<Versioned<RegionalRecord>>>,
    /// Subscribers by node id.
    pub subscribers: BTreeMap<String, Versioned<SubscriberRecord>>,
}

impl StreamState {
    fn is_empty(&self) -> bool {
        self.main.is_none() && self.regions.is_empty() && self.subscribers.is_empty()
    }
}

/// The cached view of the store.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Store revision the view reflects.
    pub revision: i64,
    /// Live nodes by id (shared, like origin records: callers keep them
    /// past the read guard without copying them).
    pub nodes: BTreeMap<String, Arc<Versioned<NodeRecord>>>,
    /// Latest load reports by node id.
    pub loads: HashMap<String, LoadRecord>,
    /// Streams by id.
    pub streams: BTreeMap<String, StreamState>,
    /// Revoked certificates by how they are named.
    pub revoked: BTreeMap<(RevokedBy, String), RevocationRecord>,
    /// Standby records (backup publishers' nodes) by stream.
    pub standbys: BTreeMap<String, Arc<Versioned<StandbyRecord>>>,
    /// Operators' pinned link costs by (from region, to region).
    pub link_pins: BTreeMap<(String, String), LinkPinRecord>,
}

impl View {
    /// Whether a certificate with this serial or fingerprint is revoked.
    pub fn is_revoked(&self, serial: &str, sha256: &str) -> bool {
        self.revoked
            .contains_key(&(RevokedBy::Serial, serial.to_owned()))
            || self
                .revoked
                .contains_key(&(RevokedBy::Sha256, sha256.to_owned()))
    }
}

impl View {
    fn apply_put(&mut self, k: &Keys, kv: &KeyValue) {
        let Some(kind) = k.parse(&kv.key) else { return };
        fn ver<T>(value: T, kv: &KeyValue) -> Versioned<T> {
            Versioned {
                value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            }
        }
        fn shared<T>(value: T, kv: &KeyValue) -> Arc<Versioned<T>> {
            Arc::new(ver(value, kv))
        }
        match kind {
            KeyKind::Node(n) => {
                if let Some(r) = keys::decode::<NodeRecord>(&kv.value) {
                    self.nodes.insert(n.to_owned(), shared(r, kv));
                }
            }
            KeyKind::Load(n) => {
                if let Some(r) = keys::decode::<LoadRecord>(&kv.value) {
                    self.loads.insert(n.to_owned(), r);
                }
            }
            KeyKind::Main(s) => {
                if let Some(r) = keys::decode::<MainRecord>(&kv.value) {
                    self.streams.entry(s.to_owned()).or_default().main = Some(shared(r, kv));
                }
            }
            KeyKind::Regional(s, region) => {
                if let Some(r) = keys::decode::<RegionalRecord>(&kv.value) {
                    let st = self.streams.entry(s.to_owned()).or_default();
                    st.regions.insert(region.to_owned(), shared(r, kv));
                }
            }
            KeyKind::Subscriber(s, n) => {
                if let Some(r) = keys::decode::<SubscriberRecord>(&kv.value) {
                    let st = self.streams.entry(s.to_owned()).or_default();
                    st.subscribers.insert(n.to_owned(), ver(r, kv));
                }
            }
            KeyKind::Revoked(by, id) => {
                if let Some(r) = keys::decode::<RevocationRecord>(&kv.value) {
                    self.revoked.insert((by, id.to_owned()), r);
                }
            }
            KeyKind::Standby(s) => {
                if let Some(r) = keys::decode::<StandbyRecord>(&kv.value) {
                    self.standbys.insert(s.to_owned(), shared(r, kv));
                }
            }
            KeyKind::Link(from, to) => {
                if let Some(r) = keys::decode::<LinkPinRecord>(&kv.value) {
                    self.link_pins.insert((from.to_owned(), to.to_owned()), r);
                }
            }
        }
    }

    fn apply_delete(&mut self, k: &Keys, key: &str) -> Option<String> {
        let kind = k.parse(key)?;
        let stream = match kind {
            KeyKind::Node(n) => {
                self.nodes.remove(n);
                return None;
            }
            KeyKind::Load(n) => {
                self.loads.remove(n);
                return None;
            }
            KeyKind::Revoked(by, id) => {
                self.revoked.remove(&(by, id.to_owned()));
                return None;
            }
            KeyKind::Standby(s) => {
                self.standbys.remove(s);
                return None;
            }
            KeyKind::Link(from, to) => {
                self.link_pins.remove(&(from.to_owned(), to.to_owned()));
                return None;
            }
            KeyKind::Main(s) => {
                let st = self.streams.get_mut(s)?;
                st.main = None;
                s
            }
            KeyKind::Regional(s, r) => {
                self.streams.get_mut(s)?.regions.remove(r);
                s
            }
            KeyKind::Subscriber(s, n) => {
                self.streams.get_mut(s)?.subscribers.remove(n);
                s
            }
        };
        let st = self.streams.get(stream)?;
        if st.is_empty() {
            self.streams.remove(stream);
            None
        } else if st.main.is_none() {
            // Records of a stream whose main origin is gone: to be cleaned.
            Some(stream.to_owned())
        } else {
            None
        }
    }

    /// Streams that have records but no main origin (the main origin died or
    /// unpublished while others still held records).
    pub fn orphans(&self) -> Vec<String> {
        self.streams
            .iter()
            .filter(|(_, s)| s.main.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The cache handle. Cloning shares it.
#[derive(Clone)]
pub struct Cache {
    view: Arc<RwLock<View>>,
    revision: watch::Receiver<i64>,
    healthy: watch::Receiver<bool>,
    /// The health as last sent on `healthy`, for the per-request check
    /// without taking the watch channel's lock.
    healthy_now: Arc<AtomicBool>,
    /// Per-stream change signals for topology watches.
    signals: Arc<Signals>,
}

impl Cache {
    /// Reads the current view.
    pub fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the cache is in sync with a reachable store.
    pub fn is_healthy(&self) -> bool {
        self.healthy_now.load(Ordering::Acquire)
    }

    /// Changes whenever the cache applies new store revisions.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.revision.clone()
    }

    /// Changes whenever a record of `stream` changes (or the cache reloads), after the view
    /// shows the change. Subscribe before reading the view, so no change is missed.
    pub fn stream_changes(&self, stream: &str) -> StreamChanges {
        self.signals.subscribe(stream)
    }

    /// Streams with at least one topology watch on this replica.
    pub fn watched_streams(&self) -> usize {
        self.signals.watched()
    }

    /// Changes whenever the health flips.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// Waits until the view reflects at least this store revision (after a
    /// write through this replica), or the timeout passes.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) {
        let mut rx = self.revision.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
    }
}

/// Starts the cache: a task that loads the prefix, then follows a watch, and
/// resyncs from scratch whenever the watch breaks. A second task probes the
/// store so that an unreachable store is noticed even without traffic.
pub fn spawn(kv: Kv, keys: Keys, probe_every: Duration) -> Cache {
    let view = Arc::new(RwLock::new(View::default()));
    let (rev_tx, rev_rx) = watch::channel(0i64);
    let (health_tx, health_rx) = watch::channel(false);
    let healthy_now = Arc::new(AtomicBool::new(false));
    let signals = Arc::new(Signals::default());
    let health = Arc::new(Health {
        watch_ok: AtomicBool::new(false),
        probe_ok: AtomicBool::new(true),
        now: healthy_now.clone(),
        tx: health_tx,
    });
    spawn_sync(
        kv.clone(),
        keys,
        view.clone(),
        rev_tx,
        signals.clone(),
        health.clone(),
    );
    spawn_probe(kv, Arc::downgrade(&view), health, probe_every);
    Cache {
        view,
        revision: rev_rx,
        healthy: health_rx,
        healthy_now,
        signals,
    }
}

/// The cache's health: the watch is established and the store answers the
/// probe. Sent on a watch channel, and mirrored in a flag for the per-request
/// check.
struct Health {
    watch_ok: AtomicBool,
    probe_ok: AtomicBool,
    /// The flag ([`Cache::healthy_now`]).
    now: Arc<AtomicBool>,
    tx: watch::Sender<bool>,
}

impl Health {
    fn set_watch_ok(&self, ok: bool) {
        self.watch_ok.store(ok, Ordering::Relaxed);
        self.update();
    }

    fn set_probe_ok(&self, ok: bool) {
        self.probe_ok.store(ok, Ordering::Relaxed);
        self.update();
    }

    fn update(&self) {
        use Ordering::Relaxed;
        let now = self.watch_ok.load(Relaxed) && self.probe_ok.load(Relaxed);
        self.tx.send_if_modified(|old| {
            // Under the channel's lock: concurrent updates leave the
            // flag and the channel agreeing.
            self.now.store(now, Ordering::Release);
            let changed = *old != now;
            if changed {
                if now {
                    info!("store reachable; serving");
                } else {
                    warn!("store unreachable; answering UNAVAILABLE");
                }
            }
            *old = now;
            changed
        });
    }
}

/// The sync task: load and follow, again after every break, until every
/// cache handle is gone.
fn spawn_sync(
    kv: Kv,
    keys: Keys,
    view: Arc<RwLock<View>>,
    rev_tx: watch::Sender<i64>,
    signals: Arc<Signals>,
    health: Arc<Health>,
) {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            if rev_tx.is_closed() {
                return;
            }
            let sync = Sync {
                kv: &kv,
                keys: &keys,
                view: &view,
                rev_tx: &rev_tx,
                signals: &signals,
            };
            match follow(&sync, &health).await {
                // An established watch broke: resync at once. Health is
                // only lost if the resync itself fails, so a blip of
                // the watch connection is not an outage.
                Ok(()) => {
                    debug!("cache watch ended; resyncing");
                    backoff.reset();
                    continue;
                }
                Err(e) => debug!(error = %e, "cache sync failed"),
            }
            health.set_watch_ok(false);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
}

/// The probe task. Ends once the server and the sync task have let go of the
/// view (`alive`).
fn spawn_probe(kv: Kv, alive: Weak<RwLock<View>>, health: Arc<Health>, probe_every: Duration) {
    tokio::spawn(async move {
        while alive.strong_count() > 0 {
            let result = kv.probe().await;
            if let Err(e) = &result {
                debug!(error = %e, "store probe failed");
            }
            health.set_probe_ok(result.is_ok());
            tokio::time::sleep(probe_every).await;
        }
    });
}

fn write(view: &RwLock<View>) -> RwLockWriteGuard<'_, View> {
    view.write().unwrap_or_else(|p| p.into_inner())
}

/// What one sync cycle works on.
struct Sync<'a> {
    kv: &'a Kv,
    keys: &'a Keys,
    view: &'a RwLock<View>,
    rev_tx: &'a watch::Sender<i64>,
    signals: &'a Signals,
}

/// One sync cycle: load, then follow the watch until it breaks.
async fn follow(sync: &Sync<'_>, health: &Health) -> Result<(), crate::kv::KvError> {
    let Sync {
        kv,
        keys,
        view,
        rev_tx,
        signals,
    } = *sync;
    let (kvs, revision) = kv.range(keys.prefix()).await?;
    let mut watch = kv.watch(keys.prefix(), revision + 1).await?;
    let orphans = {
        let mut fresh = View {
            revision,
            ..View::default()
        };
        for item in &kvs {
            fresh.apply_put(keys, item);
        }
        let orphans = fresh.orphans();
        *write(view) = fresh;
        orphans
    };
    rev_tx.send_replace(revision);
    signals.notify_all();
    health.set_watch_ok(true);
    debug!(revision, keys = kvs.len(), "cache loaded");
    clean_orphans(kv, keys, orphans);
    loop {
        // Stop with the server: every cache handle (the receivers) is gone.
        let batch = tokio::select! {
            b = watch.recv() => b,
            _ = rev_tx.closed() => return Ok(()),
        };
        let batch = match batch {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                debug!(error = %e, "cache watch broke");
                break;
            }
            None => break,
        };
        let mut orphans = Vec::new();
        {
            let mut v = write(view);
            for ev in &batch.events {
                match ev {
                    WatchEvent::Put(item) => v.apply_put(keys, item),
                    WatchEvent::Delete { key, .. } => orphans.extend(v.apply_delete(keys, key)),
                }
            }
            v.revision = v.revision.max(batch.revision);
        }
        rev_tx.send_replace(batch.revision);
        signals.notify(batch.events.iter().filter_map(|ev| {
            let key = match ev {
                WatchEvent::Put(item) => &item.key,
                WatchEvent::Delete { key, .. } => key,
            };
            match keys.parse(key)? {
                KeyKind::Main(s)
                | KeyKind::Regional(s, _)
                | KeyKind::Subscriber(s, _)
                | KeyKind::Standby(s) => Some(s),
                _ => None,
            }
        }));
        clean_orphans(kv, keys, orphans);
    }
    Ok(())
}

/// Deletes every record of streams whose main origin is gone, guarded so that
/// a stream published again in the meantime is left alone. Every replica may
/// do this; it is idempotent.
fn clean_orphans(kv: &Kv, keys: &Keys, streams: Vec<String>) {
    for stream in streams {
        let (kv, main, all) = (kv.clone(), keys.main(&stream), keys.stream(&stream));
        tokio::spawn(async move {
            let guard = vec![Compare::CreateRevision(main, 0)];
            match kv.txn(guard, vec![Op::DeletePrefix(all)], Vec::new()).await {
                Ok(o) if o.succeeded => info!(%stream, "stream ended; its records are removed"),
                Ok(_) => {}
                Err(e) => debug!(%stream, error = %e, "orphan cleanup failed; retried at resync"),
            }
        });
    }
}
