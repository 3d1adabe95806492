//! The per-connection side of the mux: the socket the WebRTC driver sees, and the runtime that
//! hands it out.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

use super::{Datagram, MuxConn};
use crate::udp_runtime::{UdpRuntime, WrapUdp};

/// The socket the WebRTC driver of one connection uses.
struct MuxSocket {
    conn: Arc<MuxConn>,
    /// The address the driver bound and named its host candidate after.
    local_addr: SocketAddr,
    /// Destinations this socket already claimed, to keep the route table off the send path.
    claimed: Mutex<HashSet<SocketAddr>>,
}

impl fmt::Debug for MuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxSocket")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for MuxSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let dest = transmit.destination;
        let newly_claimed = self
            .claimed
            .lock()
            .map(|mut claimed| claimed.insert(dest))
            .unwrap_or(false);
        if newly_claimed {
            self.conn.claim_addr(dest);
        }
        // max_gso_segments() is 1, so the driver never asks for segmentation.
        self.conn
            .socket
            .poll_send_to(cx, transmit.contents, dest)
            .map_ok(|_| transmit.contents.len())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let max = bufs.len().min(meta.len());
        if max == 0 {
            return Poll::Ready(Ok(0));
        }
        let Ok(mut rx) = self.conn.queue.rx.lock() else {
            return Poll::Ready(Err(io::Error::other("connection queue poisoned")));
        };
        let first = match rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "shared UDP socket closed",
                )));
            }
            Poll::Ready(Some(datagram)) => datagram,
        };
        fill(&mut bufs[0], &mut meta[0], first);
        let mut n = 1;
        while n < max {
            match rx.try_recv() {
                Ok(datagram) => {
                    fill(&mut bufs[n], &mut meta[n], datagram);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        Poll::Ready(Ok(n))
    }
}

fn fill(buf: &mut IoSliceMut<'_>, meta: &mut RecvMeta, datagram: Datagram) {
    let len = datagram.data.len().min(buf.len());
    buf[..len].copy_from_slice(&datagram.data[..len]);
    *meta = RecvMeta::default();
    meta.addr = datagram.from;
    meta.len = len;
    meta.stride = len.max(1);
}

/// Where one engine connection's UDP sockets come from: views of the shared socket. Its
/// runtime is `UdpRuntime<MuxSockets>` ([`mux_runtime`]): Tokio for everything else.
pub(crate) struct MuxSockets {
    conn: Arc<MuxConn>,
}

/// The runtime of one engine connection.
pub(crate) fn mux_runtime(conn: Arc<MuxConn>) -> UdpRuntime<MuxSockets> {
    UdpRuntime::new("strata-mux", MuxSockets { conn })
}

impl WrapUdp for MuxSockets {
    fn wrap(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        // The driver's own socket only reserves a name for the host candidate; it is closed
        // here and all traffic goes through the shared socket.
        let local_addr = socket.local_addr()?;
        drop(socket);
        Ok(Arc::new(MuxSocket {
            conn: Arc::clone(&self.conn),
            local_addr,
            claimed: Mutex::new(HashSet::new()),
        }))
    }
}
