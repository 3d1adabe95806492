//! [`RelayClient`]: subscribes to streams on upstream nodes.

mod receiver;
mod subscription;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use subscription::{Subscription, SubscriptionEvent};

use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::framing::{ControlMessage, Frame};
use crate::io::{ControlReader, codes, write_control};
use crate::stats::RelayStats;
use crate::tls::{self, RelayTls};

/// What the connection's group readers hand to a subscription.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A frame of group `sequence`.
    Frame { sequence: u64, frame: Frame },
    /// Group `sequence` ended: finished (`complete`) or reset.
    GroupEnd { sequence: u64, complete: bool },
    /// A frame that came as a datagram (audio): outside the group order.
    Datagram(Frame),
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<Incoming>>>>;
/// One slot per upstream; the async mutex serialises connecting to it.
type PoolSlot = Arc<tokio::sync::Mutex<Option<Arc<Upstream>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection to an upstream node, shared by all its subscriptions.
pub(crate) struct Upstream {
    conn: quinn::Connection,
    peer: String,
    routes: Routes,
    accept_task: tokio::task::JoinHandle<()>,
    /// Keeps the connection in the link measurements while it lives.
    _link: crate::links::LinkGuard,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The client is gone (or the connection died and was replaced).
        self.accept_task.abort();
        self.conn
            .close(quinn::VarInt::from_u32(codes::DONE), b"idle");
    }
}

struct ClientInner {
    endpoint: quinn::Endpoint,
    cfg: RelayConfig,
    stats: Arc<RelayStats>,
    /// One connection per upstream, kept (idle ones cost a keep-alive every
    /// 100 ms) until it dies or the client is dropped.
    pool: Mutex<HashMap<(SocketAddr, String), PoolSlot>>,
    next_id: AtomicU64,
}

/// The downstream side of the relay. Cheap to clone.
#[derive(Clone)]
pub struct RelayClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("local_addr", &self.inner.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// A client on an already bound UDP socket. Must be called inside a tokio runtime.
    pub fn new(
        socket: std::net::UdpSocket,
        tls: &RelayTls,
        cfg: RelayConfig,
        stats: Arc<RelayStats>,
    ) -> Result<Self, RelayError> {
        let client = tls::quic_client_config(tls, &cfg)?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(client);
        Ok(RelayClient {
            inner: Arc::new(ClientInner {
                endpoint,
                cfg,
                stats,
                pool: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// Subscribe to `stream` on the node at `addr`, whose certificate must name
    /// `server_name` (its node id). Reuses the connection to that node if one
    /// is open. Fails with [`RelayError::Refused`] if the upstream says no.
    #[tracing::instrument(
        name = "relay.subscribe",
        skip(self, addr, server_name),
        fields(upstream = %addr)
    )]
    pub async fn subscribe(
        &self,
        addr: SocketAddr,
        server_name: &str,
        stream: &str,
        epoch: u64,
    ) -> Result<Subscription, RelayError> {
        let cfg = &self.inner.cfg;
        let upstream = self.upstream(addr, server_name).await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(cfg.subscription_queue.max(1));
        lock(&upstream.routes).insert(id, tx);
        // From here on, dropping `route` (error or unsubscribe) unregisters.
        let route = subscription::Route {
            upstream: upstream.clone(),
            id,
        };
        let deadline = cfg.handshake_timeout;
        let opened = tokio::time::timeout(deadline, upstream.conn.open_bi()).await;
        let (mut send, recv) =
            opened.map_err(|_| RelayError::Timeout("opening a control stream"))??;
        let request = ControlMessage::Subscribe {
            id,
            stream: stream.to_owned(),
            epoch,
        };
        write_control(&mut send, &request).await?;
        let mut ctrl = ControlReader::new(recv);
        let answer = tokio::time::timeout(deadline, ctrl.next())
            .await
            .map_err(|_| RelayError::Timeout("waiting for the subscription answer"))??;
        let catalog = match answer {
            Some(ControlMessage::SubscribeOk { catalog }) => catalog,
            Some(ControlMessage::SubscribeError { code, reason }) => {
                tracing::info!(%code, reason, "subscription refused");
                return Err(RelayError::Refused { code, reason });
            }
            Some(_) => {
                return Err(RelayError::Unexpected(
                    "expected SubscribeOk or SubscribeError",
                ));
            }
            None => return Err(RelayError::ControlClosed),
        };
        tracing::debug!(id, "subscribed");
        Ok(Subscription::new(
            route,
            stream.to_owned(),
            catalog,
            rx,
            (ctrl, send),
            cfg.order_limits(),
            self.inner.stats.clone(),
        ))
    }

    /// The pooled connection to `addr`, connecting if there is none (or it died).
    async fn upstream(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Arc<Upstream>, RelayError> {
        let slot = lock(&self.inner.pool)
            .entry((addr, server_name.to_owned()))
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(upstream) = slot.as_ref()
            && upstream.conn.close_reason().is_none()
        {
            return Ok(upstream.clone());
        }
        let upstream = Arc::new(self.connect(addr, server_name).await?);
        *slot = Some(upstream.clone());
        Ok(upstream)
    }

    async fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<Upstream, RelayError> {
        let connecting = self.inner.endpoint.connect(addr, server_name)?;
        let conn = tokio::time::timeout(self.inner.cfg.handshake_timeout, connecting)
            .await
            .map_err(|_| RelayError::Timeout("handshake"))??;
        if !tls::negotiated_alpn(&conn) {
            conn.close(quinn::VarInt::from_u32(codes::PROTOCOL), b"alpn");
            return Err(RelayError::Alpn);
        }
        let peer = tls::peer_node_id(&conn).unwrap_or_else(|| server_name.to_owned());
        tracing::debug!(peer, "connected to upstream");
        let routes: Routes = Arc::default();
        let accept_task = tokio::spawn(
            receiver::accept_groups(
                conn.clone(),
                routes.clone(),
                self.inner.stats.clone(),
                self.inner.stats.peer(&peer),
            )
            .instrument(tracing::debug_span!("relay.upstream", peer = %peer)),
        );
        Ok(Upstream {
            _link: crate::links::track(&self.inner.stats.links, &peer, &conn),
            conn,
            peer,
            routes,
            accept_task,
        })
    }

    /// Connections currently open (one per upstream in use).
    pub fn open_connections(&self) -> usize {
        self.inner.endpoint.open_connections()
    }

    /// Close every connection now (peers learn it at once).
    pub fn close(&self) {
        self.inner
            .endpoint
            .close(quinn::VarInt::from_u32(codes::DONE), b"shutdown");
    }
}

/// A receive buffer bounded by the frame size limit.
pub(crate) fn group_buffer() -> BytesMut {
    BytesMut::with_capacity(crate::framing::MAX_FRAME)
}
