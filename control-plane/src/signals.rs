//! Per-stream change signals for topology watches.
//!
//! A `WatchStream` used to wake on every revision the cache applied and rebuild its topology:
//! with W watches and R revisions per second that is W × R wake-ups per replica, whatever the
//! change was about (10,000 watches under 100 writes/s is a million a second). Now the cache
//! signals only the streams a batch touched, and each watch waits on its own stream's signal.
//! One signal per watched stream per replica, however many watches share it; it is removed
//! when its last watch ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// The signals of one cache: stream id → a counter bumped on every change of its records.
#[derive(Debug, Default)]
pub struct Signals {
    streams: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Signals {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to changes of `stream`'s records.
    pub fn subscribe(self: &Arc<Self>, stream: &str) -> StreamChanges {
        let mut map = self.lock();
        let rx = match map.get(stream) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                map.insert(stream.to_owned(), tx);
                rx
            }
        };
        StreamChanges {
            rx,
            stream: stream.to_owned(),
            signals: self.clone(),
        }
    }

    /// Signals the watches of these streams (streams nobody watches cost a map lookup).
    pub fn notify<'a>(&self, streams: impl IntoIterator<Item = &'a str>) {
        let map = self.lock();
        if map.is_empty() {
            return;
        }
        for s in streams {
            if let Some(tx) = map.get(s) {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Signals every watch (the cache was reloaded: anything may have changed).
    pub fn notify_all(&self) {
        for tx in self.lock().values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Streams with at least one watch.
    pub fn watched(&self) -> usize {
        self.lock().len()
    }
}

/// Changes of one stream's records, for one watch.
#[derive(Debug)]
pub struct StreamChanges {
    rx: watch::Receiver<u64>,
    stream: String,
    signals: Arc<Signals>,
}

impl StreamChanges {
    /// Waits for the next change of the stream's records (changes since the last call count,
    /// several of them as one). Never fails: the signal lives as long as this watch.
    pub async fn changed(&mut self) {
        // The sender is in the map until this receiver is dropped, so this cannot fail.
        let _ = self.rx.changed().await;
    }
}

impl Drop for StreamChanges {
    fn drop(&mut self) {
        let mut map = self.signals.lock();
        // Under the map's lock no watch can subscribe meanwhile; this receiver still counts.
        if map
            .get(&self.stream)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn fires(c: &mut StreamChanges) -> bool {
        tokio::time::timeout(Duration::from_millis(50), c.changed())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_touched_stream_wakes() {
        let s = Arc::new(Signals::default());
        let (mut a, mut b) = (s.subscribe("a"), s.subscribe("b"));
        s.notify(["a", "unwatched"]);
        assert!(fires(&mut a).await);
        assert!(!fires(&mut b).await);
        // Changes before the wait are not lost; several count as one.
        s.notify(["b"]);
        s.notify(["b"]);
        assert!(fires(&mut b).await);
        assert!(!fires(&mut b).await);
    }

    #[tokio::test(start_paused = true)]
    async fn notify_all_wakes_every_watch() {
        let s = Arc::new(Signals::default());
        let (mut a, mut b) = (s.subscribe("a"), s.subscribe("b"));
        s.notify_all();
        assert!(fires(&mut a).await && fires(&mut b).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_lives_as_long_as_its_last_watch() {
        let s = Arc::new(Signals::default());
        let a1 = s.subscribe("a");
        let mut a2 = s.subscribe("a");
        assert_eq!(s.watched(), 1);
        drop(a1);
        assert_eq!(s.watched(), 1);
        s.notify(["a"]);
        assert!(fires(&mut a2).await);
        drop(a2);
        assert_eq!(s.watched(), 0);
        // A new watch after that gets a fresh signal.
        let mut a3 = s.subscribe("a");
        s.notify(["a"]);
        assert!(fires(&mut a3).await);
    }
}
