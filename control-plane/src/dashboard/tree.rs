//! A stream's tree: every record hung under the node it pulls from.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{LinkView, MainView, RegionalView, Role, SubscriberView, TreeNode};

/// One record waiting to be hung under its upstream.
#[derive(Clone, Copy)]
struct Child<'a> {
    node: &'a str,
    region: &'a str,
    role: Role,
    epoch: Option<i64>,
    link: Option<&'a LinkView>,
}

impl Child<'_> {
    /// The record as a tree node with no children yet.
    fn leaf(&self) -> TreeNode {
        TreeNode {
            node: self.node.to_owned(),
            region: self.region.to_owned(),
            role: self.role,
            epoch: self.epoch,
            link: self.link.cloned(),
            children: Vec::new(),
        }
    }
}

/// Records by the node they pull from, each list in region, node order.
type ByUpstream<'a> = BTreeMap<&'a str, Vec<Child<'a>>>;

/// Hangs every record under the node it pulls from. Each node appears once;
/// records whose upstream is not reachable from the main origin are returned
/// as separate trees.
pub(super) fn build_tree(
    main: &MainView,
    regional: &[RegionalView],
    subscribers: &[SubscriberView],
) -> (TreeNode, Vec<TreeNode>) {
    let by_upstream = group_by_upstream(regional, subscribers);
    let mut seen = BTreeSet::from([main.node.clone()]);
    let root = TreeNode {
        node: main.node.clone(),
        region: main.region.clone(),
        role: Role::MainOrigin,
        epoch: Some(main.epoch),
        link: None,
        children: Vec::new(),
    };
    let tree = grow(root, &by_upstream, &mut seen);
    let leftovers: Vec<Child<'_>> = by_upstream.values().flatten().copied().collect();
    let detached = grow_each(&leftovers, &by_upstream, &mut seen);
    (tree, detached)
}

fn group_by_upstream<'a>(
    regional: &'a [RegionalView],
    subscribers: &'a [SubscriberView],
) -> ByUpstream<'a> {
    let mut by_upstream: ByUpstream<'a> = BTreeMap::new();
    for r in regional {
        by_upstream.entry(&r.upstream).or_default().push(Child {
            node: &r.node,
            region: &r.region,
            role: Role::RegionalOrigin,
            epoch: Some(r.epoch),
            link: r.link.as_ref(),
        });
    }
    for s in subscribers {
        by_upstream.entry(&s.upstream).or_default().push(Child {
            node: &s.node,
            region: &s.region,
            role: Role::Edge,
            epoch: None,
            link: None,
        });
    }
    for list in by_upstream.values_mut() {
        list.sort_by(|a, b| (a.region, a.node).cmp(&(b.region, b.node)));
    }
    by_upstream
}

/// Hangs under `node`, depth first, every record that pulls from it and has
/// not been placed yet.
fn grow(mut node: TreeNode, by_upstream: &ByUpstream<'_>, seen: &mut BTreeSet<String>) -> TreeNode {
    if let Some(kids) = by_upstream.get(node.node.as_str()) {
        node.children = grow_each(kids, by_upstream, seen);
    }
    node
}

/// Grows a tree from each of `starts` not placed yet, in order.
fn grow_each(
    starts: &[Child<'_>],
    by_upstream: &ByUpstream<'_>,
    seen: &mut BTreeSet<String>,
) -> Vec<TreeNode> {
    let mut trees = Vec::new();
    for start in starts {
        if seen.insert(start.node.to_owned()) {
            trees.push(grow(start.leaf(), by_upstream, seen));
        }
    }
    trees
}
