//! The other ends of the edge: a WHIP publisher and a WHEP player on the same `webrtc` stack,
//! for integration tests, the local-cluster launcher's test publisher and load tools.
//!
//! Both are built from a local offer: `new` → [`offer`](Publisher::offer) → (HTTP exchange,
//! done by the caller) → [`set_answer`](Publisher::set_answer), or all of it at once with
//! [`negotiate`](Publisher::negotiate) and a closure doing the HTTP part. Like the engine,
//! they announce host candidates on one configured address (127.0.0.1 by default) with mDNS
//! off, and each uses its own ephemeral UDP port.

/// The lifecycle methods every client has (`connected`, `state`, `closed`, `close`),
/// forwarded to its `pc` ([`ClientPc`]): written once for the three clients.
macro_rules! client_lifecycle {
    () => {
        /// Waits until connected.
        pub async fn connected(
            &self,
            timeout: std::time::Duration,
        ) -> Result<(), $crate::RtcError> {
            self.pc.core.connected(timeout).await
        }

        /// Where the connection stands.
        pub fn state(&self) -> $crate::SessionState {
            self.pc.core.state()
        }

        /// Resolves once the connection is closed.
        pub async fn closed(&self) {
            self.pc.core.closed().await
        }

        /// Closes the connection.
        pub async fn close(&self) {
            self.pc.core.close().await
        }
    };
}

/// [`client_lifecycle!`] and what the publishing clients add: the server's keyframe requests
/// (the type has `pc` and a `keyframe_requests` receiver).
macro_rules! publishing_client {
    () => {
        /// The next keyframe request (PLI or FIR) from the server, by the track it names.
        pub async fn keyframe_request(&self) -> Option<strata_media::TrackId> {
            self.pc.keyframe_request(&self.keyframe_requests).await
        }

        client_lifecycle!();
    };
}

mod outgoing;
mod player;
mod publisher;
mod simulcast;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCSessionDescription, Registry,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpTransceiver};

pub use player::{ClientCodec, Player, PlayerOptions, ReceivedPacket};
pub use publisher::Publisher;
pub use simulcast::SimulcastPublisher;

use crate::RtcError;
use crate::engine::{rtc_configuration, setting_engine};
use crate::session::{self, PcEvents, SessionCore, Timeouts};

/// Settings shared by the clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Local address to bind (port 0) and announce as the only host candidate.
    pub bind_ip: IpAddr,
    /// STUN/TURN server URLs; none by default.
    pub ice_servers: Vec<String>,
    /// How long the client may take from creation to connected before it gives up.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ice_servers: Vec::new(),
            connect_timeout: Duration::from_secs(20),
        }
    }
}

/// A client peer connection and its lifecycle.
struct ClientPc {
    core: SessionCore,
    gathered: tokio::sync::Mutex<watch::Receiver<bool>>,
}

impl ClientPc {
    async fn build(
        media_engine: MediaEngine,
        registry: Registry,
        config: &ClientConfig,
        with_tracks: bool,
    ) -> Result<(ClientPc, PcEvents), RtcError> {
        let (handler, events) = session::handler(with_tracks);
        let pc = PeerConnectionBuilder::new()
            .with_configuration(rtc_configuration(&config.ice_servers))
            .with_setting_engine(setting_engine(config.bind_ip.is_ipv6()))
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![SocketAddr::new(config.bind_ip, 0)])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let timeouts = Timeouts {
            connect: config.connect_timeout,
            disconnect_grace: Duration::from_secs(5),
        };
        let gathered = events.gathered.clone();
        let core = SessionCore::start(
            pc,
            events.state.clone(),
            timeouts,
            None,
            (1 << 20, 100_000),
            None,
        );
        Ok((
            ClientPc {
                core,
                gathered: tokio::sync::Mutex::new(gathered),
            },
            events,
        ))
    }

    fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.core.pc
    }

    /// Adds a send-only transceiver for `local`.
    async fn add_sendonly(
        &self,
        local: &Arc<TrackLocalStaticRTP>,
    ) -> Result<Arc<dyn RtpTransceiver>, RtcError> {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        };
        let local = Arc::clone(local) as Arc<dyn TrackLocal>;
        Ok(self
            .pc()
            .add_transceiver_from_track(local, Some(init))
            .await?)
    }

    /// Creates and applies the local offer, waits for ICE gathering, returns the offer SDP.
    async fn offer(&self) -> Result<String, RtcError> {
        let offer = self.pc().create_offer(None).await?;
        self.pc().set_local_description(offer).await?;
        let mut gathered = self.gathered.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), gathered.wait_for(|done| *done)).await;
        let local = self
            .pc()
            .local_description()
            .await
            .ok_or(RtcError::Timeout("local description"))?;
        Ok(local.sdp)
    }

    async fn set_answer(&self, answer: &str) -> Result<(), RtcError> {
        let answer = RTCSessionDescription::answer(answer.to_owned())
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        self.pc()
            .set_remote_description(answer)
            .await
            .map_err(|e| RtcError::OfferRejected(e.to_string()))
    }
}

/// Runs one offer/answer exchange through `exchange` (typically an HTTP `POST` of the offer
/// returning the answer body).
async fn exchange_with<F, Fut, E>(pc: &ClientPc, exchange: F) -> Result<(), RtcError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<String, E>>,
    E: std::fmt::Display,
{
    let offer = pc.offer().await?;
    let answer = exchange(offer)
        .await
        .map_err(|e| RtcError::Signaling(e.to_string()))?;
    pc.set_answer(&answer).await
}
