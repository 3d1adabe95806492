//! The node's WHIP/WHEP/RTMP/SRT sessions, addressable by their `Location`,
//! and the per-stream publish reservations of this node.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, watch};

/// Kind of an HTTP-created session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A WHIP or RTMP publisher.
    Publisher,
    /// A WHEP player.
    Player,
}

/// A WHIP or WHEP session, addressable by its `Location`.
pub struct SessionEntry {
    /// Publisher or player.
    pub kind: SessionKind,
    /// The stream.
    pub stream: String,
    /// Current ETag (changes with each ICE change).
    pub etag: String,
    /// Adds trickled candidates.
    pub candidates: Arc<dyn CandidateSink>,
    /// Ends the session (DELETE).
    pub stop: Option<oneshot::Sender<()>>,
    /// A player's state while it connects: players that have not completed DTLS count
    /// against the egress's pending limit, not against the node's capacity.
    pub connecting: Option<watch::Receiver<strata_rtc::SessionState>>,
}

/// A session just registered by [`SessionTable::open`].
pub struct Opened {
    /// Its id (the capability in its URL).
    pub id: String,
    /// Its first ETag.
    pub etag: String,
    /// Fires when the session is asked to stop (DELETE, shutdown).
    pub stop: oneshot::Receiver<()>,
}

/// Something that takes trickled ICE candidates (an `sdpfrag`).
#[tonic::async_trait]
pub trait CandidateSink: Send + Sync {
    /// Adds the candidates of an `application/trickle-ice-sdpfrag` body.
    async fn add(&self, sdpfrag: &str) -> Result<(), strata_rtc::RtcError>;

    /// A player's simulcast layer and bandwidth estimate (`None` for publishers).
    fn player_info(&self) -> Option<&strata_rtc::PlayerInfo> {
        None
    }
}

#[tonic::async_trait]
impl CandidateSink for strata_rtc::PublisherHandle {
    async fn add(&self, sdpfrag: &str) -> Result<(), strata_rtc::RtcError> {
        self.add_remote_candidates(sdpfrag).await
    }
}

#[tonic::async_trait]
impl CandidateSink for strata_rtc::EgressPlayer {
    async fn add(&self, sdpfrag: &str) -> Result<(), strata_rtc::RtcError> {
        self.add_remote_candidates(sdpfrag)
    }

    fn player_info(&self) -> Option<&strata_rtc::PlayerInfo> {
        Some(self.info())
    }
}

/// The sessions of the node, and the streams its publishers hold.
#[derive(Default)]
pub struct SessionTable {
    sessions: Mutex<HashMap<String, SessionEntry>>,
    /// Streams a publish session of this node holds, from before its Publish
    /// call until after its Unpublish (see [`SessionTable::reserve_publish`]).
    publish_slots: Arc<Mutex<HashSet<String>>>,
    next_session: AtomicU64,
}

/// A stream reserved for one publish session ([`SessionTable::reserve_publish`]);
/// released when dropped.
pub struct PublishSlot {
    slots: Arc<Mutex<HashSet<String>>>,
    stream: String,
}

impl Drop for PublishSlot {
    fn drop(&mut self) {
        lock(&self.slots).remove(&self.stream);
    }
}

/// The tables hold plain data that every step leaves whole: a poisoned lock
/// still guards a usable table.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionTable {
    /// Reserves `stream` for one publish session of this node; `None` while
    /// another holds it. Taken before the Publish call and held until after
    /// the Unpublish, so that two POSTs for one stream cannot both claim it
    /// (Publish is idempotent for the holder: both would get the same record)
    /// and a session's cleanup cannot end the record of the next session.
    pub fn reserve_publish(&self, stream: &str) -> Option<PublishSlot> {
        lock(&self.publish_slots)
            .insert(stream.to_owned())
            .then(|| PublishSlot {
                slots: self.publish_slots.clone(),
                stream: stream.to_owned(),
            })
    }

    /// A new unguessable session id: the session URL is the capability to
    /// PATCH and DELETE the session, so it carries 128 random bits.
    pub fn new_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{n:x}{:032x}", rand::random::<u128>())
    }

    /// Registers a new session under a new id (see [`SessionTable::new_id`]), with its first
    /// ETag and a stop channel, whose receiving end comes back for the session's task.
    pub fn open(
        &self,
        kind: SessionKind,
        stream: String,
        candidates: Arc<dyn CandidateSink>,
        connecting: Option<watch::Receiver<strata_rtc::SessionState>>,
    ) -> Opened {
        let id = self.new_id();
        let etag = format!("\"{id}-1\"");
        let (stop_tx, stop) = oneshot::channel();
        self.insert(
            id.clone(),
            SessionEntry {
                kind,
                stream,
                etag: etag.clone(),
                candidates,
                stop: Some(stop_tx),
                connecting,
            },
        );
        Opened { id, etag, stop }
    }

    /// Registers a session.
    pub fn insert(&self, id: String, entry: SessionEntry) {
        lock(&self.sessions).insert(id, entry);
    }

    /// Removes a session, returning it.
    pub fn remove(&self, id: &str) -> Option<SessionEntry> {
        lock(&self.sessions).remove(id)
    }

    /// Runs `f` on a session.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&mut SessionEntry) -> R) -> Option<R> {
        lock(&self.sessions).get_mut(id).map(f)
    }

    /// Sessions of a kind.
    pub fn count(&self, kind: SessionKind) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|s| s.kind == kind)
            .count()
    }

    /// Players that completed (or failed) their handshake: what the node's capacity counts.
    pub fn connected_players(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|s| s.kind == SessionKind::Player)
            .filter(|s| {
                s.connecting
                    .as_ref()
                    .is_none_or(|c| *c.borrow() != strata_rtc::SessionState::Connecting)
            })
            .count()
    }

    /// Stops every session (on shutdown).
    pub fn stop_all(&self) {
        for (_, mut s) in lock(&self.sessions).drain() {
            if let Some(stop) = s.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    /// Whether a publisher of this stream is connected here.
    pub fn has_publisher(&self, stream: &str) -> bool {
        lock(&self.sessions)
            .values()
            .any(|s| s.kind == SessionKind::Publisher && s.stream == stream)
    }

    /// Players per stream, with the simulcast layer each receives now (`None`: a stream
    /// without simulcast, or a player not placed on a layer yet).
    pub fn players_by_stream(&self) -> HashMap<String, Vec<Option<strata_media::Layer>>> {
        let mut out: HashMap<String, Vec<Option<strata_media::Layer>>> = HashMap::new();
        for s in lock(&self.sessions)
            .values()
            .filter(|s| s.kind == SessionKind::Player)
        {
            let layer = s.candidates.player_info().and_then(|i| i.layer());
            out.entry(s.stream.clone()).or_default().push(layer);
        }
        out
    }

    /// Players of one stream on this node.
    pub fn players_of(&self, stream: &str) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|s| s.kind == SessionKind::Player && s.stream == stream)
            .count()
    }

    /// Streams whose publisher is connected here.
    pub fn published_streams(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.sessions)
            .values()
            .filter(|s| s.kind == SessionKind::Publisher)
            .map(|s| s.stream.clone())
            .collect();
        v.dedup();
        v
    }
}

/// How a session is named in logs: the first 8 hex digits of the SHA-256 of
/// its id. The id itself is the capability to PATCH and DELETE the session,
/// so it must not reach a log that more people read than the session's
/// owner; the short hash still tells one session's lines from another's.
pub fn session_log_id(id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_log_id_is_a_short_hash_not_the_id() {
        let id = "1f0e1d2c3b4a5968778695a4b3c2d1e0f";
        let logged = session_log_id(id);
        assert_eq!(logged.len(), 8);
        assert!(logged.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!id.contains(&logged), "{logged} is part of the id");
        // Stable, so one session's lines can be followed; distinct per session.
        assert_eq!(logged, session_log_id(id));
        assert_ne!(logged, session_log_id("1f0e1d2c3b4a5968778695a4b3c2d1e0e"));
    }

    #[test]
    fn a_publish_slot_is_held_until_dropped() {
        let t = SessionTable::default();
        let slot = t.reserve_publish("s");
        assert!(slot.is_some());
        assert!(t.reserve_publish("s").is_none(), "reserved twice");
        assert!(t.reserve_publish("other").is_some());
        drop(slot);
        assert!(t.reserve_publish("s").is_some(), "not released");
    }

    #[test]
    fn session_ids_are_distinct_and_long() {
        let t = SessionTable::default();
        let (a, b) = (t.new_id(), t.new_id());
        assert_ne!(a, b);
        assert!(a.len() >= 33, "{a}");
    }
}
