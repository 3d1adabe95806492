//! Stream helpers shared by server and client.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use crate::error::RelayError;
use crate::framing::{
    ControlMessage, FrameError, MAX_CONTROL_MESSAGE, decode_control, encode_control,
};

/// Reads control messages off a QUIC receive stream.
pub(crate) struct ControlReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl ControlReader {
    pub(crate) fn new(recv: quinn::RecvStream) -> Self {
        ControlReader {
            recv,
            buf: BytesMut::new(),
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream cleanly.
    /// Cancel-safe: partial input stays buffered.
    pub(crate) async fn next(&mut self) -> Result<Option<ControlMessage>, RelayError> {
        loop {
            if let Some(msg) = decode_control(&mut self.buf)? {
                return Ok(Some(msg));
            }
            match self.recv.read_chunk(MAX_CONTROL_MESSAGE, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(FrameError::UnexpectedEnd(self.buf.len()).into()),
            }
        }
    }

    /// Stop reading (tell the peer not to send more).
    pub(crate) fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(quinn::VarInt::from_u32(code));
    }
}

/// Write one control message.
pub(crate) async fn write_control(
    send: &mut quinn::SendStream,
    msg: &ControlMessage,
) -> Result<(), RelayError> {
    let mut buf = BytesMut::new();
    encode_control(msg, &mut buf)?;
    send.write_all(&buf).await?;
    Ok(())
}

/// Wall clock in µs since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The sans-IO cores take `std::time::Instant`; the shells read tokio's clock
/// so that paused-time tests drive them.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Sleep until `at`; never wakes for `None` (a disabled `select!` timer).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Application error codes used when closing streams and connections.
pub(crate) mod codes {
    /// Normal end (unsubscribe, shutdown).
    pub const DONE: u32 = 0;
    /// The peer sent bytes that are not the protocol.
    pub const PROTOCOL: u32 = 1;
    /// A group was reset because it was too late.
    pub const LATE: u32 = 2;
    /// The receiver is not interested in this group.
    pub const UNWANTED: u32 = 3;
}
