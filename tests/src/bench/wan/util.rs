//! Helpers of the WAN bench: node metrics, waiting for a cold tree, addresses on `lo`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_proto::v1;

use super::netns::ip;
use super::{Region, STREAM};

/// Every node's `/metrics`, in region order (empty text for a node that does not answer).
pub(super) async fn node_metrics(regions: &[Region]) -> Vec<String> {
    let mut out = Vec::new();
    for r in regions {
        for n in &r.nodes {
            out.push(n.metrics().await.unwrap_or_default());
        }
    }
    out
}

/// Mean per-hop relay latency by receiving region over the window, from the nodes' histograms.
pub(super) fn hop_latency(
    before: &[String],
    after: &[String],
    regions: &[Region],
) -> Vec<(&'static str, Option<Duration>)> {
    let mut i = 0;
    let mut out = Vec::new();
    for r in regions {
        let (mut sum, mut count) = (0.0, 0.0);
        for _ in &r.nodes {
            let get = |t: &String, name: &str| crate::http::metric_sum(t, name, &[]);
            sum += get(&after[i], "strata_relay_hop_latency_seconds_sum")
                - get(&before[i], "strata_relay_hop_latency_seconds_sum");
            count += get(&after[i], "strata_relay_hop_latency_seconds_count")
                - get(&before[i], "strata_relay_hop_latency_seconds_count");
            i += 1;
        }
        out.push((
            r.name,
            (count > 0.0).then(|| Duration::from_secs_f64((sum / count).max(0.0))),
        ));
    }
    out
}

/// Waits until the stream has no regional origins and no subscribers (players gone, linger
/// over), so the next round starts cold.
pub(super) async fn wait_cold(
    clients: &mut crate::control::Clients,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let tree = clients
            .routing
            .get_stream(v1::GetStreamRequest {
                stream: STREAM.into(),
            })
            .await
            .context("GetStream")?
            .into_inner();
        if tree.regional.is_empty() && tree.subscribers.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the stream's tree did not shrink back to its main origin within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An address on this namespace's `lo`, removed on drop.
pub(super) struct LoAddr(String);

impl LoAddr {
    pub(super) fn add(ip4: Ipv4Addr) -> Result<Self> {
        let cidr = format!("{ip4}/32");
        let _ = ip(&["addr", "del", &cidr, "dev", "lo"]);
        ip(&["addr", "add", &cidr, "dev", "lo"])?;
        Ok(Self(cidr))
    }
}

impl Drop for LoAddr {
    fn drop(&mut self) {
        let _ = ip(&["addr", "del", &self.0, "dev", "lo"]);
    }
}
