//! A `webrtc` runtime that is Tokio in everything except where its UDP sockets come from:
//! the node's port mux hands each engine connection a view of the one shared socket, and the
//! fan-out bench's load client hands its peers sockets read by one receive loop. Both give
//! only the socket part ([`WrapUdp`]); the rest is delegated here, once.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// Where a [`UdpRuntime`]'s UDP sockets come from.
pub trait WrapUdp: Send + Sync + 'static {
    /// Turns the socket the driver bound (for its host candidate's address) into the socket
    /// the driver uses.
    fn wrap(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>>;
}

/// Tokio, with UDP sockets from `W`.
pub struct UdpRuntime<W> {
    wrap: W,
    name: &'static str,
}

impl<W: WrapUdp> UdpRuntime<W> {
    /// A runtime named `name` (in the driver's logs) whose UDP sockets `wrap` makes.
    pub fn new(name: &'static str, wrap: W) -> Self {
        UdpRuntime { wrap, name }
    }
}

impl<W> fmt::Debug for UdpRuntime<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpRuntime")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<W: WrapUdp> Runtime for UdpRuntime<W> {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        self.wrap.wrap(socket)
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
        self.name
    }
}
