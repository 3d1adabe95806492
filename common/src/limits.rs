//! Limits that keep idle, slow or hostile clients from exhausting a server's
//! sockets: a connection cap with a per-address share ([`ConnectionLimiter`])
//! and the HTTP/1.1 server loop that applies it with a header read timeout
//! ([`serve`]).
//!
//! The cap alone would let one client hold every slot with idle sockets
//! (slow-loris) until the header timeout closes them, locking everyone else
//! out; the per-address share bounds what one address (one IPv6 /64) can hold.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

/// The key a client address is limited under: IPv4 addresses as they are
/// (IPv4-mapped IPv6 counts as IPv4), IPv6 addresses by their /64, because one
/// host usually owns a whole /64 and keying by address would let it mint keys.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Every slot of the server is taken.
    #[error("at the connection limit")]
    Full,
    /// The client's address (or /64) holds its whole share already.
    #[error("this client address holds its share of connections")]
    AddressFull,
}

/// Counts open connections, in total and per client key ([`client_key`]).
///
/// A slot is held by the [`ConnectionPermit`] and given back when it drops, so
/// a connection cannot leak its slot on any exit path. The per-address map
/// only holds addresses with an open connection, so it is bounded by the cap.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    total: Arc<Semaphore>,
    max: usize,
    per_address: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection's slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    _total: OwnedSemaphorePermit,
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        // A poisoned map still holds correct counts: every update is one statement.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl ConnectionLimiter {
    /// At most `max` connections, at most `per_address` of them from one
    /// client key (0: no per-address share).
    pub fn new(max: usize, per_address: usize) -> Self {
        let max = max.max(1);
        Self {
            total: Arc::new(Semaphore::new(max)),
            max,
            per_address: if per_address == 0 { max } else { per_address },
            open: Arc::default(),
        }
    }

    /// Takes a slot for a connection from `ip`.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let held = open.get(&key).copied().unwrap_or(0);
        if held >= self.per_address {
            return Err(Refused::AddressFull);
        }
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        open.insert(key, held + 1);
        Ok(ConnectionPermit {
            _total: total,
            key,
            open: self.open.clone(),
        })
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.max - self.total.available_permits()
    }

    /// Client keys with an open connection.
    pub fn addresses(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until every connection has given its slot back, at most `within`.
    pub async fn drained(&self, within: Duration) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(within, self.total.acquire_many(all)).await;
    }
}

/// Limits of an HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A client must send a request's complete headers within this time
    /// (also bounds an idle keep-alive connection).
    pub header_timeout: Duration,
    /// Most concurrent connections; more are closed at once.
    pub max_connections: usize,
    /// Most concurrent connections from one address (IPv6: one /64); more
    /// are closed at once. 0: only the total cap.
    pub max_connections_per_address: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (bounded by `drain`).
///
/// Each connection is HTTP/1.1 with `header_read_timeout`, so a slow-loris
/// client is closed after `header_timeout`; the request body and handler are
/// bounded by the router's own request timeout. `axum::serve` has neither a
/// header timeout nor a cap, hence this loop. The client address is available
/// to handlers as `ConnectInfo<SocketAddr>` ([`remote_of`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let slots = ConnectionLimiter::new(limits.max_connections, limits.max_connections_per_address);
    let (closing_tx, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match slots.admit(remote.ip()) {
            Ok(p) => p,
            Err(why) => {
                debug!(%remote, %why, "HTTP connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                app.clone().oneshot(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%remote, error = %e, "HTTP connection ended");
                    }
                }
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    slots.drained(drain).await;
}

/// Remote address of a request served by [`serve`] (loopback when absent,
/// e.g. in router unit tests).
pub fn remote_of(ext: &axum::http::Extensions) -> SocketAddr {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn keys_group_ipv6_by_64_and_map_ipv4() {
        assert_eq!(client_key(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(client_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let l = ConnectionLimiter::new(10, 3);
        let held: Vec<_> = (0..3).map(|_| l.admit(ip("192.0.2.1")).unwrap()).collect();
        assert_eq!(l.admit(ip("192.0.2.1")).unwrap_err(), Refused::AddressFull);
        // Another address is not affected.
        let other = l.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(l.open(), 4);
        drop(held);
        assert_eq!(l.open(), 1);
        assert_eq!(l.addresses(), 1);
        assert!(l.admit(ip("192.0.2.1")).is_ok());
        drop(other);
    }

    #[test]
    fn ipv6_shares_per_64() {
        let l = ConnectionLimiter::new(10, 2);
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.admit(ip("2001:db8:1:2::2")).unwrap();
        assert_eq!(
            l.admit(ip("2001:db8:1:2::3")).unwrap_err(),
            Refused::AddressFull
        );
        assert!(l.admit(ip("2001:db8:1:3::1")).is_ok());
        // IPv4-mapped counts as the IPv4 address.
        let _c = l.admit(ip("192.0.2.9")).unwrap();
        let _d = l.admit(ip("::ffff:192.0.2.9")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.9")).unwrap_err(), Refused::AddressFull);
    }

    #[test]
    fn the_total_cap_holds_across_addresses() {
        let l = ConnectionLimiter::new(4, 0);
        let held: Vec<_> = (1..=4u8)
            .map(|i| l.admit(IpAddr::from([192, 0, 2, i])).unwrap())
            .collect();
        assert_eq!(l.admit(ip("198.51.100.1")).unwrap_err(), Refused::Full);
        // A refusal takes no per-address count.
        assert_eq!(l.addresses(), 4);
        drop(held);
        assert_eq!((l.open(), l.addresses()), (0, 0));
    }

    #[test]
    fn the_map_only_holds_open_addresses() {
        let l = ConnectionLimiter::new(64, 1);
        for i in 0..10_000u32 {
            let p = l.admit(IpAddr::from(i.to_be_bytes())).unwrap();
            drop(p);
        }
        assert_eq!(l.addresses(), 0);
    }
}
