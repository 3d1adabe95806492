//! A per-client rate limit on session creation. The HTTP server loop with its
//! connection cap, per-address share and header read timeout is shared with
//! the control plane and lives in `strata_common::limits`.
//!
//! [`RateLimiter`] is sans-IO: time is an argument, so it is unit-tested
//! without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use strata_common::limits::{HttpLimits, client_key, remote_of, serve};

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

/// The node's [`RateLimiter`] of WHIP/WHEP POSTs and ingest connections,
/// shared by the HTTP, RTMP and SRT servers.
#[derive(Debug)]
pub struct ClientLimiter(std::sync::Mutex<RateLimiter>);

impl ClientLimiter {
    /// A shared limiter.
    pub fn new(limiter: RateLimiter) -> Self {
        ClientLimiter(std::sync::Mutex::new(limiter))
    }

    /// Takes one request of a client address from the rate limit now;
    /// `Err(wait)` when over it.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        // The bucket map stays whole whatever panicked while it was held.
        let mut limiter = self.0.lock().unwrap_or_else(|p| p.into_inner());
        limiter.check(ip, Instant::now())
    }
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
    fn zero_rate_disables() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(0.0, 1, 1);
        for _ in 0..100 {
            assert!(l.check(ip("192.0.2.1"), t0).is_ok());
        }
        assert!(l.is_empty());
    }
}
