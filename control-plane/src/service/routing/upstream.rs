//! The region graph in routing: which upstream a regional origin pulls from
//! (the main origin or another region's regional origin), chosen when the
//! region is claimed and again when that upstream stops holding.

use std::collections::BTreeMap;

use strata_proto::v1;

use tracing::info;

use super::{RoutingApi, upstream_main, upstream_regional};
use crate::cache::{StreamState, Versioned, View};
use crate::error::Result;
use crate::graph::{Choice, Costs, Graph};
use crate::keys::{MainRecord, RegionalRecord};
use crate::service::State;
use crate::service::convert;

/// An upstream choice and where to subscribe for it.
pub(super) struct Picked {
    /// The choice (its chain is the claim's guard).
    pub choice: Choice,
    /// The upstream it names: the parent region's regional origin, or the
    /// main origin.
    pub upstream: v1::Upstream,
}

/// Runs `f` on the stream's region graph as `view` and the replica's costs
/// show it, leaving out `avoid`'s records as upstreams.
pub(super) fn with_graph<R>(
    s: &State,
    view: &View,
    stream: &str,
    main: &Versioned<MainRecord>,
    avoid: Option<&str>,
    f: impl FnOnce(&Graph<'_>, &BTreeMap<String, crate::graph::choice::Record>) -> R,
) -> R {
    let empty = BTreeMap::new();
    let regions = view.streams.get(stream).map_or(&empty, |st| &st.regions);
    let measured = s.measured().snapshot();
    let costs = Costs {
        pins: &view.link_pins,
        configured: &s.config().link_costs,
        measured: &measured,
    };
    let cost = |a: &str, b: &str| costs.link(a, b).0;
    // Registered, not draining, and not the node the caller just reported
    // unreachable (its record may stand until its lease ends).
    let usable = |n: &str| avoid != Some(n) && view.nodes.get(n).is_some_and(|n| !n.value.draining);
    let g = Graph {
        main_region: &main.value.region,
        main_epoch: main.epoch(),
        regions,
        usable: &usable,
        cost: &cost,
        max_hops: s.config().max_region_hops,
    };
    f(&g, regions)
}

/// The best upstream for `region` now, other than `avoid`.
pub(super) fn choose(
    s: &State,
    view: &View,
    stream: &str,
    main: &Versioned<MainRecord>,
    region: &str,
    avoid: Option<&str>,
) -> Picked {
    with_graph(s, view, stream, main, avoid, |g, regions| {
        let choice = g.choose(region);
        let upstream = choice
            .parent
            .as_ref()
            .and_then(|p| regions.get(p).map(|r| upstream_regional(p, r)))
            .unwrap_or_else(|| upstream_main(main));
        Picked { choice, upstream }
    })
}

/// The upstream a regional origin holding `record` pulls from, while that
/// upstream holds: the main origin, or the regional origin of the region it
/// names, still held by the node it names, usable, and not reported
/// unreachable by the asking node (a report about it names its node; the
/// epoch is not compared, as the parent's record may have been rewritten in
/// place since the subscription). `None`: the region must re-parent.
pub(super) fn held_upstream(
    s: &State,
    view: &View,
    stream: &str,
    main: &Versioned<MainRecord>,
    record: &RegionalRecord,
    unreachable: Option<(&str, i64)>,
) -> Option<v1::Upstream> {
    with_graph(s, view, stream, main, None, |g, regions| {
        if !g.upstream_holds(record) {
            return None;
        }
        let Some(p) = &record.upstream_region else {
            return Some(upstream_main(main));
        };
        if unreachable.is_some_and(|(n, _)| n == record.upstream_node_id) {
            return None;
        }
        regions.get(p).map(|r| upstream_regional(p, r))
    })
}

/// The region-graph fields of a regional origin for operators: its link's
/// cost and source, and its path's cost (0 when its upstream no longer
/// holds).
pub(crate) fn annotate(
    s: &State,
    view: &View,
    stream: &str,
    main: &Versioned<MainRecord>,
    region: &str,
    out: &mut v1::RegionalOrigin,
) {
    let measured = s.measured().snapshot();
    let costs = Costs {
        pins: &view.link_pins,
        configured: &s.config().link_costs,
        measured: &measured,
    };
    let from = if out.upstream_region.is_empty() {
        main.value.region.as_str()
    } else {
        out.upstream_region.as_str()
    };
    let (cost, source) = costs.link(from, region);
    out.link_cost_ms = cost;
    out.link_cost_source = source.name().into();
    out.path_cost_ms =
        with_graph(s, view, stream, main, None, |g, _| g.path_cost(region)).unwrap_or(0);
}

/// A stream's tree for operators, with the region graph's costs.
pub(crate) fn tree(
    s: &State,
    view: &View,
    stream: &str,
    st: &StreamState,
) -> Option<v1::StreamTree> {
    let mut tree = convert::tree_with_players(view, stream, st)?;
    let main = st.main.as_deref()?;
    for r in &mut tree.regional {
        let region = r.region.clone();
        annotate(s, view, stream, main, &region, r);
    }
    Some(tree)
}

/// A region whose best upstream is strictly cheaper than its current one.
struct Better {
    stream: String,
    region: String,
    holder: String,
    mod_revision: i64,
    from: Option<String>,
}

impl RoutingApi {
    /// Chooses again the upstream of every regional origin of `stream` (or
    /// of every stream) and moves, by the same guarded claim in place, each
    /// region whose best path is now strictly cheaper than its current one.
    /// A region whose upstream no longer holds is left to re-parent itself.
    pub(crate) async fn rebalance(&self, stream: Option<&str>) -> Result<Vec<v1::RegionMove>> {
        let s = &self.state;
        let better: Vec<Better> = {
            let view = s.cache().read();
            let mut out = Vec::new();
            for (id, st) in &view.streams {
                if stream.is_some_and(|want| want != id) {
                    continue;
                }
                let Some(main) = st.main.as_deref() else {
                    continue;
                };
                with_graph(s, &view, id, main, None, |g, regions| {
                    for (region, r) in regions {
                        let Some(now) = g.path_cost(region) else {
                            continue;
                        };
                        let best = g.choose(region);
                        if best.parent != r.value.upstream_region && best.path_cost_ms < now {
                            out.push(Better {
                                stream: id.clone(),
                                region: region.clone(),
                                holder: r.value.node_id.clone(),
                                mod_revision: r.mod_revision,
                                from: r.value.upstream_region.clone(),
                            });
                        }
                    }
                });
            }
            out
        };
        let mut moved = Vec::new();
        for b in better {
            let (node, main) = {
                let view = s.cache().read();
                let node = view.nodes.get(&b.holder).cloned();
                let main = view.streams.get(&b.stream).and_then(|st| st.main.clone());
                (node, main)
            };
            let (Some(node), Some(main)) = (node, main) else {
                continue;
            };
            let (won, _, _, up) = self
                .claim(
                    &b.stream,
                    &b.region,
                    &node.value,
                    &main,
                    b.mod_revision,
                    None,
                )
                .await?;
            if !won {
                continue;
            }
            let to = (up.region != main.value.region).then(|| up.region.clone());
            info!(stream = %b.stream, region = %b.region, from = ?b.from, to = ?to,
                "region moved by rebalance");
            moved.push(v1::RegionMove {
                stream: b.stream,
                region: b.region,
                from_upstream: b.from.unwrap_or_default(),
                to_upstream: to.unwrap_or_default(),
            });
        }
        Ok(moved)
    }
}
