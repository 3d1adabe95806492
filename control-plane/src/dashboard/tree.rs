//! A stream's tree: every record hung under the node it pulls from.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{LinkView, MainView, RegionalView, Role, SubscriberView, TreeNode};

/// Hangs every record under the node it pulls from. Each node appears once;
/// records whose upstream is not reachable from the main origin are returned
/// as separate trees.
pub(super) fn build_tree(
    main: &MainView,
    regional: &[RegionalView],
    subscribers: &[SubscriberView],
) -> (TreeNode, Vec<TreeNode>) {
    // (node, region, role, epoch, link) by upstream, each list in region, node order.
    type Child<'a> = (&'a str, &'a str, Role, Option<i64>, Option<&'a LinkView>);
    let mut by_upstream: BTreeMap<&str, Vec<Child<'_>>> = BTreeMap::new();
    for r in regional {
        by_upstream.entry(&r.upstream).or_default().push((
            &r.node,
            &r.region,
            Role::RegionalOrigin,
            Some(r.epoch),
            r.link.as_ref(),
        ));
    }
    for s in subscribers {
        by_upstream.entry(&s.upstream).or_default().push((
            &s.node,
            &s.region,
            Role::Edge,
            None,
            None,
        ));
    }
    for list in by_upstream.values_mut() {
        list.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
    }
    fn grow<'a>(
        node: TreeNode,
        by_upstream: &BTreeMap<&str, Vec<Child<'a>>>,
        seen: &mut BTreeSet<String>,
    ) -> TreeNode {
        let mut node = node;
        let kids = by_upstream
            .get(node.node.as_str())
            .cloned()
            .unwrap_or_default();
        for (id, region, role, epoch, link) in kids {
            if !seen.insert(id.to_owned()) {
                continue;
            }
            let child = TreeNode {
                node: id.to_owned(),
                region: region.to_owned(),
                role,
                epoch,
                link: link.cloned(),
                children: Vec::new(),
            };
            node.children.push(grow(child, by_upstream, seen));
        }
        node
    }
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
    let mut detached = Vec::new();
    let leftovers: Vec<Child<'_>> = by_upstream.values().flatten().copied().collect();
    for (id, region, role, epoch, link) in leftovers {
        if !seen.insert(id.to_owned()) {
            continue;
        }
        let start = TreeNode {
            node: id.to_owned(),
            region: region.to_owned(),
            role,
            epoch,
            link: link.cloned(),
            children: Vec::new(),
        };
        detached.push(grow(start, &by_upstream, &mut seen));
    }
    (tree, detached)
}
