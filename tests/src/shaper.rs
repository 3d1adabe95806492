//! A rate-limited UDP path for one WebRTC player: a user-space proxy whose node-to-player
//! direction passes a token bucket (a policer: what exceeds the rate and burst is dropped,
//! as a congested bottleneck without much buffer does). The limit can be changed or lifted
//! while media flows. The player is pointed at the proxy by rewriting the candidates of the
//! node's answer ([`ShapedLink::rewrite_answer`]); the node (ICE-lite) answers the proxy's
//! address as the player's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A token bucket in bytes: `rate` bytes/s refill, at most `burst` bytes saved. Sans-IO.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_bytes: u64, burst_bytes: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate_bytes as f64,
            burst: burst_bytes as f64,
            tokens: burst_bytes as f64,
            last: now,
        }
    }

    /// True (and the tokens spent) when `len` bytes may pass at `now`.
    pub fn admit(&mut self, now: Instant, len: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= len as f64 {
            self.tokens -= len as f64;
            true
        } else {
            false
        }
    }
}

/// Counters of a shaped link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Node → player bytes that passed.
    pub passed_bytes: AtomicU64,
    /// Node → player datagrams dropped by the limit.
    pub dropped: AtomicU64,
    /// Node → player RTP datagrams with the padding bit set (SRTP leaves the RTP header in
    /// the clear), passed or not: a bandwidth probe's padding on the wire.
    pub padding: AtomicU64,
}

/// A running proxy between one player and a node's RTC port.
pub struct ShapedLink {
    front: SocketAddr,
    /// The limit in bit/s; 0 = none.
    limit: Arc<AtomicU64>,
    stats: Arc<LinkStats>,
    task: JoinHandle<()>,
}

/// Burst of the bucket: 50 ms at the rate, and at least two full-size datagrams.
fn burst_for(bps: u64) -> u64 {
    (bps / 8 / 20).max(2_400)
}

impl ShapedLink {
    /// A proxy on 127.0.0.1 forwarding to `node` (the RTC address of the node's answer),
    /// with the node-to-player direction limited to `bps` (0: unlimited).
    pub async fn start(node: SocketAddr, bps: u64) -> Result<ShapedLink> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(node).await?;
        let front_addr = front.local_addr()?;
        let limit = Arc::new(AtomicU64::new(bps));
        let stats = Arc::new(LinkStats::default());
        let task = tokio::spawn(run(front, back, Arc::clone(&limit), Arc::clone(&stats)));
        Ok(ShapedLink {
            front: front_addr,
            limit,
            stats,
            task,
        })
    }

    /// The address players send to (the proxy's front).
    pub fn front(&self) -> SocketAddr {
        self.front
    }

    /// Changes the limit (bit/s; 0 lifts it).
    pub fn set_limit(&self, bps: u64) {
        self.limit.store(bps, Ordering::Relaxed);
    }

    /// Counters so far.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The node's answer with every candidate replaced by one on the proxy.
    pub fn rewrite_answer(&self, answer: &str) -> String {
        rewrite_answer(answer, self.front)
    }
}

/// `answer` with the candidates of each media section replaced by one on `to`.
pub fn rewrite_answer(answer: &str, to: SocketAddr) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut done_in_section = false;
    for line in answer.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("m=") {
            done_in_section = false;
        }
        if line.starts_with("a=candidate:") {
            if !done_in_section {
                done_in_section = true;
                out.push_str(&format!(
                    "a=candidate:1 1 udp 2130706431 {} {} typ host\r\n",
                    to.ip(),
                    to.port()
                ));
            }
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// The RTC address of a node's answer (its first host candidate).
pub fn answer_address(answer: &str) -> Result<SocketAddr> {
    let line = answer
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .context("the answer has no candidate")?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let (ip, port) = (f.get(4).context("candidate ip")?, f.get(5).context("port")?);
    Ok(format!("{ip}:{port}").parse()?)
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(front: UdpSocket, back: UdpSocket, limit: Arc<AtomicU64>, stats: Arc<LinkStats>) {
    let mut player: Option<SocketAddr> = None;
    let mut bucket: Option<(u64, TokenBucket)> = None;
    let (mut up, mut down) = (vec![0u8; 2048], vec![0u8; 2048]);
    loop {
        tokio::select! {
            r = front.recv_from(&mut up) => {
                let Ok((n, from)) = r else { return };
                player = Some(from);
                let _ = back.send(&up[..n]).await;
            }
            r = back.recv(&mut down) => {
                let Ok(n) = r else { return };
                let Some(to) = player else { continue };
                if is_padded_rtp(&down[..n]) {
                    stats.padding.fetch_add(1, Ordering::Relaxed);
                }
                let bps = limit.load(Ordering::Relaxed);
                let now = Instant::now();
                let pass = if bps == 0 {
                    true
                } else {
                    let b = match &mut bucket {
                        Some((rate, b)) if *rate == bps => b,
                        _ => &mut bucket.insert((bps, TokenBucket::new(bps / 8, burst_for(bps), now))).1,
                    };
                    b.admit(now, n)
                };
                if pass {
                    stats.passed_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    let _ = front.send_to(&down[..n], to).await;
                } else {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// An RTP packet (not RTCP: RFC 5761 packet types 192–223) with the padding bit.
fn is_padded_rtp(d: &[u8]) -> bool {
    matches!(d, [b0, b1, ..] if b0 & 0xc0 == 0x80 && !(192..=223).contains(b1) && b0 & 0x20 != 0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_bucket_passes_the_rate_and_the_burst() {
        let t0 = Instant::now();
        // 75,000 bytes/s = 600 kbit/s, 3,750 bytes of burst.
        let mut b = TokenBucket::new(75_000, 3_750, t0);
        let mut passed = 0;
        // 1,200-byte datagrams at 1.5 Mbit/s for 2 s: one every 6.4 ms.
        for i in 0..312u32 {
            let now = t0 + Duration::from_micros(6_400 * u64::from(i));
            if b.admit(now, 1_200) {
                passed += 1_200;
            }
        }
        // The span (311 intervals) at 75 kB/s plus the burst, give or take one datagram.
        let expected = 311.0 * 0.0064 * 75_000.0 + 3_750.0;
        assert!(
            (f64::from(passed) - expected).abs() <= 1_200.0,
            "{passed} vs {expected}"
        );
        // Idle time refills no more than the burst.
        let later = t0 + Duration::from_secs(10);
        assert!(b.admit(later, 3_700));
        assert!(!b.admit(later, 100));
    }

    #[test]
    fn answers_are_pointed_at_the_proxy() {
        let answer = "v=0\r\nm=audio 9 X 0\r\na=candidate:1 1 udp 5 10.0.0.1 4000 typ host\r\n\
                      a=candidate:2 1 udp 4 10.0.0.2 4000 typ host\r\na=end-of-candidates\r\n\
                      m=video 9 X 96\r\na=candidate:1 1 udp 5 10.0.0.1 4000 typ host\r\n";
        assert_eq!(
            answer_address(answer).ok(),
            "10.0.0.1:4000".parse::<SocketAddr>().ok()
        );
        let proxy: SocketAddr = "127.0.0.1:5555"
            .parse()
            .unwrap_or(SocketAddr::from(([0; 4], 0)));
        let out = rewrite_answer(answer, proxy);
        assert_eq!(out.matches("127.0.0.1 5555").count(), 2, "{out}");
        assert!(!out.contains("10.0.0."), "{out}");
    }
}
