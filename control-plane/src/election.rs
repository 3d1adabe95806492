//! The origin-election rules, as a pure function of the records.
//!
//! No store access, no clock: given what the store (or cache) holds for a
//! stream and who asks, say what the asking node's role is or what must be
//! claimed. The service executes the decision with a guarded transaction.

use crate::cache::Versioned;
use crate::keys::{MainRecord, RegionalRecord};

/// What the rules say for one resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The stream is not live.
    NotLive,
    /// The asking node is the main origin.
    Main,
    /// The asking node is in the main origin's region: it pulls from the main
    /// origin directly (the main origin is that region's origin).
    PullFromMain,
    /// The asking node already holds its region's regional origin.
    HoldsRegional,
    /// Another live node holds the region's origin: pull from it (its id,
    /// borrowed from the regional record).
    PullFromRegional(&'a str),
    /// Nobody (valid) holds the region's origin: claim it. `replace` is the
    /// mod revision of a stale record to replace atomically, if any.
    Claim {
        /// Mod revision of the stale record, 0 when there is none.
        replace: i64,
    },
}

/// Why a regional record may be replaced.
fn stale(
    regional: &Versioned<RegionalRecord>,
    main: &Versioned<MainRecord>,
    unreachable: Option<(&str, i64)>,
    is_live: &dyn Fn(&str) -> bool,
) -> bool {
    // Claimed under an earlier publication of the stream.
    regional.value.main_epoch != main.epoch()
        // Its holder is no longer registered (its lease is about to take the
        // record with it; do not wait for that).
        || !is_live(&regional.value.node_id)
        // A node of the region could not reach it at exactly this epoch.
        || unreachable == Some((regional.value.node_id.as_str(), regional.epoch()))
}

/// Decides the role of `node` (in `region`) for a stream.
///
/// `unreachable` is the (node, epoch) the asking node reports it could not
/// reach; `is_live` says whether a node id is registered.
pub fn decide<'a>(
    main: Option<&Versioned<MainRecord>>,
    regional: Option<&'a Versioned<RegionalRecord>>,
    node: &str,
    region: &str,
    unreachable: Option<(&str, i64)>,
    is_live: &dyn Fn(&str) -> bool,
) -> Decision<'a> {
    let Some(main) = main else {
        return Decision::NotLive;
    };
    if main.value.node_id == node {
        return Decision::Main;
    }
    if main.value.region == region {
        return Decision::PullFromMain;
    }
    match regional {
        None => Decision::Claim { replace: 0 },
        Some(r) if stale(r, main, unreachable, is_live) => Decision::Claim {
            replace: r.mod_revision,
        },
        Some(r) if r.value.node_id == node => Decision::HoldsRegional,
        Some(r) => Decision::PullFromRegional(&r.value.node_id),
    }
}

/// What the rules say for one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishDecision {
    /// Nobody holds the main origin: create the record.
    Create,
    /// The asking node holds it already (Publish is idempotent).
    Holds,
    /// The holder is dead: replace its record, guarded by `replace`, its
    /// mod revision (the epoch the evidence names).
    TakeOver {
        /// Mod revision of the record to replace.
        replace: i64,
    },
    /// Another node holds it and nothing says it is dead: ALREADY_EXISTS.
    Refuse,
}

/// Decides a publish of `node` for a stream whose main origin record is
/// `main`.
///
/// The evidence rule is the regional one: the holder is no longer registered,
/// or the asking node reports it unreachable at exactly the record's epoch.
/// The asking node reports only a definite "nothing listens on its relay
/// port" (see `PublishRequest.unreachable`), so a partition between regions,
/// where packets are only lost, never takes a live origin over.
pub fn decide_publish(
    main: Option<&Versioned<MainRecord>>,
    node: &str,
    unreachable: Option<(&str, i64)>,
    is_live: &dyn Fn(&str) -> bool,
) -> PublishDecision {
    let Some(main) = main else {
        return PublishDecision::Create;
    };
    let holder = main.value.node_id.as_str();
    if holder == node {
        return PublishDecision::Holds;
    }
    if !is_live(holder) || unreachable == Some((holder, main.epoch())) {
        return PublishDecision::TakeOver {
            replace: main.mod_revision,
        };
    }
    PublishDecision::Refuse
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_rec(node: &str, region: &str, epoch: i64) -> Versioned<MainRecord> {
        Versioned {
            value: MainRecord {
                node_id: node.into(),
                region: region.into(),
                relay_addr: "127.0.0.1:1".into(),
                started_at_ms: 0,
            },
            create_revision: epoch,
            mod_revision: epoch,
        }
    }

    fn reg(node: &str, main_epoch: i64, epoch: i64) -> Versioned<RegionalRecord> {
        Versioned {
            value: RegionalRecord {
                node_id: node.into(),
                relay_addr: "127.0.0.1:2".into(),
                upstream_node_id: "o".into(),
                main_epoch,
                upstream_region: None,
                depth: 1,
            },
            create_revision: epoch,
            mod_revision: epoch + 1,
        }
    }

    const ALL: &dyn Fn(&str) -> bool = &|_| true;

    #[test]
    fn roles() {
        let m = main_rec("o", "eu", 10);
        assert_eq!(decide(None, None, "a", "us", None, ALL), Decision::NotLive);
        assert_eq!(decide(Some(&m), None, "o", "eu", None, ALL), Decision::Main);
        assert_eq!(
            decide(Some(&m), None, "e", "eu", None, ALL),
            Decision::PullFromMain
        );
        assert_eq!(
            decide(Some(&m), None, "a", "us", None, ALL),
            Decision::Claim { replace: 0 }
        );
        let r = reg("a", 10, 20);
        assert_eq!(
            decide(Some(&m), Some(&r), "a", "us", None, ALL),
            Decision::HoldsRegional
        );
        assert_eq!(
            decide(Some(&m), Some(&r), "b", "us", None, ALL),
            Decision::PullFromRegional("a")
        );
    }

    #[test]
    fn stale_regional_records_are_replaced() {
        let m = main_rec("o", "eu", 10);
        // Claimed under an older publication.
        let old = reg("a", 5, 20);
        assert_eq!(
            decide(Some(&m), Some(&old), "b", "us", None, ALL),
            Decision::Claim { replace: 21 }
        );
        // Holder no longer registered.
        let r = reg("a", 10, 20);
        let dead: &dyn Fn(&str) -> bool = &|n| n != "a";
        assert_eq!(
            decide(Some(&m), Some(&r), "b", "us", None, dead),
            Decision::Claim { replace: 21 }
        );
        // Reported unreachable at its current epoch...
        assert_eq!(
            decide(Some(&m), Some(&r), "b", "us", Some(("a", 21)), ALL),
            Decision::Claim { replace: 21 }
        );
        // ...but a report about an older epoch changes nothing.
        assert_eq!(
            decide(Some(&m), Some(&r), "b", "us", Some(("a", 7)), ALL),
            Decision::PullFromRegional("a")
        );
    }

    #[test]
    fn publish_creates_or_holds() {
        let m = main_rec("o", "eu", 10);
        assert_eq!(
            decide_publish(None, "a", None, ALL),
            PublishDecision::Create
        );
        assert_eq!(
            decide_publish(Some(&m), "o", None, ALL),
            PublishDecision::Holds
        );
        // The holder's own "unreachable" report about itself changes nothing.
        assert_eq!(
            decide_publish(Some(&m), "o", Some(("o", 10)), ALL),
            PublishDecision::Holds
        );
    }

    #[test]
    fn a_live_holder_is_not_taken_over() {
        let m = main_rec("o", "eu", 10);
        assert_eq!(
            decide_publish(Some(&m), "a", None, ALL),
            PublishDecision::Refuse
        );
        // A report about an older epoch (the stream was published again
        // since), or about another node, changes nothing.
        assert_eq!(
            decide_publish(Some(&m), "a", Some(("o", 9)), ALL),
            PublishDecision::Refuse
        );
        assert_eq!(
            decide_publish(Some(&m), "a", Some(("p", 10)), ALL),
            PublishDecision::Refuse
        );
    }

    #[test]
    fn a_dead_holder_is_taken_over_at_its_epoch() {
        let m = main_rec("o", "eu", 10);
        assert_eq!(
            decide_publish(Some(&m), "a", Some(("o", 10)), ALL),
            PublishDecision::TakeOver { replace: 10 }
        );
        let dead: &dyn Fn(&str) -> bool = &|n| n != "o";
        assert_eq!(
            decide_publish(Some(&m), "a", None, dead),
            PublishDecision::TakeOver { replace: 10 }
        );
    }
}
