//! [`RelayServer`]: serves this node's hub streams to downstream nodes.

mod interest;
mod sender;
mod session;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use strata_media::hub::Hub;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::auth::{AllowAll, Authorizer};
use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::io::codes;
use crate::stats::RelayStats;
use crate::tls::{self, RelayTls};

pub(crate) struct ServerCtx {
    pub(crate) hub: Hub,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) cfg: RelayConfig,
    pub(crate) stats: Arc<RelayStats>,
}

/// The upstream side of the relay: accepts QUIC connections from other
/// nodes and serves their subscriptions from a [`Hub`].
pub struct RelayServer {
    endpoint: quinn::Endpoint,
    ctx: Arc<ServerCtx>,
}

impl std::fmt::Debug for RelayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServer")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl RelayServer {
    /// A server on an already bound UDP socket (bind port 0 in tests), serving
    /// `hub` to every CA-authenticated peer ([`AllowAll`] until
    /// [`with_authorizer`](Self::with_authorizer)). Must be called inside a
    /// tokio runtime.
    pub fn new(
        socket: std::net::UdpSocket,
        tls: &RelayTls,
        cfg: RelayConfig,
        hub: Hub,
        stats: Arc<RelayStats>,
    ) -> Result<Self, RelayError> {
        let server = tls::quic_server_config(tls, &cfg)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(RelayServer {
            endpoint,
            ctx: Arc::new(ServerCtx {
                hub,
                authorizer: Arc::new(AllowAll),
                cfg,
                stats,
            }),
        })
    }

    /// Use `authorizer` to accept or refuse subscriptions (stale epochs, unknown peers).
    pub fn with_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.authorizer = authorizer;
        }
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Accept connections until `shutdown` completes, then close every
    /// connection and wait (bounded by the idle timeout) for peers to learn it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let ctx = self.ctx.clone();
                    let remote = incoming.remote_address();
                    tokio::spawn(
                        serve_connection(incoming, ctx)
                            .instrument(tracing::debug_span!("relay.conn", %remote)),
                    );
                }
            }
        }
        self.endpoint
            .close(quinn::VarInt::from_u32(codes::DONE), b"shutdown");
        let _ = tokio::time::timeout(self.ctx.cfg.idle_timeout, self.endpoint.wait_idle()).await;
    }
}

/// Handshake, then serve every control stream the peer opens.
async fn serve_connection(incoming: quinn::Incoming, ctx: Arc<ServerCtx>) {
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(error = %e, "refused connection attempt");
            return;
        }
    };
    let conn = match tokio::time::timeout(ctx.cfg.handshake_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("handshake timed out");
            return;
        }
    };
    if !tls::negotiated_alpn(&conn) {
        tracing::warn!("peer did not negotiate the relay ALPN; closing");
        conn.close(quinn::VarInt::from_u32(codes::PROTOCOL), b"alpn");
        return;
    }
    let peer = tls::peer_node_id(&conn);
    let span = tracing::info_span!("relay.peer", peer = peer.as_deref().unwrap_or("unknown"));
    let _link = crate::links::track(
        &ctx.stats.links,
        peer.as_deref().unwrap_or("unknown"),
        &conn,
    );
    let limit = Arc::new(Semaphore::new(
        usize::try_from(ctx.cfg.max_subscriptions_per_connection).unwrap_or(usize::MAX),
    ));
    let ids = Arc::new(Mutex::new(HashSet::new()));
    async {
        tracing::debug!("peer connected");
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::debug!(error = %e, "peer connection closed");
                    return;
                }
            };
            let session = session::Session {
                ctx: ctx.clone(),
                conn: conn.clone(),
                peer: peer.clone(),
                permit: limit.clone().try_acquire_owned().ok(),
                ids: ids.clone(),
            };
            tokio::spawn(session.run(send, recv).in_current_span());
        }
    }
    .instrument(span)
    .await;
}
