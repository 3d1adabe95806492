//! The region graph in the WAN bench: pinned link costs, and the tree the control plane built.

use std::time::Duration;

use anyhow::{Context, Result};
use strata_proto::v1;
use tonic::transport::Channel;

use super::{LINKS, REGIONS, STREAM};

/// Whether regional origins may pull from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphMode {
    /// Every link pinned at the unknown cost (1000 ms): every region pulls from the main origin
    /// (the tree before the region graph).
    Off,
    /// Every link pinned at its emulated one-way delay plus 20 ms per percent of loss (what the
    /// nodes' measurements converge to): the cheapest path wins.
    On,
}

impl GraphMode {
    /// Label for the report.
    pub fn label(self) -> &'static str {
        match self {
            GraphMode::Off => "graph off (costs unknown: every region pulls from eu)",
            GraphMode::On => "graph on (costs = one-way delay + 20 ms per % loss)",
        }
    }
}

/// The pinned one-way cost of link `(rtt, loss)` in `mode`.
fn cost_ms(mode: GraphMode, rtt: u64, loss: f64) -> i64 {
    match mode {
        GraphMode::Off => 1000,
        GraphMode::On => (rtt / 2) as i64 + (loss * 100.0 * 20.0).round() as i64,
    }
}

/// Pins both directions of every emulated link.
pub async fn pin_costs(channel: Channel, mode: GraphMode) -> Result<()> {
    let mut graph = v1::graph_service_client::GraphServiceClient::new(channel);
    for &(a, b, rtt, loss) in &LINKS {
        for (from, to) in [(a, b), (b, a)] {
            let req = v1::SetLinkCostRequest {
                from_region: REGIONS[from].into(),
                to_region: REGIONS[to].into(),
                cost_ms: cost_ms(mode, rtt, loss),
                unpin: false,
            };
            graph.set_link_cost(req).await.context("SetLinkCost")?;
        }
    }
    Ok(())
}

/// Where one region's regional origin pulls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The region.
    pub region: &'static str,
    /// The region it pulls from (the main origin's region when it pulls from the main origin).
    pub from: String,
    /// Hops from the main origin.
    pub depth: u32,
    /// The link's cost as the control plane knows it.
    pub link_cost_ms: u32,
}

/// Each remote region's parent, from `GetStream`.
pub async fn parents(channel: Channel) -> Result<Vec<Parent>> {
    let mut routing = v1::routing_service_client::RoutingServiceClient::new(channel);
    let req = v1::GetStreamRequest {
        stream: STREAM.into(),
    };
    let tree = routing
        .get_stream(req)
        .await
        .context("GetStream")?
        .into_inner();
    let main = tree.main.map(|m| m.region).unwrap_or_default();
    let mut out = Vec::new();
    for region in REGIONS.iter().skip(1) {
        if let Some(r) = tree.regional.iter().find(|r| r.region == *region) {
            out.push(Parent {
                region,
                from: if r.upstream_region.is_empty() {
                    main.clone()
                } else {
                    r.upstream_region.clone()
                },
                depth: r.depth,
                link_cost_ms: r.link_cost_ms,
            });
        }
    }
    Ok(out)
}

/// One-way emulated delay of the path the tree takes from the origin's region to `region`.
pub fn path_one_way(parents: &[Parent], region: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut at = region.to_owned();
    for _ in 0..REGIONS.len() {
        if at == REGIONS[0] {
            break;
        }
        let from = parents
            .iter()
            .find(|p| p.region == at)
            .map_or(REGIONS[0].to_owned(), |p| p.from.clone());
        total += link_one_way(&from, &at);
        at = from;
    }
    total
}

fn link_one_way(a: &str, b: &str) -> Duration {
    let idx = |r: &str| REGIONS.iter().position(|x| *x == r);
    let (Some(a), Some(b)) = (idx(a), idx(b)) else {
        return Duration::ZERO;
    };
    LINKS
        .iter()
        .find(|(x, y, ..)| (*x == a && *y == b) || (*x == b && *y == a))
        .map_or(Duration::ZERO, |(_, _, rtt, _)| {
            Duration::from_millis(rtt / 2)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(region: &'static str, from: &str) -> Parent {
        Parent {
            region,
            from: from.into(),
            depth: 0,
            link_cost_ms: 0,
        }
    }

    #[test]
    fn path_delay_follows_the_tree() {
        let chain = [p("use", "eu"), p("usw", "use"), p("ap", "usw")];
        assert_eq!(path_one_way(&chain, "usw"), Duration::from_millis(55));
        assert_eq!(path_one_way(&chain, "ap"), Duration::from_millis(85));
        let star = [p("use", "eu"), p("usw", "eu"), p("ap", "eu")];
        assert_eq!(path_one_way(&star, "usw"), Duration::from_millis(75));
        assert_eq!(path_one_way(&star, "eu"), Duration::ZERO);
    }

    #[test]
    fn costs_prefer_the_chain_only_when_on() {
        assert_eq!(cost_ms(GraphMode::On, 150, 0.005), 85);
        assert_eq!(cost_ms(GraphMode::On, 80, 0.0), 40);
        assert_eq!(cost_ms(GraphMode::Off, 80, 0.0), 1000);
    }
}
