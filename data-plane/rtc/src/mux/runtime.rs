//! The per-connection side of the mux: the socket the WebRTC driver sees, and the runtime that
//! hands it out.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

use super::{Datagram, MuxConn};

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

/// The runtime of one engine connection: Tokio, except that UDP sockets are views of the
/// shared socket.
pub(crate) struct MuxRuntime {
    conn: Arc<MuxConn>,
}

impl MuxRuntime {
    pub(crate) fn new(conn: Arc<MuxConn>) -> Self {
        MuxRuntime { conn }
    }
}

impl fmt::Debug for MuxRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxRuntime").finish_non_exhaustive()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for MuxRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
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

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        let tokio: &'static TokioRuntime = &TokioRuntime;
        tokio.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let tokio: &'static TokioRuntime = &TokioRuntime;
        tokio.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn yield_now(&self) -> BoxFuture<'static, ()> {
        TokioRuntime.yield_now()
    }

    fn name(&self) -> &'static str {
        "strata-mux"
    }
}
