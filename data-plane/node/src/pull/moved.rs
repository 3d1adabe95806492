//! When a puller must re-resolve: the rule over the stream's topology
//! snapshot (sans-IO, unit-tested).

use strata_proto::v1;

/// Whether a topology snapshot means this node should pull from elsewhere.
pub fn moved(
    t: &Option<v1::StreamTopology>,
    me: &str,
    role: v1::Role,
    upstream: &v1::Upstream,
    epoch: i64,
) -> bool {
    let Some(t) = t else { return false };
    if !t.live {
        return true;
    }
    let main = t.main.as_ref();
    let main_moved = |m: Option<&v1::MainOrigin>| match m {
        Some(m) => m.node_id != upstream.node_id || m.epoch != upstream.epoch,
        None => true,
    };
    match role {
        v1::Role::RegionalOrigin => {
            // Deposed (the record also drops out of the topology when the
            // main origin's epoch moves past the one it was claimed under).
            let deposed = t
                .regional
                .as_ref()
                .is_none_or(|r| r.node_id != me || r.epoch != epoch);
            if main.is_some_and(|m| m.node_id == upstream.node_id) {
                // Pulling from the main origin: it changed under us.
                deposed || main_moved(main)
            } else {
                // Pulling from another region's regional origin (the region
                // graph): that region's record is gone or has a new holder.
                deposed
                    || t.upstream.as_ref().is_none_or(|u| {
                        u.node_id != upstream.node_id || u.region != upstream.region
                    })
            }
        }
        v1::Role::Edge
            if main
                .is_some_and(|m| m.region == upstream.region && m.node_id == upstream.node_id) =>
        {
            // Pulling from the main origin of our own region.
            main_moved(main)
        }
        v1::Role::Edge => t
            .regional
            .as_ref()
            .is_none_or(|r| r.node_id != upstream.node_id || r.epoch != upstream.epoch),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(main: (&str, i64), regional: Option<(&str, i64)>) -> Option<v1::StreamTopology> {
        Some(v1::StreamTopology {
            live: true,
            main: Some(v1::MainOrigin {
                node_id: main.0.into(),
                region: "eu".into(),
                epoch: main.1,
                ..Default::default()
            }),
            regional: regional.map(|(n, e)| v1::RegionalOrigin {
                node_id: n.into(),
                epoch: e,
                ..Default::default()
            }),
            revision: 0,
            upstream: None,
        })
    }

    fn up(node: &str, region: &str, epoch: i64) -> v1::Upstream {
        v1::Upstream {
            node_id: node.into(),
            region: region.into(),
            epoch,
            ..Default::default()
        }
    }

    #[test]
    fn edge_of_regional_moves_when_regional_changes() {
        let u = up("r1", "us", 20);
        assert!(!moved(
            &topo(("o", 10), Some(("r1", 20))),
            "e",
            v1::Role::Edge,
            &u,
            20
        ));
        assert!(moved(&topo(("o", 10), None), "e", v1::Role::Edge, &u, 20));
        assert!(moved(
            &topo(("o", 10), Some(("r2", 25))),
            "e",
            v1::Role::Edge,
            &u,
            20
        ));
        assert!(moved(
            &topo(("o", 10), Some(("r1", 30))),
            "e",
            v1::Role::Edge,
            &u,
            20
        ));
    }

    #[test]
    fn edge_of_main_moves_only_with_main() {
        let u = up("o", "eu", 10);
        assert!(!moved(
            &topo(("o", 10), Some(("x", 3))),
            "e",
            v1::Role::Edge,
            &u,
            10
        ));
        assert!(moved(&topo(("o2", 11), None), "e", v1::Role::Edge, &u, 10));
    }

    #[test]
    fn regional_origin_moves_when_deposed_or_main_changes() {
        let u = up("o", "eu", 10);
        let me = "r1";
        assert!(!moved(
            &topo(("o", 10), Some(("r1", 20))),
            me,
            v1::Role::RegionalOrigin,
            &u,
            20
        ));
        assert!(moved(
            &topo(("o", 10), Some(("r2", 21))),
            me,
            v1::Role::RegionalOrigin,
            &u,
            20
        ));
        assert!(moved(
            &topo(("o", 12), Some(("r1", 20))),
            me,
            v1::Role::RegionalOrigin,
            &u,
            20
        ));
        let mut dead = topo(("o", 10), Some(("r1", 20)));
        if let Some(t) = dead.as_mut() {
            t.live = false;
        }
        assert!(moved(&dead, me, v1::Role::RegionalOrigin, &u, 20));
    }

    #[test]
    fn regional_origin_of_a_parent_region_moves_with_that_region() {
        // r3-1 holds region r3 and pulls from r2's regional origin r2-1.
        let u = up("r2-1", "r2", 30);
        let me = "r3-1";
        let with_parent = |parent: Option<(&str, &str)>| {
            let mut t = topo(("o", 10), Some((me, 40)));
            if let Some(t) = t.as_mut() {
                t.upstream = parent.map(|(n, r)| v1::RegionalOrigin {
                    node_id: n.into(),
                    region: r.into(),
                    epoch: 31,
                    ..Default::default()
                });
            }
            t
        };
        let role = v1::Role::RegionalOrigin;
        // The parent's record rewritten in place (same holder): no move.
        assert!(!moved(&with_parent(Some(("r2-1", "r2"))), me, role, &u, 40));
        // Gone, or held by another node now: re-resolve.
        assert!(moved(&with_parent(None), me, role, &u, 40));
        assert!(moved(&with_parent(Some(("r2-2", "r2"))), me, role, &u, 40));
        // Our own record rewritten (re-parented, rebalanced): re-resolve.
        assert!(moved(&with_parent(Some(("r2-1", "r2"))), me, role, &u, 39));
    }

    #[test]
    fn unknown_topology_is_not_a_move() {
        assert!(!moved(&None, "e", v1::Role::Edge, &up("o", "eu", 1), 1));
    }
}
