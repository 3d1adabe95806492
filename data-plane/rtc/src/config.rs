//! Configuration of the WebRTC edge.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Configuration of an [`RtcEngine`](crate::RtcEngine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcConfig {
    /// Address of the one UDP socket every peer connection of the node shares. Port 0 picks a
    /// free port (tests); [`RtcEngine::local_addr`](crate::RtcEngine::local_addr) tells which.
    pub udp_bind: SocketAddr,
    /// Addresses announced as ICE host candidates, each with the bound port. Empty means "the
    /// bind address", which must then be a concrete address. Behind a 1:1 NAT, list the public
    /// address here.
    pub announce_ips: Vec<IpAddr>,
    /// STUN/TURN server URLs (`stun:host:port`). None by default: a node announces its
    /// addresses explicitly.
    pub ice_servers: Vec<String>,
    /// Largest SDP offer or `sdpfrag` accepted, in bytes.
    pub max_sdp_bytes: usize,
    /// Most lines accepted in an SDP offer or `sdpfrag`.
    pub max_sdp_lines: usize,
    /// How long a new session may take to connect before it is closed.
    pub connect_timeout: Duration,
    /// How long a session may stay ICE-disconnected before it counts as closed.
    pub disconnect_grace: Duration,
    /// Packets buffered per publisher session between the WebRTC stack and
    /// [`PublisherSession::recv`](crate::PublisherSession::recv), and per player track between
    /// [`PlayerSession::send`](crate::PlayerSession::send) and the WebRTC stack. Beyond it,
    /// packets are dropped and counted.
    pub queue_packets: usize,
}

impl Default for RtcConfig {
    /// Loopback only, ephemeral port: safe anywhere, reachable from this machine only.
    fn default() -> Self {
        RtcConfig {
            udp_bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            announce_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ice_servers: Vec::new(),
            max_sdp_bytes: 64 * 1024,
            max_sdp_lines: 2000,
            connect_timeout: Duration::from_secs(15),
            disconnect_grace: Duration::from_secs(3),
            queue_packets: 1024,
        }
    }
}

impl RtcConfig {
    /// The addresses announced as host candidates, resolving an empty
    /// [`announce_ips`](Self::announce_ips) to the bind address.
    pub(crate) fn announced_ips(&self) -> Result<Vec<IpAddr>, crate::RtcError> {
        if !self.announce_ips.is_empty() {
            return Ok(self.announce_ips.clone());
        }
        if self.udp_bind.ip().is_unspecified() {
            return Err(crate::RtcError::Config(
                "announce_ips is empty and udp_bind is a wildcard address".into(),
            ));
        }
        Ok(vec![self.udp_bind.ip()])
    }
}
