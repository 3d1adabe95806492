//! The choice of a regional origin's upstream, as a pure function of the
//! stream's records and the link costs.
//!
//! A region pulls from the main origin or from another region's regional
//! origin that already carries the stream, whichever gives the cheapest path
//! to the main origin, within `max_hops` hops (pulling from the main origin
//! is one hop). The chain of every candidate is followed through the records
//! themselves (each names its upstream region), and a candidate whose chain
//! passes through the choosing region is never taken; the caller guards its
//! claim on every record of the chosen chain, so the chain is still the same
//! when the claim commits and no loop can form, however many regions claim
//! at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::Versioned;
use crate::keys::RegionalRecord;

/// One region's record in the stream's tree.
pub type Record = Arc<Versioned<RegionalRecord>>;

/// The stream's records and the costs, as one decision sees them.
pub struct Graph<'a> {
    /// Region of the main origin.
    pub main_region: &'a str,
    /// Epoch of the main origin record.
    pub main_epoch: i64,
    /// The stream's regional records by region.
    pub regions: &'a BTreeMap<String, Record>,
    /// Whether a node may serve as an upstream (registered, not draining).
    pub usable: &'a dyn Fn(&str) -> bool,
    /// The cost of the link from the first region to the second.
    pub cost: &'a dyn Fn(&str, &str) -> u32,
    /// Most hops from the main origin (1: every region pulls from it).
    pub max_hops: u32,
}

/// The upstream a region should pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The region to pull from; `None` for the main origin.
    pub parent: Option<String>,
    /// The records the choice relies on, with their mod revisions: the
    /// parent's first, then its upstream's, up to the one that pulls from
    /// the main origin. A claim made on this choice is guarded on each.
    pub chain: Vec<(String, i64)>,
    /// Hops from the main origin once pulling from `parent`.
    pub depth: u32,
    /// Cost of the path from the main origin, in milliseconds.
    pub path_cost_ms: u64,
}

impl Graph<'_> {
    /// Whether `record`'s own upstream is still what it names: the main
    /// origin of the current epoch, or a usable regional origin held by the
    /// node it names.
    pub fn upstream_holds(&self, record: &RegionalRecord) -> bool {
        if record.main_epoch != self.main_epoch {
            return false;
        }
        match &record.upstream_region {
            None => true,
            Some(p) => self.regions.get(p).is_some_and(|r| {
                r.value.node_id == record.upstream_node_id
                    && r.value.main_epoch == self.main_epoch
                    && (self.usable)(&r.value.node_id)
            }),
        }
    }

    /// The chain from `region`'s record to the main origin: the regions and
    /// mod revisions of its record and each upstream's, `region` first.
    /// `None` when a record on the way is missing, unusable, does not hold
    /// its upstream, or the chain is longer than `max_hops` (which also ends
    /// a loop in corrupt data).
    pub fn chain(&self, region: &str) -> Option<Vec<(String, i64)>> {
        let mut chain = Vec::new();
        let mut at = region;
        loop {
            if chain.len() >= self.max_hops as usize {
                return None;
            }
            let r = self.regions.get(at)?;
            if !(self.usable)(&r.value.node_id) || !self.upstream_holds(&r.value) {
                return None;
            }
            chain.push((at.to_owned(), r.mod_revision));
            match &r.value.upstream_region {
                None => return Some(chain),
                Some(p) => at = p,
            }
        }
    }

    /// Cost of a chain (as [`Graph::chain`] returns it) from the main origin.
    fn chain_cost(&self, chain: &[(String, i64)]) -> u64 {
        let mut total = 0u64;
        for (i, (r, _)) in chain.iter().enumerate() {
            let from = chain.get(i + 1).map_or(self.main_region, |(p, _)| p);
            total += u64::from((self.cost)(from, r));
        }
        total
    }

    /// Cost of `region`'s current path to the main origin, if its chain
    /// holds.
    pub fn path_cost(&self, region: &str) -> Option<u64> {
        Some(self.chain_cost(&self.chain(region)?))
    }

    /// The cheapest upstream for `region`. Ties go to fewer hops, then to
    /// the region first in name order; the main origin is always a
    /// candidate, so with no cost known (every link the same) it wins.
    pub fn choose(&self, region: &str) -> Choice {
        let mut best = Choice {
            parent: None,
            chain: Vec::new(),
            depth: 1,
            path_cost_ms: u64::from((self.cost)(self.main_region, region)),
        };
        for candidate in self.regions.keys() {
            if candidate == region || candidate == self.main_region {
                continue;
            }
            let Some(chain) = self.chain(candidate) else {
                continue;
            };
            let depth = chain.len() as u32 + 1;
            if depth > self.max_hops || chain.iter().any(|(r, _)| r == region) {
                continue;
            }
            let cost = self.chain_cost(&chain) + u64::from((self.cost)(candidate, region));
            if (cost, depth) < (best.path_cost_ms, best.depth) {
                best = Choice {
                    parent: Some(candidate.clone()),
                    chain,
                    depth,
                    path_cost_ms: cost,
                };
            }
        }
        best
    }
}

#[cfg(test)]
#[path = "choice_tests.rs"]
mod tests;
