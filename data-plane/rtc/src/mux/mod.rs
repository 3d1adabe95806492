//! One UDP port for every peer connection of a node.
//!
//! The `webrtc` crate binds sockets per connection and has no ICE UDP mux, but it takes its
//! sockets from a [`Runtime`]. Each engine connection gets a runtime ([`mux_runtime`]) whose
//! `wrap_udp_socket` discards the socket the driver bound (on an ephemeral loopback port) and
//! returns a [`MuxSocket`]: a view of the shared socket that receives only this connection's
//! datagrams and sends from the shared port.
//!
//! Demultiplexing, as in Pion's `UDPMux`: a STUN Binding request names the recipient's ICE
//! ufrag in its USERNAME (`"<our ufrag>:<their ufrag>"`), which maps the sender's address to
//! the connection that registered the ufrag; every later datagram from that address (DTLS,
//! SRTP, STUN responses) follows the address. A connection sending to an address claims it
//! too, so answers to its own checks find their way back. Limitation: two connections cannot
//! share one remote address and port.
//!
//! The answer SDP announces the shared port (see [`crate::sdp::rewrite_candidates`]); the ICE
//! agent keeps believing in its ephemeral loopback candidate, which only names the socket.

mod runtime;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, trace, warn};

pub(crate) use runtime::mux_runtime;

/// Datagrams queued per connection between the shared socket and its driver.
const CONN_QUEUE: usize = 512;

struct Datagram {
    data: Bytes,
    from: SocketAddr,
}

#[derive(Default)]
struct Routes {
    /// A connection and its local ICE password: a STUN request from an address not yet
    /// routed moves the route only if its MESSAGE-INTEGRITY verifies with it.
    by_ufrag: HashMap<String, (Weak<ConnQueue>, Option<String>)>,
    by_addr: HashMap<SocketAddr, Weak<ConnQueue>>,
    /// Player sessions of the egress loops. A STUN request naming one is handed to its loop
    /// without moving any address: the loop checks MESSAGE-INTEGRITY and only then claims
    /// the address ([`UdpMux::claim_egress_addr`]).
    egress_by_ufrag: HashMap<String, EgressRoute>,
    egress_by_addr: HashMap<SocketAddr, EgressRoute>,
}

/// Where an egress session's datagrams go: its loop's queue, tagged with the session.
#[derive(Clone)]
pub(crate) struct EgressRoute {
    pub tx: mpsc::Sender<EgressDatagram>,
    pub session: u64,
}

/// A datagram for an egress session.
pub(crate) struct EgressDatagram {
    pub session: u64,
    pub data: Bytes,
    pub from: SocketAddr,
}

enum Route {
    Conn(Arc<ConnQueue>),
    Egress(EgressRoute),
}

struct Shared {
    socket: Arc<UdpSocket>,
    routes: RwLock<Routes>,
    crypto: Arc<dyn rtc::crypto::RTCCryptoProvider>,
}

struct ConnQueue {
    tx: mpsc::Sender<Datagram>,
    rx: Mutex<mpsc::Receiver<Datagram>>,
}

/// The shared UDP socket and its receive task.
pub(crate) struct UdpMux {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl UdpMux {
    /// Binds the shared socket and starts demultiplexing.
    pub(crate) async fn bind(addr: SocketAddr) -> io::Result<Arc<UdpMux>> {
        UdpMux::from_socket(UdpSocket::bind(addr).await?)
    }

    /// Demultiplexes an already bound socket.
    pub(crate) fn from_socket(socket: UdpSocket) -> io::Result<Arc<UdpMux>> {
        let socket = Arc::new(socket);
        let local_addr = socket.local_addr()?;
        let crypto = rtc::crypto::default_provider().map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            socket,
            routes: RwLock::new(Routes::default()),
            crypto,
        });
        let task = tokio::spawn(receive_loop(Arc::clone(&shared)));
        Ok(Arc::new(UdpMux {
            shared,
            local_addr,
            task,
        }))
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared socket, for the egress loops' sends.
    pub(crate) fn socket(&self) -> Arc<UdpSocket> {
        Arc::clone(&self.shared.socket)
    }

    /// Routes STUN requests naming `ufrag` to an egress session.
    pub(crate) fn register_egress(&self, ufrag: &str, route: EgressRoute) {
        if let Ok(mut routes) = self.shared.routes.write() {
            routes.egress_by_ufrag.insert(ufrag.to_owned(), route);
        }
    }

    /// Routes every datagram from `addr` to an egress session (after a checked STUN request).
    pub(crate) fn claim_egress_addr(&self, addr: SocketAddr, route: EgressRoute) {
        if let Ok(mut routes) = self.shared.routes.write() {
            routes.egress_by_addr.insert(addr, route);
        }
    }

    /// Forgets an egress session's routes.
    pub(crate) fn forget_egress(&self, ufrag: &str, addr: Option<SocketAddr>) {
        if let Ok(mut routes) = self.shared.routes.write()
            && let Some(route) = routes.egress_by_ufrag.remove(ufrag)
        {
            let session = route.session;
            // Only the session's own claim: the address may have moved to another session.
            if let Some(addr) = addr
                && routes
                    .egress_by_addr
                    .get(&addr)
                    .is_some_and(|r| r.session == session)
            {
                routes.egress_by_addr.remove(&addr);
            }
        }
    }

    /// A new connection's share of the socket.
    pub(crate) fn new_conn(&self) -> Arc<MuxConn> {
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        Arc::new(MuxConn {
            queue: Arc::new(ConnQueue {
                tx,
                rx: Mutex::new(rx),
            }),
            shared: Arc::downgrade(&self.shared),
            socket: Arc::clone(&self.shared.socket),
        })
    }
}

impl Drop for UdpMux {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match shared.socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors of earlier sends surface here; nothing is wrong with the socket.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) {
                    warn!(error = %e, "shared UDP socket receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let data = &buf[..n];
        let queue = match shared.route(data, from) {
            Some(Route::Conn(queue)) => queue,
            Some(Route::Egress(route)) => {
                let datagram = EgressDatagram {
                    session: route.session,
                    data: Bytes::copy_from_slice(data),
                    from,
                };
                if route.tx.try_send(datagram).is_err() {
                    trace!(%from, "egress loop queue full or closed, dropping datagram");
                }
                continue;
            }
            None => {
                trace!(%from, len = n, "dropping datagram for no known connection");
                continue;
            }
        };
        if queue
            .tx
            .try_send(Datagram {
                data: Bytes::copy_from_slice(data),
                from,
            })
            .is_err()
        {
            trace!(%from, "connection queue full or closed, dropping datagram");
        }
    }
}

impl Shared {
    fn route(&self, data: &[u8], from: SocketAddr) -> Option<Route> {
        if let Some(ufrag) = stun_binding_request_ufrag(data) {
            let routes = self.routes.read().ok()?;
            if let Some(route) = routes.egress_by_ufrag.get(ufrag) {
                return Some(Route::Egress(route.clone()));
            }
            if let Some((weak, pwd)) = routes.by_ufrag.get(ufrag)
                && let Some(queue) = weak.upgrade()
            {
                let known = routes
                    .by_addr
                    .get(&from)
                    .is_some_and(|w| Weak::ptr_eq(w, &Arc::downgrade(&queue)));
                let pwd = pwd.clone();
                drop(routes);
                if !known {
                    // Only a request signed with the connection's password moves an address:
                    // a forged one would steer that connection's traffic to its sender.
                    let verified = pwd.as_deref().is_some_and(|pwd| {
                        crate::ice::integrity_ok(data, pwd, self.crypto.crypto())
                    });
                    if !verified {
                        return None;
                    }
                    if let Ok(mut routes) = self.routes.write() {
                        routes.by_addr.insert(from, Arc::downgrade(&queue));
                    }
                }
                return Some(Route::Conn(queue));
            }
        }
        let routes = self.routes.read().ok()?;
        if let Some(route) = routes.egress_by_addr.get(&from) {
            return Some(Route::Egress(route.clone()));
        }
        routes
            .by_addr
            .get(&from)
            .and_then(Weak::upgrade)
            .map(Route::Conn)
    }
}

/// The local ufrag named by a STUN Binding request (RFC 8445 §7.2.2), if `data` is one.
fn stun_binding_request_ufrag(data: &[u8]) -> Option<&str> {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
    const USERNAME: u16 = 0x0006;
    if data.len() < 20 || data[0..2] != BINDING_REQUEST || data[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(20..20 + body_len)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let typ = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if typ == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        let padded = 4 + len.div_ceil(4) * 4;
        rest = rest.get(padded..)?;
    }
    None
}

/// One connection's share of the shared socket. Dropping it forgets its routes.
pub(crate) struct MuxConn {
    queue: Arc<ConnQueue>,
    shared: Weak<Shared>,
    socket: Arc<UdpSocket>,
}

impl MuxConn {
    /// Routes STUN requests naming `ufrag` (our side's ICE ufrag) to this connection; a
    /// request from a new address must verify with `pwd` (our side's ICE password).
    pub(crate) fn register_ufrag(&self, ufrag: &str, pwd: Option<&str>) {
        if let Some(shared) = self.shared.upgrade()
            && let Ok(mut routes) = shared.routes.write()
        {
            routes.by_ufrag.insert(
                ufrag.to_owned(),
                (Arc::downgrade(&self.queue), pwd.map(str::to_owned)),
            );
        }
    }

    fn claim_addr(&self, addr: SocketAddr) {
        if let Some(shared) = self.shared.upgrade()
            && let Ok(mut routes) = shared.routes.write()
        {
            routes.by_addr.insert(addr, Arc::downgrade(&self.queue));
        }
    }
}

impl Drop for MuxConn {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Ok(mut routes) = shared.routes.write() else {
            return;
        };
        let mine = Arc::downgrade(&self.queue);
        // Also sweeps routes of connections that are gone without cleaning up.
        routes
            .by_ufrag
            .retain(|_, (w, _)| !Weak::ptr_eq(w, &mine) && w.strong_count() > 0);
        routes
            .by_addr
            .retain(|_, w| !Weak::ptr_eq(w, &mine) && w.strong_count() > 0);
        debug!(
            ufrags = routes.by_ufrag.len(),
            addrs = routes.by_addr.len(),
            "connection left the shared UDP socket"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&0x0006u16.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A PRIORITY attribute first, to exercise the walk.
        let mut body = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        body.extend_from_slice(&attr);
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    /// A Binding request signed with `pwd` (short-term MESSAGE-INTEGRITY).
    fn signed_request(username: &str, pwd: &str) -> Vec<u8> {
        let provider = rtc::crypto::default_provider().expect("crypto");
        crate::ice::signed_binding_request(username, pwd, provider.crypto())
    }

    #[test]
    fn finds_local_ufrag_in_binding_requests() {
        let msg = binding_request("serverufrag:clientufrag");
        assert_eq!(stun_binding_request_ufrag(&msg), Some("serverufrag"));
        // A binding response (0x0101) is routed by address, not by name.
        let mut response = msg.clone();
        response[0] = 0x01;
        response[1] = 0x01;
        assert_eq!(stun_binding_request_ufrag(&response), None);
        // Truncations never panic.
        for len in 0..msg.len() {
            let _ = stun_binding_request_ufrag(&msg[..len]);
        }
        assert_eq!(stun_binding_request_ufrag(b"\x16\xfe\xfd dtls"), None);
    }

    #[tokio::test]
    async fn routes_by_ufrag_then_by_address() {
        let mux = UdpMux::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let a = mux.new_conn();
        let b = mux.new_conn();
        a.register_ufrag("aaaa", Some("password-of-a-0123456789"));
        b.register_ufrag("bbbb", Some("password-of-b-0123456789"));
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind peer");
        let peer_addr = peer.local_addr().expect("addr");
        let recv = |conn: &Arc<MuxConn>| {
            let queue = Arc::clone(&conn.queue);
            async move {
                let next = std::future::poll_fn(|cx| queue.rx.lock().expect("lock").poll_recv(cx));
                tokio::time::timeout(Duration::from_secs(2), next)
                    .await
                    .ok()
                    .flatten()
                    .map(|d| (d.data, d.from))
            }
        };
        // Unknown sender, not STUN: dropped. A request for "bbbb" with a forged
        // MESSAGE-INTEGRITY: dropped, claims nothing. Then a signed one claims the address.
        peer.send_to(b"nobody", mux.local_addr())
            .await
            .expect("send");
        peer.send_to(&binding_request("bbbb:peer"), mux.local_addr())
            .await
            .expect("send");
        peer.send_to(b"dtls-too-early", mux.local_addr())
            .await
            .expect("send");
        peer.send_to(
            &signed_request("bbbb:peer", "password-of-b-0123456789"),
            mux.local_addr(),
        )
        .await
        .expect("send");
        peer.send_to(b"dtls", mux.local_addr()).await.expect("send");
        let (first, from) = recv(&b).await.expect("stun for b");
        assert_eq!(from, peer_addr);
        assert!(stun_binding_request_ufrag(&first).is_some());
        assert_eq!(
            recv(&b).await.expect("dtls for b").0,
            Bytes::from_static(b"dtls")
        );
        // Dropping b forgets its routes.
        drop(b);
        peer.send_to(b"late", mux.local_addr()).await.expect("send");
        peer.send_to(
            &signed_request("aaaa:peer", "password-of-a-0123456789"),
            mux.local_addr(),
        )
        .await
        .expect("send");
        let (stun, _) = recv(&a).await.expect("stun for a");
        assert!(stun_binding_request_ufrag(&stun).is_some());
    }
}
