//! Limits that keep hostile or broken clients from exhausting a node:
//! a per-client rate limit on session creation, and the HTTP server loop with
//! a connection cap, a per-client share of it and a header read timeout
//! (slow-loris clients).
//!
//! [`RateLimiter`] is sans-IO: time is an argument, so it is unit-tested
//! without sleeping. [`ConnectionShares`] is plain bookkeeping. [`serve`] is
//! the thin shell around hyper.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

/// A token bucket per client address, in a bounded map.
///
/// IPv4 clients are keyed by address, IPv6 clients by their /64 (one host
/// usually owns a whole /64, so keying by address would let it mint buckets).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_clients: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The key a client address is limited under.
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

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`, remembering at
    /// most `max_clients` clients. A `rate` of 0 disables the limit.
    pub fn new(rate: f64, burst: u32, max_clients: usize) -> Self {
        Self {
            rate: if rate.is_finite() { rate.max(0.0) } else { 0.0 },
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Clients currently remembered.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + dt * self.rate).min(self.burst)
    }

    /// Takes one request of `ip` at `now`: `Err(wait)` when over the limit,
    /// with how long until the next request would pass.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let key = client_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_clients {
            self.evict(now);
        }
        let fresh = Bucket {
            tokens: self.burst,
            at: now,
        };
        let b = self.buckets.get(&key).copied().unwrap_or(fresh);
        let tokens = self.refilled(b, now);
        if tokens >= 1.0 {
            self.buckets.insert(
                key,
                Bucket {
                    tokens: tokens - 1.0,
                    at: now,
                },
            );
            Ok(())
        } else {
            self.buckets.insert(key, Bucket { tokens, at: now });
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }

    /// Forgets clients whose bucket is full again (they are as good as new);
    /// if every client is active, forgets the least recently seen eighth.
    fn evict(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let dt = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + dt * rate < burst
        });
        if self.buckets.len() < self.max_clients {
            return;
        }
        let mut ages: Vec<(Instant, IpAddr)> =
            self.buckets.iter().map(|(k, b)| (b.at, *k)).collect();
        let n = (self.max_clients / 8).max(1).min(ages.len());
        ages.select_nth_unstable_by_key(n - 1, |(at, _)| *at);
        for (_, k) in &ages[..n] {
            self.buckets.remove(k);
        }
    }
}

/// Open connections per client (keyed by [`client_key`]: IPv6 per /64), so
/// that one client cannot hold every connection slot of the server.
///
/// Only clients holding a connection are remembered, so the map is bounded
/// by the server's connection cap.
#[derive(Debug)]
pub struct ConnectionShares {
    per_client: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client's share; gives it back on drop.
#[derive(Debug)]
pub struct ShareGuard {
    shares: Arc<ConnectionShares>,
    key: IpAddr,
}

impl ConnectionShares {
    /// At most `per_client` connections per client; 0 means no per-client
    /// share (only the server's cap applies).
    pub fn new(per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            per_client,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection of `ip`, or `None` when its client already
    /// holds its share.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<ShareGuard> {
        let key = client_key(ip);
        if self.per_client > 0 {
            // A poisoned lock means a panic mid-update of a counter map: the
            // counts are still usable.
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let n = held.entry(key).or_insert(0);
            if *n >= self.per_client {
                return None;
            }
            *n += 1;
        }
        Some(ShareGuard {
            shares: self.clone(),
            key,
        })
    }

    /// Connections `ip`'s client holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&client_key(ip)).copied().unwrap_or(0)
    }

    /// Clients holding at least one connection.
    pub fn clients(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        if self.shares.per_client == 0 {
            return;
        }
        let mut held = self.shares.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A client must send a request's complete headers within this time
    /// (also bounds an idle keep-alive connection).
    pub header_timeout: Duration,
    /// Most concurrent connections; more are closed at once.
    pub max_connections: usize,
    /// Most concurrent connections of one client address (IPv6: one /64);
    /// more are closed at once. 0: only `max_connections` applies.
    pub max_connections_per_client: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (bounded by `drain`).
///
/// Each connection is HTTP/1.1 with `header_read_timeout`, so a slow-loris
/// client is closed after `header_timeout`; the request body and handler
/// are bounded by the router's request timeout. The client address is
/// available to handlers as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shares = ConnectionShares::new(limits.max_connections_per_client);
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
        // The client's share first: a client over its share must not take
        // (even briefly) a slot another client could have had.
        let Some(share) = shares.try_take(remote.ip()) else {
            debug!(%remote, "HTTP connection refused: the client holds its share of connections");
            drop(stream);
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%remote, "HTTP connection refused: at the connection limit");
            drop(stream);
            continue;
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
            drop(share);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain, slots.acquire_many(all)).await;
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
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(2.0, 3, 100);
        for _ in 0..3 {
            assert!(l.check(ip("192.0.2.1"), t0).is_ok());
        }
        let wait = l.check(ip("192.0.2.1"), t0).expect_err("over");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another client is not affected.
        assert!(l.check(ip("192.0.2.2"), t0).is_ok());
        // Half a second later one more token.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check(ip("192.0.2.1"), t1).is_ok());
        assert!(l.check(ip("192.0.2.1"), t1).is_err());
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1.0, 1, 100);
        assert!(l.check(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(l.check(ip("2001:db8:1:2::ffff"), t0).is_err());
        assert!(l.check(ip("2001:db8:1:3::1"), t0).is_ok());
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn map_stays_bounded() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1.0, 2, 64);
        for i in 0..10_000u32 {
            let a = IpAddr::from(i.to_be_bytes());
            let _ = l.check(a, t0 + Duration::from_micros(u64::from(i)));
            assert!(l.len() <= 64);
        }
        // An attacker churning addresses does not evict an idle client's
        // state into something worse than a fresh bucket.
        assert!(l.check(ip("198.51.100.1"), t0).is_ok());
    }

    #[test]
    fn connection_shares_are_per_client() {
        let shares = ConnectionShares::new(2);
        let a1 = shares.try_take(ip("192.0.2.1")).expect("first");
        let _a2 = shares.try_take(ip("192.0.2.1")).expect("second");
        assert!(shares.try_take(ip("192.0.2.1")).is_none(), "over the share");
        // IPv4-mapped is the same client.
        assert!(shares.try_take(ip("::ffff:192.0.2.1")).is_none());
        // Another client is not affected.
        let _b = shares.try_take(ip("192.0.2.2")).expect("other client");
        // A closed connection gives its place back.
        drop(a1);
        assert_eq!(shares.held_by(ip("192.0.2.1")), 1);
        let _a3 = shares.try_take(ip("192.0.2.1")).expect("after a close");
        // IPv6 shares are per /64.
        let _c1 = shares.try_take(ip("2001:db8:1:2::1")).expect("v6");
        let _c2 = shares
            .try_take(ip("2001:db8:1:2::2"))
            .expect("v6, same /64");
        assert!(shares.try_take(ip("2001:db8:1:2::ffff")).is_none());
        assert!(shares.try_take(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn connection_shares_forget_clients_without_connections() {
        let shares = ConnectionShares::new(1);
        for i in 0..1000u32 {
            let g = shares
                .try_take(IpAddr::from(i.to_be_bytes()))
                .expect("take");
            drop(g);
        }
        assert_eq!(shares.clients(), 0);
        let unlimited = ConnectionShares::new(0);
        let held: Vec<_> = (0..100)
            .map(|_| unlimited.try_take(ip("192.0.2.1")).expect("no share"))
            .collect();
        assert_eq!(held.len(), 100);
        assert_eq!(unlimited.clients(), 0);
    }

    /// Reads until the server closes the connection, or gives up after `within`.
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(within, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(ip(source), 0))?;
        sock.connect(to).await
    }

    async fn get_healthz(from: &str, to: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = connect_from(from, to).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut got = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut got)).await;
        got
    }

    /// One address holding its share cannot take more connections; another
    /// address is still served. (127.0.0.2 is loopback too on Linux.)
    #[tokio::test]
    async fn one_address_cannot_hold_every_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let limits = HttpLimits {
            // Long enough that idle connections stay open for the whole test.
            header_timeout: Duration::from_secs(60),
            max_connections: 4,
            max_connections_per_client: 2,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app,
            limits,
            async move {
                let _ = stop_rx.await;
            },
            Duration::from_secs(1),
        ));
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(connect_from("127.0.0.1", addr).await.expect("connect"));
        }
        // The third connection of 127.0.0.1 is closed at once...
        let mut third = connect_from("127.0.0.1", addr).await.expect("connect");
        assert!(
            closed_within(&mut third, Duration::from_secs(10)).await,
            "a third connection of one address stayed open"
        );
        // ...while its first two stay open (the server read nothing yet)...
        for s in &mut idle {
            assert!(!closed_within(s, Duration::from_millis(50)).await);
        }
        // ...and another address is served.
        let r = get_healthz("127.0.0.2", addr).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
        // Once 127.0.0.1 closes a connection, it gets one again.
        drop(idle.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = get_healthz("127.0.0.1", addr).await;
            if r.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not served again: {r:?}"
            );
            // The server notices the close when it reads EOF: poll, bounded.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(());
        let _ = server.await;
    }

    #[test]
    fn zero_rate_disables() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(0.0, 1, 1);
        for _ in 0..100 {
            assert!(l.check(ip("192.0.2.1"), t0).is_ok());
        }
        assert!(l.is_empty());
    }
}
