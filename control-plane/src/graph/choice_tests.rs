use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::*;
use crate::graph::costs::UNKNOWN_COST_MS;

const MAIN_EPOCH: i64 = 10;

/// A record of `region` held by `{region}-1`, pulling from `parent` (None:
/// the main origin "m").
fn rec(parent: Option<&str>, rev: i64) -> Record {
    Arc::new(Versioned {
        value: RegionalRecord {
            node_id: String::new(),
            relay_addr: "127.0.0.1:1".into(),
            upstream_node_id: parent.map_or("m".into(), |p| format!("{p}-1")),
            main_epoch: MAIN_EPOCH,
            upstream_region: parent.map(str::to_owned),
            depth: 0,
        },
        create_revision: rev,
        mod_revision: rev,
    })
}

fn tree(records: &[(&str, Option<&str>, i64)]) -> BTreeMap<String, Record> {
    records
        .iter()
        .map(|(r, p, rev)| {
            let mut v = (*rec(*p, *rev)).clone();
            v.value.node_id = format!("{r}-1");
            ((*r).to_owned(), Arc::new(v))
        })
        .collect()
}

fn costs(pairs: &[(&str, &str, u32)]) -> HashMap<(String, String), u32> {
    pairs
        .iter()
        .map(|(a, b, c)| ((a.to_string(), b.to_string()), *c))
        .collect()
}

fn choose_with(
    regions: &BTreeMap<String, Record>,
    costs: &HashMap<(String, String), u32>,
    usable: &dyn Fn(&str) -> bool,
    max_hops: u32,
    region: &str,
) -> Choice {
    let cost = |a: &str, b: &str| {
        costs
            .get(&(a.to_owned(), b.to_owned()))
            .copied()
            .unwrap_or(UNKNOWN_COST_MS)
    };
    Graph {
        main_region: "r1",
        main_epoch: MAIN_EPOCH,
        regions,
        usable,
        cost: &cost,
        max_hops,
    }
    .choose(region)
}

fn choose(
    regions: &BTreeMap<String, Record>,
    costs: &HashMap<(String, String), u32>,
    region: &str,
) -> Choice {
    choose_with(regions, costs, &|_| true, 3, region)
}

/// The WAN bench's three regions: r1 (publisher), r2 80 ms RTT away, r3
/// 30 ms from r2 and 150 ms from r1.
fn wan() -> HashMap<(String, String), u32> {
    costs(&[("r1", "r2", 40), ("r2", "r3", 15), ("r1", "r3", 85)])
}

#[test]
fn unknown_costs_pull_from_the_main_origin() {
    let t = tree(&[("r2", None, 20), ("r3", None, 21)]);
    let c = choose(&t, &HashMap::new(), "r4");
    assert_eq!(c.parent, None);
    assert_eq!(c.depth, 1);
    assert!(c.chain.is_empty());
    assert_eq!(c.path_cost_ms, u64::from(UNKNOWN_COST_MS));
}

#[test]
fn the_cheaper_path_through_a_region_wins() {
    let t = tree(&[("r2", None, 20)]);
    let c = choose(&t, &wan(), "r3");
    assert_eq!(c.parent.as_deref(), Some("r2"));
    assert_eq!(c.chain, vec![("r2".to_owned(), 20)]);
    assert_eq!(c.depth, 2);
    assert_eq!(c.path_cost_ms, 55);
    // Without r2 carrying the stream, r3 pulls from the main origin.
    let c = choose(&BTreeMap::new(), &wan(), "r3");
    assert_eq!((c.parent, c.path_cost_ms), (None, 85));
}

#[test]
fn a_direct_link_that_is_cheaper_wins() {
    let t = tree(&[("r2", None, 20)]);
    let cheap = costs(&[("r1", "r2", 40), ("r2", "r3", 15), ("r1", "r3", 50)]);
    assert_eq!(choose(&t, &cheap, "r3").parent, None);
}

#[test]
fn ties_go_to_fewer_hops_then_name_order() {
    let t = tree(&[("r2", None, 20)]);
    let equal = costs(&[("r1", "r2", 10), ("r2", "r3", 10), ("r1", "r3", 20)]);
    assert_eq!(choose(&t, &equal, "r3").parent, None);
    let t = tree(&[("ra", None, 20), ("rb", None, 21)]);
    let two = costs(&[
        ("r1", "ra", 5),
        ("r1", "rb", 5),
        ("ra", "r3", 5),
        ("rb", "r3", 5),
    ]);
    assert_eq!(choose(&t, &two, "r3").parent.as_deref(), Some("ra"));
}

#[test]
fn depth_is_bounded_by_max_hops() {
    // A chain r2 ← r3 ← r4, every link cheap, the direct links dear.
    let t = tree(&[
        ("r2", None, 20),
        ("r3", Some("r2"), 21),
        ("r4", Some("r3"), 22),
    ]);
    let c = costs(&[
        ("r1", "r2", 1),
        ("r2", "r3", 1),
        ("r3", "r4", 1),
        ("r4", "r5", 1),
        ("r3", "r5", 5),
    ]);
    let three = choose(&t, &c, "r5");
    assert_eq!(
        three.parent.as_deref(),
        Some("r3"),
        "r4 would be a fourth hop"
    );
    assert_eq!(three.depth, 3);
    let four = choose_with(&t, &c, &|_| true, 4, "r5");
    assert_eq!(four.parent.as_deref(), Some("r4"));
    assert_eq!(four.chain.len(), 3);
    let one = choose_with(&t, &c, &|_| true, 1, "r5");
    assert_eq!(one.parent, None);
}

#[test]
fn never_a_region_whose_chain_passes_through_the_chooser() {
    // r3 pulls from r2: r2 (re-choosing) must not pick r3 however cheap.
    let t = tree(&[("r2", None, 20), ("r3", Some("r2"), 21)]);
    let c = costs(&[("r3", "r2", 1), ("r2", "r3", 1), ("r1", "r3", 1)]);
    assert_eq!(choose(&t, &c, "r2").parent, None);
}

#[test]
fn unusable_or_stale_records_are_no_candidates() {
    let t = tree(&[("r2", None, 20), ("r4", Some("r2"), 21)]);
    let c = costs(&[
        ("r1", "r2", 1),
        ("r2", "r3", 1),
        ("r2", "r4", 1),
        ("r4", "r3", 1),
    ]);
    // r2's holder is draining or gone: neither r2 nor r4 (through r2).
    let not_r2 = |n: &str| n != "r2-1";
    assert_eq!(choose_with(&t, &c, &not_r2, 3, "r3").parent, None);
    // A record claimed under an older main epoch.
    let mut old = (*t["r2"]).clone();
    old.value.main_epoch = MAIN_EPOCH - 1;
    let mut t2 = t.clone();
    t2.insert("r2".into(), Arc::new(old));
    assert_eq!(choose(&t2, &c, "r3").parent, None);
    // r4 names an upstream node that no longer holds r2.
    let mut moved = (*t["r2"]).clone();
    moved.value.node_id = "r2-2".into();
    let mut t3 = t.clone();
    t3.insert("r2".into(), Arc::new(moved));
    let g = choose(&t3, &c, "r3");
    assert_eq!(g.parent.as_deref(), Some("r2"), "r2 itself still qualifies");
    assert!(
        choose(&t3, &costs(&[("r4", "r3", 0)]), "r3")
            .parent
            .is_none()
    );
}

#[test]
fn a_corrupt_loop_in_the_records_is_no_candidate() {
    let t = tree(&[("r2", Some("r3"), 20), ("r3", Some("r2"), 21)]);
    let c = costs(&[("r2", "r4", 1), ("r3", "r4", 1)]);
    assert_eq!(choose(&t, &c, "r4").parent, None);
}

#[test]
fn path_cost_follows_the_chain() {
    let t = tree(&[("r2", None, 20), ("r3", Some("r2"), 21)]);
    let cost = |a: &str, b: &str| wan()[&(a.to_owned(), b.to_owned())];
    let g = Graph {
        main_region: "r1",
        main_epoch: MAIN_EPOCH,
        regions: &t,
        usable: &|_| true,
        cost: &cost,
        max_hops: 3,
    };
    assert_eq!(g.path_cost("r3"), Some(55));
    assert_eq!(g.path_cost("r2"), Some(40));
    assert_eq!(g.path_cost("r9"), None);
    assert_eq!(
        g.chain("r3"),
        Some(vec![("r3".to_owned(), 21), ("r2".to_owned(), 20)])
    );
}
