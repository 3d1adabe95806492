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
    /// [`PublisherSession::recv`](crate::PublisherSession::recv). Beyond it, packets are
    /// dropped and counted.
    pub queue_packets: usize,
    /// Egress loops (player sessions are spread over them). Default: one per core.
    pub rtc_workers: usize,
    /// A connected player that sends nothing (no consent check, no RTCP) for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Players that have not completed DTLS yet, at most; beyond it new offers get 503. They
    /// do not count against the node's player capacity.
    pub max_pending: usize,
    /// Remote candidates a player may name (offer and PATCH together); more are ignored and
    /// counted.
    pub max_remote_candidates: usize,
    /// Whether loopback addresses count as acceptable remote candidates (tests, dev).
    pub allow_loopback_candidates: bool,
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
            rtc_workers: std::thread::available_parallelism().map_or(1, usize::from),
            idle_timeout: Duration::from_secs(10),
            max_pending: 500,
            max_remote_candidates: 16,
            allow_loopback_candidates: true,
        }
    }
}

impl RtcConfig {
    /// Whether a remote candidate on `ip` is acceptable: never unspecified, multicast or
    /// broadcast; loopback only when allowed.
    pub fn candidate_allowed(&self, ip: IpAddr) -> bool {
        let special = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast() || v4.is_link_local());
        !special && (self.allow_loopback_candidates || !ip.is_loopback())
    }

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
