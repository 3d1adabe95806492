//! What one node knows at run time, shared by the HTTP handlers, the ingest
//! and play sessions, and the upstream pullers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strata_media::hub::Hub;
use strata_relay::{RelayClient, RelayStats};
use strata_rtc::RtcEngine;
use tokio::sync::{oneshot, watch};

use crate::auth::Auth;
use crate::config::NodeConfig;
use crate::control::{ControlClient, Registration};
use crate::limits::RateLimiter;
use crate::pull::PullStatus;

/// Counters of the node's own (non-relay) work.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// WHIP sessions accepted.
    pub publishers_total: AtomicU64,
    /// WHEP sessions accepted.
    pub players_total: AtomicU64,
    /// WHIP/WHEP requests refused, by any reason.
    pub refused_total: AtomicU64,
    /// Requests redirected to another node.
    pub redirects_total: AtomicU64,
    /// RTP bytes received from publishers.
    pub publisher_bytes_in: AtomicU64,
    /// Probes of a main origin holder's relay port (refused, listening, no
    /// answer), see `takeover.rs`.
    pub takeover_probes: [AtomicU64; 3],
    /// Switch-overs of a stream to this node's backup publisher (gone,
    /// silent), see `backup/`.
    pub backup_switches: [AtomicU64; 2],
    /// Backup publishers accepted (standby registered).
    pub backup_publishers_total: AtomicU64,
    /// RTMP connections accepted (within the connection limits).
    pub rtmp_connections_total: AtomicU64,
    /// RTMP publishers that went live.
    pub rtmp_publishers_total: AtomicU64,
    /// RTMP connections or publishes refused (limits, tokens, names,
    /// conflicts, codecs, draining).
    pub rtmp_refused_total: AtomicU64,
    /// SRT publishers that went live.
    pub srt_publishers_total: AtomicU64,
    /// SRT connections refused (limits, stream ids, tokens, conflicts,
    /// codecs, draining).
    pub srt_refused_total: AtomicU64,
}

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

/// A running upstream puller of one stream.
pub struct PullerEntry {
    /// Its status: waiting, ready with a catalog, not live, failed.
    pub status: watch::Receiver<PullStatus>,
}

/// The node's shared state.
pub struct NodeState {
    /// Configuration.
    pub cfg: NodeConfig,
    /// Streams carried by this node.
    pub hub: Hub,
    /// WebRTC edge.
    pub rtc: RtcEngine,
    /// Subscribes to upstream nodes.
    pub relay: RelayClient,
    /// Relay counters (both directions).
    pub relay_stats: Arc<RelayStats>,
    /// Control-plane client.
    pub control: ControlClient,
    /// The node's lease.
    pub registration: Registration,
    /// Node counters.
    pub counters: NodeCounters,
    /// True once the node shuts down (SIGTERM): it drains, then leaves.
    pub draining: AtomicBool,
    /// True while the control plane marks the node draining (an operator's
    /// Drain, until Undrain): new sessions are turned away, the node stays.
    pub drained: AtomicBool,
    /// Who may publish and play.
    pub auth: Auth,
    /// WHIP/WHEP POSTs per client address.
    pub limiter: Mutex<RateLimiter>,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    /// Streams a WHIP session of this node holds, from before its Publish
    /// call until after its Unpublish (see [`NodeState::reserve_publish`]).
    publish_slots: Mutex<HashSet<String>>,
    /// Spaces out takeover probes (see `takeover.rs`).
    pub takeover_budget: crate::takeover::ProbeBudget,
    pullers: Mutex<HashMap<String, PullerEntry>>,
    /// Epoch of each origin record this node holds (main or regional), by
    /// stream: relay subscriptions must name it.
    origin_epochs: Mutex<HashMap<String, i64>>,
    /// The node's registry view (from `ListNodes`): per-region metrics, and
    /// who may subscribe over the relay.
    registry: Mutex<RegistryView>,
    /// Wakes the registry refresh early (a relay peer missing from the view).
    pub peer_refresh: tokio::sync::Notify,
    next_session: AtomicU64,
}

/// What the relay authorizer makes of a peer (see [`RegistryView::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVerdict {
    /// A registered node.
    Registered,
    /// Not in the view yet; the view may predate the peer's registration.
    /// Refused as retryable while the view is refreshed.
    NotYet,
    /// Still missing from a view fetched after the peer was first refused.
    NotRegistered,
}

/// Registered nodes (id → region) as last listed, and the relay peers that
/// were missing from it. Sans-IO: time is an argument.
#[derive(Debug, Default)]
pub struct RegistryView {
    nodes: HashMap<String, String>,
    fetched_at: Option<Instant>,
    first_miss: HashMap<String, Instant>,
    last_refresh_request: Option<Instant>,
}

/// Peers remembered as missing (only holders of a CA certificate get here).
const MAX_MISSES: usize = 1024;

impl RegistryView {
    /// Replaces the view with a listing fetched at `now`.
    pub fn set(&mut self, nodes: HashMap<String, String>, now: Instant) {
        self.nodes = nodes;
        self.fetched_at = Some(now);
        let nodes = &self.nodes;
        self.first_miss.retain(|p, _| !nodes.contains_key(p));
    }

    /// Whether `peer` may use the relay at `now`, and whether to refresh the
    /// view now (at most once per `refresh_every`).
    ///
    /// A peer missing from the view is first refused as [`PeerVerdict::NotYet`]
    /// (it may have registered after the view was fetched: a retryable
    /// refusal keeps its puller from reporting this node unreachable); once a
    /// view fetched after that first refusal still lacks it, it is
    /// [`PeerVerdict::NotRegistered`].
    pub fn check(
        &mut self,
        peer: &str,
        now: Instant,
        refresh_every: Duration,
    ) -> (PeerVerdict, bool) {
        if self.nodes.contains_key(peer) {
            return (PeerVerdict::Registered, false);
        }
        let refresh = self
            .last_refresh_request
            .is_none_or(|t| now.saturating_duration_since(t) >= refresh_every);
        if refresh {
            self.last_refresh_request = Some(now);
        }
        let verdict = match (self.first_miss.get(peer), self.fetched_at) {
            (Some(&missed), Some(fetched)) if fetched > missed => PeerVerdict::NotRegistered,
            (Some(_), _) => PeerVerdict::NotYet,
            (None, _) => {
                if self.first_miss.len() >= MAX_MISSES {
                    self.first_miss.clear();
                }
                self.first_miss.insert(peer.to_owned(), now);
                PeerVerdict::NotYet
            }
        };
        (verdict, refresh)
    }

    /// The region of a node, if listed.
    pub fn region(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).map(String::as_str)
    }
}

/// A stream reserved for one WHIP session ([`NodeState::reserve_publish`]);
/// released when dropped.
pub struct PublishSlot {
    state: Arc<NodeState>,
    stream: String,
}

impl Drop for PublishSlot {
    fn drop(&mut self) {
        lock(&self.state.publish_slots).remove(&self.stream);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeState {
    /// Assembles the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: NodeConfig,
        hub: Hub,
        rtc: RtcEngine,
        relay: RelayClient,
        relay_stats: Arc<RelayStats>,
        control: ControlClient,
        registration: Registration,
        auth: Auth,
    ) -> Arc<Self> {
        let limiter = RateLimiter::new(
            cfg.post_rate_per_ip,
            cfg.post_burst_per_ip,
            cfg.rate_limit_clients,
        );
        Arc::new(Self {
            cfg,
            hub,
            rtc,
            relay,
            relay_stats,
            control,
            registration,
            counters: NodeCounters::default(),
            draining: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            auth,
            limiter: Mutex::new(limiter),
            sessions: Mutex::new(HashMap::new()),
            publish_slots: Mutex::new(HashSet::new()),
            takeover_budget: Default::default(),
            pullers: Mutex::new(HashMap::new()),
            origin_epochs: Mutex::new(HashMap::new()),
            registry: Mutex::new(RegistryView::default()),
            peer_refresh: tokio::sync::Notify::new(),
            next_session: AtomicU64::new(1),
        })
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// The node's region.
    pub fn region(&self) -> &str {
        &self.cfg.region
    }

    /// Whether the node turns new sessions away: it shuts down, or the
    /// control plane marks it draining.
    pub fn is_draining(&self) -> bool {
        self.is_shutting_down() || self.drained.load(Ordering::Relaxed)
    }

    /// Whether the node drains to leave (SIGTERM).
    pub fn is_shutting_down(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Reserves `stream` for one WHIP session of this node; `None` while
    /// another holds it. Taken before the Publish call and held until after
    /// the Unpublish, so that two POSTs for one stream cannot both claim it
    /// (Publish is idempotent for the holder: both would get the same record)
    /// and a session's cleanup cannot end the record of the next session.
    pub fn reserve_publish(self: &Arc<Self>, stream: &str) -> Option<PublishSlot> {
        lock(&self.publish_slots)
            .insert(stream.to_owned())
            .then(|| PublishSlot {
                state: self.clone(),
                stream: stream.to_owned(),
            })
    }

    /// A new unguessable session id: the session URL is the capability to
    /// PATCH and DELETE the session, so it carries 128 random bits.
    pub fn new_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{n:x}{:032x}", rand::random::<u128>())
    }

    /// Takes one WHIP/WHEP POST of a client address from the rate limit;
    /// `Err(wait)` when over it.
    pub fn admit(&self, ip: std::net::IpAddr) -> Result<(), std::time::Duration> {
        lock(&self.limiter).check(ip, std::time::Instant::now())
    }

    /// Registers a session.
    pub fn add_session(&self, id: String, entry: SessionEntry) {
        lock(&self.sessions).insert(id, entry);
    }

    /// Removes a session, returning it.
    pub fn remove_session(&self, id: &str) -> Option<SessionEntry> {
        lock(&self.sessions).remove(id)
    }

    /// Runs `f` on a session.
    pub fn with_session<R>(&self, id: &str, f: impl FnOnce(&mut SessionEntry) -> R) -> Option<R> {
        lock(&self.sessions).get_mut(id).map(f)
    }

    /// Sessions of a kind.
    pub fn session_count(&self, kind: SessionKind) -> usize {
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
    pub fn stop_all_sessions(&self) {
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

    /// Records the epoch of an origin record this node holds.
    pub fn set_origin_epoch(&self, stream: &str, epoch: i64) {
        lock(&self.origin_epochs).insert(stream.to_owned(), epoch);
    }

    /// Forgets an origin record.
    pub fn clear_origin_epoch(&self, stream: &str) {
        lock(&self.origin_epochs).remove(stream);
    }

    /// The epoch of this node's origin record of a stream.
    pub fn origin_epoch(&self, stream: &str) -> Option<i64> {
        lock(&self.origin_epochs).get(stream).copied()
    }

    /// Streams this node is an origin of.
    pub fn origin_streams(&self) -> Vec<String> {
        lock(&self.origin_epochs).keys().cloned().collect()
    }

    /// The puller of a stream, if one runs.
    pub fn puller(&self, stream: &str) -> Option<watch::Receiver<PullStatus>> {
        lock(&self.pullers).get(stream).map(|p| p.status.clone())
    }

    /// Installs a puller unless one runs; returns the running one's status.
    pub fn insert_puller_with(
        &self,
        stream: &str,
        start: impl FnOnce() -> watch::Receiver<PullStatus>,
    ) -> watch::Receiver<PullStatus> {
        let mut p = lock(&self.pullers);
        if let Some(existing) = p.get(stream) {
            return existing.status.clone();
        }
        let status = start();
        p.insert(
            stream.to_owned(),
            PullerEntry {
                status: status.clone(),
            },
        );
        status
    }

    /// Removes a stream's puller entry.
    pub fn remove_puller(&self, stream: &str) {
        lock(&self.pullers).remove(stream);
    }

    /// Number of running pullers.
    pub fn puller_count(&self) -> usize {
        lock(&self.pullers).len()
    }

    /// Records the registered nodes and their regions.
    pub fn set_peer_regions(&self, regions: HashMap<String, String>) {
        lock(&self.registry).set(regions, Instant::now());
    }

    /// Whether relay peer `node` is a registered node; a miss wakes the
    /// registry refresh (at most once per `refresh_every`).
    pub fn check_peer(&self, node: &str, refresh_every: Duration) -> PeerVerdict {
        let (verdict, refresh) = lock(&self.registry).check(node, Instant::now(), refresh_every);
        if refresh {
            self.peer_refresh.notify_one();
        }
        verdict
    }

    /// The region of a peer node, if known.
    pub fn peer_region(&self, node: &str) -> String {
        lock(&self.registry)
            .region(node)
            .unwrap_or("unknown")
            .to_owned()
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

    fn view(nodes: &[&str], at: Instant) -> RegistryView {
        let mut v = RegistryView::default();
        v.set(
            nodes
                .iter()
                .map(|n| ((*n).to_owned(), "r".to_owned()))
                .collect(),
            at,
        );
        v
    }

    #[test]
    fn a_peer_missing_from_the_view_is_refused_for_good_only_after_a_refresh() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut v = view(&["a"], t0);
        assert_eq!(v.check("a", t0, s), (PeerVerdict::Registered, false));
        // Registered after the view was fetched: retryable, and a refresh is due.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(v.check("b", t1, s), (PeerVerdict::NotYet, true));
        // Still the old view: still retryable; no second refresh within a second.
        assert_eq!(
            v.check("b", t1 + Duration::from_millis(10), s),
            (PeerVerdict::NotYet, false)
        );
        // The refresh lists it.
        v.set(
            [("a", "r"), ("b", "r")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .into(),
            t1 + s,
        );
        assert_eq!(v.check("b", t1 + s, s).0, PeerVerdict::Registered);
        // A peer that a newer view still lacks is not registered.
        let t2 = t1 + 2 * s;
        assert_eq!(v.check("rogue", t2, s), (PeerVerdict::NotYet, true));
        v.set(v.nodes.clone(), t2 + Duration::from_millis(50));
        assert_eq!(
            v.check("rogue", t2 + Duration::from_millis(60), s).0,
            PeerVerdict::NotRegistered
        );
        assert_eq!(
            v.check("rogue", t2 + 2 * s, s),
            (PeerVerdict::NotRegistered, true)
        );
    }

    #[test]
    fn misses_stay_bounded() {
        let t0 = Instant::now();
        let mut v = view(&[], t0);
        for i in 0..5000 {
            let _ = v.check(&format!("p{i}"), t0, Duration::from_secs(1));
        }
        assert!(v.first_miss.len() <= MAX_MISSES);
    }
}
