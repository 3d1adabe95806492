//! The WebRTC engine of a node: one shared UDP port, host candidates on the announced
//! addresses, no mDNS, no STUN/TURN unless configured.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use tracing::info;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder, RTCIceServer,
    Registry, SettingEngineBuilder,
};

use crate::egress::{Egress, EgressPlayer};
use crate::mux::{MuxConn, UdpMux, mux_runtime};
use crate::publisher::{self, PublisherSession};
use crate::session::{self, PcEvents, Timeouts};
use crate::{RtcConfig, RtcError};

/// The WebRTC side of a node. Cheap to clone; all clones share one UDP socket.
#[derive(Clone)]
pub struct RtcEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    config: RtcConfig,
    mux: Arc<UdpMux>,
    candidates: Vec<SocketAddr>,
    egress: Egress,
}

/// A peer connection built by the engine, with its events and its share of the socket.
pub(crate) struct EnginePc {
    pub pc: Arc<dyn PeerConnection>,
    pub events: PcEvents,
    pub conn: Arc<MuxConn>,
}

impl RtcEngine {
    /// Binds the shared UDP socket (`config.udp_bind`) and starts serving it.
    pub async fn bind(config: RtcConfig) -> Result<RtcEngine, RtcError> {
        let announced = config.announced_ips()?;
        let mux = UdpMux::bind(config.udp_bind).await?;
        RtcEngine::start(config, announced, mux)
    }

    /// Serves an already bound UDP socket (for harnesses that bind first); `config.udp_bind`
    /// is replaced by the socket's address. Must be called within a Tokio runtime.
    pub fn with_socket(
        config: RtcConfig,
        socket: std::net::UdpSocket,
    ) -> Result<RtcEngine, RtcError> {
        let mut config = config;
        config.udp_bind = socket.local_addr()?;
        let announced = config.announced_ips()?;
        socket.set_nonblocking(true)?;
        let mux = UdpMux::from_socket(tokio::net::UdpSocket::from_std(socket)?)?;
        RtcEngine::start(config, announced, mux)
    }

    fn start(
        config: RtcConfig,
        announced: Vec<IpAddr>,
        mux: Arc<UdpMux>,
    ) -> Result<RtcEngine, RtcError> {
        let port = mux.local_addr().port();
        let candidates = announced
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect::<Vec<_>>();
        info!(bound = %mux.local_addr(), ?candidates, "WebRTC engine listening");
        let egress = Egress::start(&config, &mux, candidates.clone())?;
        Ok(RtcEngine {
            inner: Arc::new(EngineInner {
                config,
                mux,
                candidates,
                egress,
            }),
        })
    }

    /// The address of the shared UDP socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.mux.local_addr()
    }

    /// The host candidates every answer announces.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.inner.candidates
    }

    /// The egress loops that serve WHEP players.
    pub fn egress(&self) -> &Egress {
        &self.inner.egress
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &RtcConfig {
        &self.inner.config
    }

    /// Accepts a WHIP offer: returns the publisher session and the answer SDP (ICE gathered,
    /// no trickle needed).
    pub async fn accept_publisher(
        &self,
        offer_sdp: &str,
    ) -> Result<(PublisherSession, String), RtcError> {
        publisher::accept(self, offer_sdp).await
    }

    /// Accepts a WHEP offer for a stream the node carries: the player is served by the egress
    /// loops ([`Egress::accept`]).
    pub async fn accept_player(
        &self,
        offer_sdp: &str,
        stream: &strata_media::hub::StreamHandle,
    ) -> Result<(EgressPlayer, String), RtcError> {
        self.inner.egress.accept(offer_sdp, stream).await
    }

    /// [`RtcEngine::accept_player`] with the player's choice of simulcast layer.
    pub async fn accept_player_with(
        &self,
        offer_sdp: &str,
        stream: &strata_media::hub::StreamHandle,
        pref: crate::LayerPref,
    ) -> Result<(EgressPlayer, String), RtcError> {
        self.inner.egress.accept_with(offer_sdp, stream, pref).await
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.inner.config.connect_timeout,
            disconnect_grace: self.inner.config.disconnect_grace,
        }
    }

    pub(crate) fn sdp_limits(&self) -> (usize, usize) {
        (
            self.inner.config.max_sdp_bytes,
            self.inner.config.max_sdp_lines,
        )
    }

    /// Builds a peer connection on the shared socket.
    pub(crate) async fn new_pc(
        &self,
        media_engine: MediaEngine,
        registry: Registry,
        with_tracks: bool,
    ) -> Result<EnginePc, RtcError> {
        let conn = self.inner.mux.new_conn();
        let (handler, events) = session::handler(with_tracks);
        // The driver binds this address; the mux runtime keeps only its name (see `mux`).
        let internal = match self.inner.mux.local_addr().ip() {
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(rtc_configuration(&self.inner.config.ice_servers))
            .with_setting_engine(setting_engine(internal.is_ipv6()))
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_runtime(Arc::new(mux_runtime(Arc::clone(&conn))))
            .with_udp_addrs(vec![internal])
            .build()
            .await?;
        Ok(EnginePc {
            pc: Arc::new(pc),
            events,
            conn,
        })
    }
}

/// ICE servers as configured (none by default).
pub(crate) fn rtc_configuration(
    ice_servers: &[String],
) -> webrtc::peer_connection::RTCConfiguration {
    let servers = if ice_servers.is_empty() {
        Vec::new()
    } else {
        vec![RTCIceServer {
            urls: ice_servers.to_vec(),
            ..Default::default()
        }]
    };
    RTCConfigurationBuilder::new()
        .with_ice_servers(servers)
        .build()
}

/// mDNS off (it would open a multicast socket and leak the host's presence), one address
/// family.
pub(crate) fn setting_engine(ipv6: bool) -> webrtc::peer_connection::SettingEngine {
    SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(vec![if ipv6 {
            NetworkType::Udp6
        } else {
            NetworkType::Udp4
        }])
        .build()
}
