//! Reports what the node's relay connections measure (RTT, loss) per peer
//! region to the control plane, for the region graph's link costs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1;
use strata_relay::{LinkSample, RelayStats};
use tokio::sync::watch;
use tracing::debug;

use crate::control::ControlClient;
use crate::peers::PeerView;

/// How often the node reports (only while it has links to other regions).
const EVERY: Duration = Duration::from_secs(5);

/// One report entry per peer region other than `own`: the best smoothed RTT
/// of its connections, and the share of this node's packets on them that
/// were lost. Peers of unknown region are left out.
pub fn summarize(
    samples: &[LinkSample],
    own: &str,
    region_of: impl Fn(&str) -> Option<String>,
) -> Vec<v1::LinkReport> {
    // region → (best rtt, sent, lost)
    let mut by_region: BTreeMap<String, (Duration, u64, u64)> = BTreeMap::new();
    for s in samples {
        let Some(region) = region_of(&s.peer).filter(|r| r != own) else {
            continue;
        };
        let e = by_region.entry(region).or_insert((Duration::MAX, 0, 0));
        e.0 = e.0.min(s.rtt);
        e.1 = e.1.saturating_add(s.sent_packets);
        e.2 = e.2.saturating_add(s.lost_packets);
    }
    by_region
        .into_iter()
        .map(|(region, (rtt, sent, lost))| v1::LinkReport {
            region,
            rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
            loss: if sent == 0 {
                0.0
            } else {
                (lost as f64 / sent as f64) as f32
            },
        })
        .collect()
}

/// What the link reports are made of.
pub struct Reporter {
    /// This node's id.
    pub node: String,
    /// This node's region (its own links are not reported).
    pub region: String,
    /// Where the reports go.
    pub control: ControlClient,
    /// The relay's per-connection samples.
    pub stats: Arc<RelayStats>,
    /// The peers' regions.
    pub peers: Arc<PeerView>,
}

/// Every [`EVERY`], reports the links until `stop`.
pub async fn report_links(r: Reporter, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        let samples = r.stats.links.samples();
        let links = summarize(&samples, &r.region, |peer| {
            Some(r.peers.region(peer)).filter(|r| r != "unknown")
        });
        if links.is_empty() {
            continue;
        }
        if let Err(e) = r.control.report_links(&r.node, links).await {
            debug!(error = %e, "link report failed; the next one follows");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(peer: &str, rtt_ms: u64, sent: u64, lost: u64) -> LinkSample {
        LinkSample {
            peer: peer.into(),
            rtt: Duration::from_millis(rtt_ms),
            sent_packets: sent,
            lost_packets: lost,
        }
    }

    #[test]
    fn one_entry_per_other_region_best_rtt_pooled_loss() {
        let samples = [
            sample("use-1", 80, 1000, 10),
            sample("use-2", 70, 1000, 0),
            sample("eu-2", 1, 500, 0),
            sample("ghost", 5, 10, 10),
            sample("usw-1", 150, 0, 0),
        ];
        let region = |p: &str| match p {
            "ghost" => None,
            p => Some(p.split('-').next().unwrap_or("").to_owned()),
        };
        let r = summarize(&samples, "eu", region);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!((r[0].region.as_str(), r[0].rtt_us), ("use", 70_000));
        assert!((r[0].loss - 0.005).abs() < 1e-6);
        assert_eq!(
            (r[1].region.as_str(), r[1].rtt_us, r[1].loss),
            ("usw", 150_000, 0.0)
        );
    }
}
