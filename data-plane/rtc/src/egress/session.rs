//! One player, sans-IO: ICE-lite, a DTLS server, SRTP out, RTCP in. The worker loop feeds it
//! datagrams and the stream's packets and sends what it produces; it never touches a socket
//! or reads a clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::HandshakeConfig;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::shared::TransportProtocol;
use rtc::srtp::context::Context;
use strata_media::{MediaPacket, TrackId, TrackKind};
use tokio::sync::watch;

mod handshake;
mod media;
mod rtcp;
mod srtp;
mod transport;

use super::answer::Assigned;
use super::flow::Flow;
use super::history::History;
use super::layers::{KEYFRAME_RETRY, Layers};
use super::nack::NackBudget;
use super::selector::SelectorConfig;
use super::stats::{EgressCounters, PlayerInfo};
use super::vp8ids::Vp8Ids;
use crate::SessionState;
use crate::codec::Codec;
use crate::ice::{IceCredentials, looks_like_stun};
use crate::rewriter::RtpRewriter;

/// The DTLS endpoint keys associations by address; the session has one, wherever the player
/// moves, so it is filed under one fixed name.
const DTLS_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
/// Media starts this long after DTLS completes: the player derives its SRTP keys from the
/// handshake's last flight, and packets that overtake that are lost (with them, the keyframe
/// the player starts on).
const MEDIA_DELAY: Duration = Duration::from_millis(30);
/// A player that just connected catches up on the stream's current group at most this many
/// packets per tick (20 ms): about 2,000 packets a second. Sent in one burst, a whole group
/// (hundreds of packets) overflows a player's socket buffer and starts it with losses.
const CATCH_UP_PER_TICK: usize = 40;
/// Packets a catching-up player may have waiting; beyond it, it waits for the next keyframe.
const BACKLOG_MAX: usize = 4096;
/// Sender reports per track, for the player's lip sync and RTT.
const SR_INTERVAL: Duration = Duration::from_secs(1);

/// A datagram to send.
pub(crate) type Transmit = (SocketAddr, Bytes);

/// What the worker must act on after feeding a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEvent {
    /// DTLS completed: media may flow (replay the stream's current group to it).
    Connected,
    /// The player asks for a keyframe of this track (PLI, FIR, or it just connected).
    KeyframeRequest(TrackId),
    /// The session ended (DTLS close, failure).
    Closed,
}

struct Track {
    /// The catalog track forwarded now (for simulcast: the current layer's).
    id: TrackId,
    kind: TrackKind,
    layers: Layers,
    payload_type: u8,
    clock_rate: u32,
    rewriter: RtpRewriter,
    /// Its packets carry the player's transport-wide sequence number.
    transport_cc: bool,
    waiting_for_keyframe: bool,
    /// The last packet sent ended a frame (RTP marker): padding may follow it.
    frame_ended: bool,
    /// When a keyframe was last asked for while waiting for one.
    keyframe_asked: Option<Instant>,
    packets: u32,
    octets: u32,
    /// VP8 picture IDs kept continuous across layer switches (VP8 tracks only).
    vp8: Option<Vp8Ids>,
}

/// Limits and timeouts of a session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    /// Until DTLS completes.
    pub connect_timeout: Duration,
    /// No datagram from the player for this long (consent checks, RTCP) ends the session.
    pub idle_timeout: Duration,
}

/// One player session.
pub(crate) struct Session {
    pub id: u64,
    pub stream: Arc<str>,
    ice: IceCredentials,
    remote: Option<SocketAddr>,
    dtls: Endpoint,
    local: Option<Context>,
    remote_srtcp: Option<Context>,
    tracks: Vec<Track>,
    state: watch::Sender<SessionState>,
    created: Instant,
    last_received: Instant,
    next_report: Instant,
    limits: SessionLimits,
    nack: NackBudget,
    counters: Arc<EgressCounters>,
    /// Round-trip time from the player's receiver reports.
    rtt: Option<Duration>,
    /// When media may start (set once DTLS completes).
    media_at: Option<Instant>,
    media_ready: bool,
    /// Packets waiting while the player catches up or the pacer holds them back (shared
    /// bytes, not copies), and their RTP bytes.
    backlog: std::collections::VecDeque<MediaPacket>,
    backlog_bytes: usize,
    /// The backlog is a newly connected player's catch-up (not bounded by the pacer).
    catching_up: bool,
    /// Paces media to a multiple of the player's estimate (`pacer.rs`).
    pacer: super::pacer::Pacer,
    /// Its layer and estimate, for the player's handle.
    info: Arc<PlayerInfo>,
    /// Transport-wide congestion control, when the player negotiated it.
    transport: Option<transport::TransportCc>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        stream: Arc<str>,
        ice: IceCredentials,
        dtls_config: Arc<HandshakeConfig>,
        assigned: &[Assigned],
        state: watch::Sender<SessionState>,
        now: Instant,
        limits: SessionLimits,
        nack: NackBudget,
        counters: Arc<EgressCounters>,
    ) -> Session {
        let tracks = assigned
            .iter()
            .map(|a| {
                let clock_rate = a.codec.clock_rate();
                let frame = clock_rate
                    / if a.track.kind == TrackKind::Video {
                        30
                    } else {
                        50
                    };
                let counters = (!a.layers.is_empty()).then(|| Arc::clone(&counters));
                Track {
                    id: a.track.id,
                    kind: a.track.kind,
                    layers: {
                        let layers = Layers::new(a.layers.clone(), a.track.id, counters);
                        if a.auto {
                            layers.with_selector(SelectorConfig::default(), now)
                        } else {
                            layers
                        }
                    },
                    payload_type: a.offered.payload_type,
                    clock_rate,
                    rewriter: RtpRewriter::new(a.ssrc, clock_rate, frame),
                    transport_cc: a.transport_cc.is_some(),
                    waiting_for_keyframe: a.track.kind == TrackKind::Video,
                    frame_ended: false,
                    keyframe_asked: None,
                    packets: 0,
                    octets: 0,
                    vp8: (a.codec == Codec::Vp8).then(Vp8Ids::default),
                }
            })
            .collect();
        Session {
            id,
            stream,
            ice,
            remote: None,
            dtls: Endpoint::new(DTLS_PEER, TransportProtocol::UDP, Some(dtls_config)),
            local: None,
            remote_srtcp: None,
            tracks,
            state,
            created: now,
            last_received: now,
            next_report: now,
            limits,
            nack,
            counters,
            rtt: None,
            media_at: None,
            media_ready: false,
            backlog: std::collections::VecDeque::new(),
            backlog_bytes: 0,
            catching_up: false,
            pacer: super::pacer::Pacer::default(),
            info: Arc::default(),
            transport: assigned
                .iter()
                .find_map(|a| a.transport_cc)
                .map(transport::TransportCc::new),
        }
    }

    /// Shares the session's layer and estimate through `info`.
    pub(crate) fn with_info(mut self, info: Arc<PlayerInfo>) -> Session {
        self.info = info;
        self
    }

    /// Where the session stands.
    pub(crate) fn state(&self) -> SessionState {
        *self.state.borrow()
    }

    /// The address the player's media goes to, once a check nominated it.
    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// The local ICE ufrag (the mux routes STUN requests naming it here).
    pub(crate) fn local_ufrag(&self) -> &str {
        &self.ice.local_ufrag
    }

    /// Ends the session (DELETE, timeout, stream gone): a DTLS close_notify goes out if the
    /// handshake got that far.
    pub(crate) fn close(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        if self.state() == SessionState::Closed {
            return;
        }
        // Queues a close_notify if the handshake got that far.
        let _ = self.dtls.close(now);
        self.flush_dtls(out);
        self.state.send_replace(SessionState::Closed);
    }

    /// Feeds one datagram from `from`. Returns whether `from` became the session's address
    /// (the worker then routes that address here).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        wall_us: u64,
        from: SocketAddr,
        data: &[u8],
        crypto: &Arc<dyn RTCCryptoProvider>,
        history: &History,
        out: &mut Vec<Transmit>,
        events: &mut Vec<SessionEvent>,
    ) -> bool {
        if self.state() == SessionState::Closed {
            return false;
        }
        if looks_like_stun(data) {
            return self.handle_stun(now, from, data, crypto, out);
        }
        // Anything else must come from the checked address.
        if Some(from) != self.remote {
            self.counters.refused_datagrams.inc();
            return false;
        }
        self.last_received = now;
        match data.first() {
            Some(20..=63) => self.handle_dtls(now, data, crypto, out, events),
            Some(128..=191) => self.handle_rtcp(now, wall_us, data, history, out, events),
            _ => self.counters.refused_datagrams.inc(),
        }
        false
    }

    /// Follows the stream's bitrate with the retransmission budget, and each track's rate
    /// and upstream loss with the layer choice.
    pub(crate) fn set_stream_rate(&mut self, flow: &Flow) {
        self.nack.set_stream_rate(flow.total_rate() as f64);
        for track in &mut self.tracks {
            track.layers.set_track_flow(flow.rates(), flow.loss());
        }
    }

    /// The simulcast layers the node must receive for this player (see `Layers::wanted`).
    pub(crate) fn wanted_layers(&self) -> strata_media::hub::LayerSet {
        self.tracks
            .iter()
            .fold(strata_media::hub::LayerSet::EMPTY, |set, t| {
                set.union(t.layers.wanted())
            })
    }

    /// The simulcast layer the player's video is on, and its bandwidth estimate: the node's
    /// own from transport-cc feedback (then true), else the player's REMB.
    fn layer(&self) -> (Option<strata_media::Layer>, Option<u64>, bool) {
        let (layer, remb) = self
            .tracks
            .iter()
            .find_map(|t| {
                t.layers
                    .current_layer()
                    .map(|l| (Some(l), t.layers.estimate()))
            })
            .unwrap_or((None, None));
        match self.transport.as_ref().and_then(|t| t.estimate()) {
            Some(own) => (layer, Some(own), true),
            None => (layer, remb, false),
        }
    }

    /// Media may flow: the player is told it is connected, and every video track asks for a
    /// keyframe to start on.
    fn start_media(&mut self, now: Instant, events: &mut Vec<SessionEvent>) {
        self.media_at = None;
        self.media_ready = true;
        events.push(SessionEvent::Connected);
        for track in self
            .tracks
            .iter_mut()
            .filter(|t| t.kind == TrackKind::Video)
        {
            track.keyframe_asked = Some(now);
            events.push(SessionEvent::KeyframeRequest(track.id));
        }
    }

    /// Keyframes the tracks want now: for a layer switch, or again for one still awaited.
    fn keyframe_requests(&mut self, now: Instant, events: &mut Vec<SessionEvent>) {
        for track in &mut self.tracks {
            if let Some(id) = track.layers.poll(now) {
                events.push(SessionEvent::KeyframeRequest(id));
            }
            // A request may be lost on its way upstream (an upstream still subscribing,
            // a coalesced duplicate): ask again while the player waits.
            if track.waiting_for_keyframe
                && track
                    .keyframe_asked
                    .is_none_or(|at| now >= at + KEYFRAME_RETRY)
            {
                track.keyframe_asked = Some(now);
                events.push(SessionEvent::KeyframeRequest(track.id));
            }
        }
    }

    /// Timers: DTLS retransmissions, the connect and idle timeouts, sender reports. Returns
    /// true when the session ended here.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        wall_us: u64,
        out: &mut Vec<Transmit>,
        events: &mut Vec<SessionEvent>,
    ) -> bool {
        if self.state() == SessionState::Closed {
            return true;
        }
        let connected = self.local.is_some();
        let expired = if connected {
            now.saturating_duration_since(self.last_received) > self.limits.idle_timeout
        } else {
            now.saturating_duration_since(self.created) > self.limits.connect_timeout
        };
        if expired {
            if !connected {
                self.counters.connect_timeouts.inc();
            }
            self.close(now, out);
            return true;
        }
        if !connected {
            return self.handshake_timeout(now, out);
        }
        if let Some(at) = self.media_at
            && now >= at
        {
            self.start_media(now, events);
        }
        if !self.backlog.is_empty() {
            self.catch_up(wall_us, out);
        }
        if self.media_ready {
            let (layer, estimate, transport_cc) = self.layer();
            self.info.set(layer, estimate, transport_cc);
            self.pacer.set_estimate(estimate);
            self.keyframe_requests(now, events);
            self.drive_probe(now, wall_us, out);
        }
        if now >= self.next_report {
            self.next_report = now + SR_INTERVAL;
            self.sender_reports(wall_us, out);
        }
        false
    }
}
