//! The gRPC listener's accept loop: a connection cap in front of tonic, which
//! has none. Each accepted socket carries its slot ([`ConnectionPermit`]) and
//! gives it back when tonic drops the connection, whichever way it ends.
//!
//! The TLS handshake (with its timeout) stays tonic's: it runs each handshake
//! in a task of its own, so a stalled handshake never holds up the accept loop.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use strata_common::limits::{ConnectionLimiter, ConnectionPermit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// An accepted gRPC connection holding its slot.
#[derive(Debug)]
pub struct Limited {
    io: TcpStream,
    _permit: ConnectionPermit,
}

/// Accepted connections of `listener` within `limiter`, with `TCP_NODELAY`
/// (a unary answer is one small write; with Nagle on it can wait for the
/// client's delayed ACK, 40 ms on Linux, which showed up as the claim latency
/// tail). Connections over the cap are closed at once. The stream never
/// yields an error: tonic would end the server on some accept errors, while
/// EMFILE and friends pass once connections close.
pub fn limited(
    listener: TcpListener,
    limiter: ConnectionLimiter,
) -> impl Stream<Item = io::Result<Limited>> + Send + 'static {
    futures::stream::unfold((listener, limiter), |(listener, limiter)| async move {
        loop {
            let (io, remote) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = match limiter.admit(remote.ip()) {
                Ok(p) => p,
                Err(why) => {
                    debug!(%remote, %why, "gRPC connection refused");
                    continue;
                }
            };
            let _ = io.set_nodelay(true);
            let conn = Limited {
                io,
                _permit: permit,
            };
            return Some((Ok(conn), (listener, limiter)));
        }
    })
}

impl Connected for Limited {
    // The TCP stream's own, so `peer_certs()` and `remote_addr()` keep working
    // through tonic's TLS layer.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
