//! Simulated nodes: no media, only what a node says to the control plane. Each registers, keeps
//! its lease alive with a load report every keep-alive interval (as `strata-node` does), and
//! answers for the streams the driver gives it: publishing, resolving, watching, releasing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use strata_proto::v1;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::hist::Hist;

/// Bits per second one player receives (a 720p stream), for the load reports.
const PLAYER_BPS: f64 = 2_500_000.0;
/// Registers retried after UNAVAILABLE or a timeout, at most.
const REGISTER_ATTEMPTS: u32 = 5;
/// Capacity every simulated node registers with.
pub const CAPACITY: u32 = 500;

/// What every simulated node and the driver count.
#[derive(Debug, Default)]
pub struct Counters {
    /// Register calls.
    pub register: Hist,
    /// Keep-alive calls (with a load report).
    pub keepalive: Hist,
    /// Resolves answered from a settled state (a puller asking again).
    pub resolve_settled: Hist,
    /// Resolves of a stream the node did not pull yet (subscriber write or regional claim).
    pub resolve_new: Hist,
    /// Publish calls (main-origin claims).
    pub claim: Hist,
    /// From an unpublish being sent to a puller's topology watch saying the stream ended.
    pub watch_delay: Hist,
    /// Topology messages received by every watch together.
    pub watch_events: AtomicU64,
    /// Keep-alives answered NOT_FOUND for a node that was never told to die: a lost lease.
    pub leases_lost: AtomicU64,
    /// Keep-alives that failed otherwise (timeouts, UNAVAILABLE).
    pub keepalive_errors: AtomicU64,
    /// Registers retried after UNAVAILABLE.
    pub register_retries: AtomicU64,
    /// Claims (publishes, first resolves) refused RESOURCE_EXHAUSTED and retried.
    pub refused: AtomicU64,
    /// Topology watches open now (pullers' and publishers').
    pub watches_open: AtomicU64,
    /// Any other failed call.
    pub errors: AtomicU64,
    /// The first failure, for the report.
    pub first_error: std::sync::Mutex<Option<String>>,
}

impl Counters {
    /// Counts a failed call.
    pub fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// Where a simulated node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Life {
    /// Registered and serving.
    Alive = 0,
    /// Drained by an operator: keeps its lease, takes no new streams.
    Draining = 1,
    /// Killed: sends nothing more, its lease expires.
    Dead = 2,
    /// A spare that has not joined yet.
    Spare = 3,
}

/// One simulated node.
pub struct SimNode {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Its connection to one control-plane replica.
    pub channel: Channel,
    lease: AtomicI64,
    /// Players it serves.
    pub players: AtomicU32,
    /// Streams it carries (published or pulled).
    pub streams: AtomicU32,
    /// Streams it publishes.
    pub publishers: AtomicU32,
    life: AtomicU8,
}

impl SimNode {
    /// A node that talks to the replica at `url` (connected on first use).
    pub fn new(id: String, region: String, url: &str, life: Life) -> Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            id,
            region,
            channel,
            lease: AtomicI64::new(0),
            players: AtomicU32::new(0),
            streams: AtomicU32::new(0),
            publishers: AtomicU32::new(0),
            life: AtomicU8::new(life as u8),
        })
    }

    /// Its state.
    pub fn life(&self) -> Life {
        match self.life.load(Ordering::Relaxed) {
            0 => Life::Alive,
            1 => Life::Draining,
            2 => Life::Dead,
            _ => Life::Spare,
        }
    }

    /// Marks it draining or dead.
    pub fn set_life(&self, life: Life) {
        self.life.store(life as u8, Ordering::Relaxed);
    }

    /// The node client on its channel.
    pub fn nodes(&self) -> v1::node_service_client::NodeServiceClient<Channel> {
        v1::node_service_client::NodeServiceClient::new(self.channel.clone())
    }

    /// The routing client on its channel.
    pub fn routing(&self) -> v1::routing_service_client::RoutingServiceClient<Channel> {
        v1::routing_service_client::RoutingServiceClient::new(self.channel.clone())
    }

    /// Registers; answers the keep-alive interval.
    pub async fn register(&self, counters: &Counters) -> Result<Duration> {
        let info = v1::NodeInfo {
            id: self.id.clone(),
            region: self.region.clone(),
            relay_addr: "127.0.0.1:4433".into(),
            http_url: format!("http://127.0.0.1:8080/{}", self.id),
            capacity: CAPACITY,
            version: "strata-bench".into(),
        };
        // A real node retries a register the control plane could not serve (etcd slow).
        let mut attempt = 0;
        let resp = loop {
            let t0 = Instant::now();
            let req = v1::RegisterRequest {
                node: Some(info.clone()),
            };
            match self.nodes().register(req).await {
                Ok(r) => {
                    counters.register.record(t0.elapsed());
                    break r.into_inner();
                }
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable
                            | Code::DeadlineExceeded
                            | Code::Cancelled
                            | Code::Unknown
                    ) && attempt < REGISTER_ATTEMPTS =>
                {
                    attempt += 1;
                    counters.register_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                Err(s) => {
                    return Err(s).with_context(|| format!("registering {}", self.id));
                }
            }
        };
        self.lease.store(resp.lease_id, Ordering::Relaxed);
        Ok(Duration::from_millis(u64::from(
            resp.keepalive_interval_ms.max(100),
        )))
    }

    /// The load report a real node would send now: counts as they are, egress and CPU with
    /// the few per cent of noise that measured rates always have.
    fn load(&self, rng: &mut Rng) -> v1::Load {
        let players = self.players.load(Ordering::Relaxed);
        let streams = self.streams.load(Ordering::Relaxed);
        let noise = 1.0 + (rng.unit() - 0.5) * 0.06;
        let egress = (f64::from(players) + f64::from(streams)) * PLAYER_BPS * noise;
        let cpu = (0.02 + f64::from(players) * 0.002 + f64::from(streams) * 0.001) * noise;
        v1::Load {
            streams,
            players,
            publishers: self.publishers.load(Ordering::Relaxed),
            egress_bps: egress as u64,
            cpu: cpu as f32,
            stream_players: Vec::new(),
        }
    }

    /// Keeps the lease alive every `every` until the node dies; registers again after a lost
    /// lease, as `strata-node` does.
    pub fn keep_alive(self: Arc<Self>, every: Duration, counters: Arc<Counters>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut rng = Rng::new(self.id.bytes().map(u64::from).sum::<u64>() + 1);
            // Spread the nodes over the interval, as nodes started at different times are.
            let offset = every.mul_f64(rng.unit());
            let mut tick = tokio::time::interval_at(Instant::now() + offset, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if matches!(self.life(), Life::Dead | Life::Spare) {
                    return;
                }
                let req = v1::KeepAliveRequest {
                    node_id: self.id.clone(),
                    lease_id: self.lease.load(Ordering::Relaxed),
                    load: Some(self.load(&mut rng)),
                };
                let t0 = Instant::now();
                match self.nodes().keep_alive(req).await {
                    Ok(_) => counters.keepalive.record(t0.elapsed()),
                    Err(s) if s.code() == Code::NotFound => {
                        counters.leases_lost.fetch_add(1, Ordering::Relaxed);
                        counters.error("keep-alive", &s);
                        if let Err(e) = self.register(&counters).await {
                            counters.error("registering again", &e);
                        }
                    }
                    Err(s) => {
                        counters.keepalive_errors.fetch_add(1, Ordering::Relaxed);
                        counters.error("keep-alive", &s);
                    }
                }
            }
        })
    }
}

/// A small deterministic random generator (xorshift64*): the bench needs spread, not quality,
/// and the same seed gives the same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; 0 is replaced by 1.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
            let u = a.unit();
            assert_eq!(u, b.unit());
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(Rng::new(0).below(0), 0);
    }
}
