//! The cluster state the control-plane benchmark measures against: registered nodes kept alive,
//! one live stream, and nodes whose resolve of it is already settled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use strata_proto::v1;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tonic::transport::Channel;

use crate::control::Clients;

/// The live stream every resolve asks for.
pub const LIVE_STREAM: &str = "bench-live";
/// The node that publishes it (region `eu`).
const ORIGIN: (&str, &str) = ("bench-origin-eu", "eu");
/// The node that publishes the fresh streams of the claim runs.
pub const CLAIMER: &str = "bench-claimer-eu";
/// Resolving nodes per region.
const NODES_PER_REGION: usize = 4;

/// Registered nodes, their keep-alives, and the settled resolves.
pub struct Fixture {
    /// `(node, region)` of the resolving nodes: in `eu` edges that pull from the main origin,
    /// in `us` the regional origin (the first to resolve) and edges that pull from it.
    pub resolvers: Vec<(String, String)>,
    /// Dropping the set ends the keep-alives.
    keepalives: JoinSet<()>,
    keepalive_failures: Arc<AtomicU64>,
}

impl Fixture {
    /// Registers the nodes, publishes [`LIVE_STREAM`], and resolves it twice from every
    /// resolving node, so that every later resolve is answered from the cache.
    pub async fn setup(ch: Channel) -> Result<Self> {
        let mut clients = Clients::new(ch.clone())?;
        let mut fixture = Self {
            resolvers: Vec::new(),
            keepalives: JoinSet::new(),
            keepalive_failures: Arc::new(AtomicU64::new(0)),
        };
        let resolvers: Vec<(String, String)> = ["eu", "us"]
            .into_iter()
            .flat_map(|region| {
                (0..NODES_PER_REGION).map(move |i| (format!("bench-{region}-{i}"), region.into()))
            })
            .collect();
        let all = [ORIGIN, (CLAIMER, "eu")]
            .into_iter()
            .map(|(n, r)| (n.to_owned(), r.to_owned()))
            .chain(resolvers.iter().cloned());
        for (node, region) in all {
            let reg = clients
                .register(&node, &region)
                .await
                .with_context(|| format!("registering {node}"))?;
            fixture.keep_alive(ch.clone(), node, reg);
        }
        clients
            .publish(LIVE_STREAM, ORIGIN.0)
            .await
            .context("publishing the live stream")?;
        // The first resolve of each node writes (a subscriber record, or the regional claim);
        // the second must be answered from the cache.
        for _ in 0..2 {
            for (node, region) in &resolvers {
                let resp = clients
                    .resolve(LIVE_STREAM, region, node)
                    .await
                    .with_context(|| format!("resolving {LIVE_STREAM} for {node}"))?;
                ensure!(
                    resp.role != v1::Role::Unspecified as i32,
                    "resolve for {node} answered without a role"
                );
            }
        }
        fixture.resolvers = resolvers;
        Ok(fixture)
    }

    /// Renews `node`'s lease every `keepalive_interval_ms` for as long as the fixture lives.
    fn keep_alive(&mut self, ch: Channel, node: String, reg: v1::RegisterResponse) {
        let every = Duration::from_millis(u64::from(reg.keepalive_interval_ms.max(100)));
        let failures = self.keepalive_failures.clone();
        let mut client = v1::node_service_client::NodeServiceClient::new(ch);
        self.keepalives.spawn(async move {
            let mut tick = interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let req = v1::KeepAliveRequest {
                    node_id: node.clone(),
                    lease_id: reg.lease_id,
                    load: None,
                };
                if let Err(e) = client.keep_alive(req).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%node, error = %e, "keep-alive failed");
                }
            }
        });
    }

    /// Renews an etcd lease directly (the raw transactions' lease) every `every`.
    pub fn keep_etcd_lease_alive(
        &mut self,
        mut client: etcd_client::Client,
        lease: i64,
        every: Duration,
    ) {
        let failures = self.keepalive_failures.clone();
        self.keepalives.spawn(async move {
            let mut tick = interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Opening a keep-alive stream sends one renewal and checks its answer.
                let renewed = tokio::time::timeout(every, client.lease_keep_alive(lease)).await;
                if !matches!(renewed, Ok(Ok(_))) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(lease, "etcd lease keep-alive failed");
                }
            }
        });
    }

    /// Keep-alives that failed so far.
    pub fn keepalive_failures(&self) -> u64 {
        self.keepalive_failures.load(Ordering::Relaxed)
    }
}
