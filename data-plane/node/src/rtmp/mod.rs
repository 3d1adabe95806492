//! RTMP ingest: `rtmp://NODE/live/{stream}` (token as `{stream}?token=…`,
//! or the token itself as the stream key), H.264 passed through and AAC
//! transcoded to Opus by `strata-ingest`.
//!
//! An RTMP publisher is a publisher like a WHIP one: it reserves the stream
//! on this node, claims the main origin (refused, as WHIP's 409, when the
//! stream is live elsewhere), is refused while the node drains or is at its
//! publisher capacity, attaches as the hub source, counts in load reports
//! and `/metrics`, and unpublishes when the connection ends or stalls.
//!
//! The protocol (handshake, chunk stream, AMF0 commands) is `rml_rtmp`'s
//! sans-IO `ServerSession`; this module is the socket loop around it.
//! Budgets: connections in total and per client address, a deadline from
//! accept to the first media frame (`--rtmp-setup-timeout`), an idle
//! deadline while publishing (`--rtmp-idle-timeout`). `rml_rtmp` buffers at
//! most one message at a time, whose length the RTMP header bounds to
//! 16 MiB, so a connection holds at most about 32 MiB however the peer sets
//! its chunk size (written down rather than re-parsing every chunk header
//! in front of the library).

mod conn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_common::limits::ConnectionLimiter;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span};

use crate::state::NodeState;

/// Accepts RTMP connections until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    let limiter = ConnectionLimiter::new(
        state.cfg.rtmp_max_connections,
        state.cfg.rtmp_max_connections_per_ip,
    );
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                debug!(error = %e, "RTMP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limiter.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                state
                    .counters
                    .rtmp_refused_total
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, %why, "RTMP connection refused");
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        state
            .counters
            .rtmp_connections_total
            .fetch_add(1, Ordering::Relaxed);
        let span = info_span!("rtmp", %peer);
        tokio::spawn(conn::run(state.clone(), sock, peer, permit).instrument(span));
    }
}

/// The address of an RTMP listener, for logs and `strata-dev`.
pub fn url_of(addr: SocketAddr) -> String {
    format!("rtmp://{addr}/{}", crate::encoder::key::APP)
}
