//! Relay errors.

use crate::certs::CertError;
use crate::framing::{FrameError, SubscribeErrorCode};

/// Why a relay operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The TLS configuration could not be built from the credentials.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// A configuration value is out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// Certificates could not be generated, read or written.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The UDP socket could not be set up.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// A connection could not be started (bad server name, endpoint closed).
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed or closed: handshake refused, peer gone,
    /// idle timeout.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a QUIC stream failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a QUIC stream failed.
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    /// The peer sent bytes that are not a valid message.
    #[error("protocol: {0}")]
    Protocol(#[from] FrameError),
    /// The peer sent a valid message where it makes no sense.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// The peer closed the control stream.
    #[error("control stream closed by peer")]
    ControlClosed,
    /// The upstream refused the subscription.
    #[error("subscription refused ({code}): {reason}")]
    Refused {
        /// Why, as a code.
        code: SubscribeErrorCode,
        /// The upstream's explanation.
        reason: String,
    },
    /// A step did not finish before its deadline.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The peer did not negotiate the relay's ALPN.
    #[error("peer did not negotiate ALPN strata-relay/1")]
    Alpn,
}
