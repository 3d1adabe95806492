//! What publisher and player sessions (and the clients) share: the event handler of a peer
//! connection, its lifecycle task, answering, and trickle ICE.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, Span, debug};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription,
};

use crate::RtcError;
use crate::mux::MuxConn;
use crate::sdp;

/// How long answering waits for the ICE agent to gather its (host-only) candidates.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a connected session checks whether the peer closed DTLS (the `webrtc` crate
/// keeps the connection state "connected" after a close_notify).
const DTLS_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Negotiated, ICE/DTLS not done yet.
    Connecting,
    /// Media can flow.
    Connected,
    /// Closed for good: by request, failure, timeout, or the peer.
    Closed,
}

/// Forwards the peer connection's events into channels.
pub(crate) struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
}

/// The receiving ends of a [`Handler`].
pub(crate) struct PcEvents {
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub gathered: watch::Receiver<bool>,
    pub tracks: Option<mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>>,
}

/// A handler and its events; `with_tracks` when remote tracks are expected.
pub(crate) fn handler(with_tracks: bool) -> (Arc<Handler>, PcEvents) {
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (gathered_tx, gathered_rx) = watch::channel(false);
    let (tracks_tx, tracks_rx) = if with_tracks {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    (
        Arc::new(Handler {
            state: state_tx,
            gathered: gathered_tx,
            tracks: tracks_tx,
        }),
        PcEvents {
            state: state_rx,
            gathered: gathered_rx,
            tracks: tracks_rx,
        },
    )
}

#[async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(%state, "peer connection state");
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(tracks) = &self.tracks {
            let _ = tracks.send(track);
        }
    }
}

/// Timeouts of the lifecycle task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub disconnect_grace: Duration,
}

/// The part of a session that owns the peer connection. Dropping it closes the connection.
pub(crate) struct SessionCore {
    pub pc: Arc<dyn PeerConnection>,
    status: watch::Receiver<SessionState>,
    shutdown: watch::Sender<bool>,
    remote_ufrag: Option<String>,
    limits: (usize, usize),
    /// Keeps this connection's routes on the shared socket.
    _conn: Option<Arc<MuxConn>>,
}

impl SessionCore {
    /// Starts the lifecycle task of a negotiated connection.
    pub(crate) fn start(
        pc: Arc<dyn PeerConnection>,
        pc_state: watch::Receiver<RTCPeerConnectionState>,
        timeouts: Timeouts,
        remote_ufrag: Option<String>,
        limits: (usize, usize),
        conn: Option<Arc<MuxConn>>,
    ) -> SessionCore {
        let (status_tx, status) = watch::channel(SessionState::Connecting);
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(
            lifecycle(Arc::clone(&pc), pc_state, shutdown_rx, status_tx, timeouts)
                .instrument(Span::current()),
        );
        SessionCore {
            pc,
            status,
            shutdown,
            remote_ufrag,
            limits,
            _conn: conn,
        }
    }

    pub(crate) fn state(&self) -> SessionState {
        *self.status.borrow()
    }

    pub(crate) fn status(&self) -> watch::Receiver<SessionState> {
        self.status.clone()
    }

    /// Resolves once the session is closed.
    pub(crate) async fn closed(&self) {
        let mut status = self.status.clone();
        let _ = status.wait_for(|s| *s == SessionState::Closed).await;
    }

    /// Waits until the session is connected, failing if it closes first or `timeout` passes.
    pub(crate) async fn connected(&self, timeout: Duration) -> Result<(), RtcError> {
        let mut status = self.status.clone();
        let wait = status.wait_for(|s| *s != SessionState::Connecting);
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(RtcError::Timeout("connection")),
            Ok(Ok(state)) if *state == SessionState::Connected => Ok(()),
            Ok(_) => Err(RtcError::Closed),
        }
    }

    /// Closes the connection and waits until it is closed.
    pub(crate) async fn close(&self) {
        self.shutdown.send_replace(true);
        self.closed().await;
    }

    /// Applies trickled candidates from an RFC 8840 `sdpfrag`.
    pub(crate) async fn add_remote_candidates(&self, sdpfrag: &str) -> Result<(), RtcError> {
        if self.state() == SessionState::Closed {
            return Err(RtcError::Closed);
        }
        let frag = sdp::parse_sdpfrag(sdpfrag, self.limits.0, self.limits.1)?;
        if let (Some(theirs), Some(known)) = (&frag.ice_ufrag, &self.remote_ufrag)
            && theirs != known
        {
            return Err(RtcError::IceRestartUnsupported);
        }
        for candidate in frag.candidates {
            self.pc
                .add_ice_candidate(candidate)
                .await
                .map_err(|e| RtcError::InvalidCandidate(e.to_string()))?;
        }
        Ok(())
    }
}

async fn lifecycle(
    pc: Arc<dyn PeerConnection>,
    mut pc_state: watch::Receiver<RTCPeerConnectionState>,
    mut shutdown: watch::Receiver<bool>,
    status: watch::Sender<SessionState>,
    timeouts: Timeouts,
) {
    let started = Instant::now();
    let mut dtls_check = tokio::time::interval(DTLS_CHECK_INTERVAL);
    dtls_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected_once = false;
    let mut disconnected_since: Option<Instant> = None;
    let reason = loop {
        let deadline = if connected_once {
            disconnected_since.map(|since| since + timeouts.disconnect_grace)
        } else {
            Some(started + timeouts.connect)
        };
        let far = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            changed = pc_state.changed() => {
                if changed.is_err() {
                    break "peer connection gone";
                }
                let state = *pc_state.borrow_and_update();
                match state {
                    RTCPeerConnectionState::Connected => {
                        connected_once = true;
                        disconnected_since = None;
                        status.send_replace(SessionState::Connected);
                    }
                    RTCPeerConnectionState::Disconnected => {
                        disconnected_since.get_or_insert_with(Instant::now);
                    }
                    RTCPeerConnectionState::Failed => break "connection failed",
                    RTCPeerConnectionState::Closed => break "connection closed",
                    _ => {}
                }
            }
            _ = shutdown.changed() => break "closed locally",
            _ = dtls_check.tick(), if connected_once => {
                if dtls_closed(&pc).await {
                    break "closed by peer";
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                break if connected_once { "disconnected too long" } else { "connect timeout" };
            }
        }
    };
    debug!(reason, "session closing");
    status.send_replace(SessionState::Closed);
    if let Err(e) = pc.close().await {
        debug!(error = %e, "closing peer connection failed");
    }
}

/// Whether the peer closed the DTLS transport (close_notify).
async fn dtls_closed(pc: &Arc<dyn PeerConnection>) -> bool {
    for transceiver in pc.get_transceivers().await {
        let mut transport = None;
        if let Ok(Some(sender)) = transceiver.sender().await {
            transport = sender.transport().await.ok().flatten();
        }
        if transport.is_none()
            && let Ok(Some(receiver)) = transceiver.receiver().await
        {
            transport = receiver.transport().await.ok().flatten();
        }
        if let Some(transport) = transport {
            return matches!(transport.state().await, Ok(RTCDtlsTransportState::Closed));
        }
    }
    false
}

/// Sets a remote offer and [`answer`]s it; the peer connection is closed if either fails.
pub(crate) async fn answer_offer(
    pc: &Arc<dyn PeerConnection>,
    offer_sdp: &str,
    gathered: &mut watch::Receiver<bool>,
    conn: &MuxConn,
    candidates: &[std::net::SocketAddr],
) -> Result<String, RtcError> {
    let description = RTCSessionDescription::offer(offer_sdp.to_owned())
        .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
    if let Err(e) = pc.set_remote_description(description).await {
        let _ = pc.close().await;
        return Err(RtcError::OfferRejected(e.to_string()));
    }
    let answered = answer(pc, gathered, conn, candidates).await;
    if answered.is_err() {
        let _ = pc.close().await;
    }
    answered
}

/// Answers a remote offer that is already set: creates and applies the answer, registers the
/// local ufrag on the shared socket, waits for gathering, and returns the answer SDP with the
/// node's announced host candidates.
pub(crate) async fn answer(
    pc: &Arc<dyn PeerConnection>,
    gathered: &mut watch::Receiver<bool>,
    conn: &MuxConn,
    candidates: &[std::net::SocketAddr],
) -> Result<String, RtcError> {
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let local = pc
        .local_description()
        .await
        .ok_or(RtcError::Timeout("local description"))?;
    if let Some(ufrag) = sdp::ice_ufrag(&local.sdp) {
        let pwd = local
            .sdp
            .lines()
            .find_map(|line| line.trim_end().strip_prefix("a=ice-pwd:"));
        conn.register_ufrag(ufrag, pwd);
    }
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|done| *done)).await;
    let local = pc.local_description().await.unwrap_or(local);
    Ok(sdp::rewrite_candidates(&local.sdp, candidates))
}

/// Microseconds since the Unix epoch, for [`strata_media::MediaPacket::ingest_us`].
pub(crate) fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
