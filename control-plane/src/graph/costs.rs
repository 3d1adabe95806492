//! Link costs between regions: operators' pins (in the store, every replica
//! reads the same), pins from this replica's configuration, and costs
//! measured by nodes on their relay connections (kept in memory by each
//! replica from the load reports it receives).
//!
//! A cost is one way, in milliseconds, for the ordered pair (from, to):
//! media sent by an origin in `from` to a regional origin in `to`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::keys::LinkPinRecord;

/// The cost of a link nobody measured or pinned. High enough that a path of
/// known links beats it, and that with no cost known at all every regional
/// origin pulls from the main origin (one unknown link is cheaper than two).
pub const UNKNOWN_COST_MS: u32 = 1_000;

/// The most a pin may say (one minute: anything above is a typo).
pub const MAX_COST_MS: u32 = 60_000;

/// Penalty per percent of packets lost, in milliseconds.
const LOSS_PENALTY_MS_PER_PERCENT: f64 = 20.0;

/// Most region pairs with a measured cost (64 regions, every pair).
const MAX_MEASURED_PAIRS: usize = 64 * 63;

/// Weight of a new measurement in the smoothed cost.
const SMOOTHING: f64 = 0.25;

/// The cost of a measured link: half the smoothed RTT (one way) plus 20 ms
/// per percent of the sender's packets lost (capped at 50 %), because a lost
/// datagram holds its group back for a retransmission round trip.
pub fn measured_cost_ms(srtt_us: u64, loss: f64) -> u32 {
    let loss = if loss.is_finite() {
        loss.clamp(0.0, 0.5)
    } else {
        0.0
    };
    let one_way = srtt_us as f64 / 2_000.0;
    let cost = one_way + loss * 100.0 * LOSS_PENALTY_MS_PER_PERCENT;
    cost.round().clamp(0.0, f64::from(MAX_COST_MS)) as u32
}

/// Where a link's cost came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An operator's `SetLinkCost` (stored; every replica agrees).
    Pinned,
    /// This replica's `--link-cost`.
    Configured,
    /// Nodes' relay connections, as reported to this replica.
    Measured,
    /// Nothing known: [`UNKNOWN_COST_MS`].
    Unknown,
}

impl Source {
    /// Its name for operators (proto, CLI, dashboard).
    pub fn name(self) -> &'static str {
        match self {
            Source::Pinned => "pinned",
            Source::Configured => "configured",
            Source::Measured => "measured",
            Source::Unknown => "unknown",
        }
    }
}

/// Measured costs, smoothed per ordered region pair. Bounded by the number
/// of region pairs that registered nodes report (names are validated, and a
/// node reports only its own region as `from`).
#[derive(Debug, Default)]
pub struct Measured {
    costs: Mutex<HashMap<(String, String), f64>>,
}

impl Measured {
    /// Folds one report of the link `from` → `to` into its smoothed cost.
    pub fn report(&self, from: &str, to: &str, cost_ms: u32) {
        let Ok(mut costs) = self.costs.lock() else {
            return;
        };
        let sample = f64::from(cost_ms);
        let key = (from.to_owned(), to.to_owned());
        if costs.len() >= MAX_MEASURED_PAIRS && !costs.contains_key(&key) {
            // Registered nodes may name any region: bounded all the same.
            return;
        }
        costs
            .entry(key)
            .and_modify(|c| *c += SMOOTHING * (sample - *c))
            .or_insert(sample);
    }

    /// A copy of every smoothed cost, rounded to milliseconds.
    pub fn snapshot(&self) -> HashMap<(String, String), u32> {
        let Ok(costs) = self.costs.lock() else {
            return HashMap::new();
        };
        costs
            .iter()
            .map(|(k, c)| (k.clone(), c.round() as u32))
            .collect()
    }
}

/// Every source of costs at one moment; [`Costs::link`] picks by precedence:
/// pinned, then configured, then measured, then unknown.
pub struct Costs<'a> {
    /// Operators' pins from the store.
    pub pins: &'a BTreeMap<(String, String), LinkPinRecord>,
    /// This replica's configured pins.
    pub configured: &'a BTreeMap<(String, String), u32>,
    /// Measured costs.
    pub measured: &'a HashMap<(String, String), u32>,
}

impl Costs<'_> {
    /// The cost of the link `from` → `to` and where it came from. A region
    /// to itself costs nothing.
    pub fn link(&self, from: &str, to: &str) -> (u32, Source) {
        if from == to {
            return (0, Source::Pinned);
        }
        let key = (from.to_owned(), to.to_owned());
        if let Some(p) = self.pins.get(&key) {
            return (p.cost_ms, Source::Pinned);
        }
        if let Some(c) = self.configured.get(&key) {
            return (*c, Source::Configured);
        }
        if let Some(c) = self.measured.get(&key) {
            return (*c, Source::Measured);
        }
        (UNKNOWN_COST_MS, Source::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_cost_is_half_rtt_plus_loss_penalty() {
        assert_eq!(measured_cost_ms(80_000, 0.0), 40);
        // The WAN bench's eu–usw link: 150 ms RTT, 0.5 % loss.
        assert_eq!(measured_cost_ms(150_000, 0.005), 85);
        assert_eq!(measured_cost_ms(0, 1.0), 1_000);
        assert_eq!(measured_cost_ms(10_000, f64::NAN), 5);
        assert_eq!(measured_cost_ms(u64::MAX, 0.0), MAX_COST_MS);
    }

    #[test]
    fn precedence_pinned_configured_measured_unknown() {
        let mut pins = BTreeMap::new();
        let mut configured = BTreeMap::new();
        let mut measured = HashMap::new();
        let k = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        measured.insert(k("a", "b"), 30);
        measured.insert(k("a", "c"), 30);
        configured.insert(k("a", "b"), 20);
        configured.insert(k("a", "d"), 20);
        pins.insert(
            k("a", "b"),
            LinkPinRecord {
                cost_ms: 10,
                operator: "o".into(),
                pinned_at_ms: 0,
            },
        );
        let c = Costs {
            pins: &pins,
            configured: &configured,
            measured: &measured,
        };
        assert_eq!(c.link("a", "b"), (10, Source::Pinned));
        assert_eq!(c.link("a", "d"), (20, Source::Configured));
        assert_eq!(c.link("a", "c"), (30, Source::Measured));
        assert_eq!(c.link("c", "a"), (UNKNOWN_COST_MS, Source::Unknown));
        assert_eq!(c.link("a", "a").0, 0);
    }

    #[test]
    fn measured_costs_are_smoothed() {
        let m = Measured::default();
        m.report("a", "b", 40);
        assert_eq!(m.snapshot().get(&("a".into(), "b".into())), Some(&40));
        m.report("a", "b", 80);
        assert_eq!(m.snapshot().get(&("a".into(), "b".into())), Some(&50));
    }
}
