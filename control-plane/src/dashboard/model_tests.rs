//! Tests of the topology document, and the stream tree other modules' tests build on.

use super::*;

/// A stream tree: eu-1 main origin, us-1 regional origin, two pulling nodes and one
/// (ap-1) whose upstream is gone.
pub(crate) fn tree_msg() -> v1::StreamTree {
    v1::StreamTree {
        main: Some(v1::MainOrigin {
            stream: "demo".into(),
            node_id: "eu-1".into(),
            region: "eu".into(),
            relay_addr: "x:1".into(),
            epoch: 7,
            started_at_ms: 1,
        }),
        regional: vec![v1::RegionalOrigin {
            stream: "demo".into(),
            region: "us".into(),
            node_id: "us-1".into(),
            relay_addr: "x:2".into(),
            epoch: 9,
            upstream_node_id: "eu-1".into(),
            ..Default::default()
        }],
        subscribers: vec![
            v1::Subscriber {
                stream: "demo".into(),
                region: "us".into(),
                node_id: "us-2".into(),
                upstream_node_id: "us-1".into(),
            },
            v1::Subscriber {
                stream: "demo".into(),
                region: "eu".into(),
                node_id: "eu-2".into(),
                upstream_node_id: "eu-1".into(),
            },
            v1::Subscriber {
                stream: "demo".into(),
                region: "ap".into(),
                node_id: "ap-1".into(),
                upstream_node_id: "gone".into(),
            },
        ],
        standby: None,
        players: Vec::new(),
    }
}

#[test]
fn tree_hangs_nodes_under_their_upstream() {
    let s = stream_view(&tree_msg()).unwrap();
    assert_eq!(s.regions, ["ap", "eu", "us"]);
    let t = &s.tree;
    assert_eq!(
        (t.node.as_str(), t.role, t.epoch),
        ("eu-1", Role::MainOrigin, Some(7))
    );
    let kids: Vec<_> = t
        .children
        .iter()
        .map(|c| (c.node.as_str(), c.role))
        .collect();
    assert_eq!(kids, [("eu-2", Role::Edge), ("us-1", Role::RegionalOrigin)]);
    assert_eq!(t.children[1].children[0].node, "us-2");
    assert_eq!(s.detached.len(), 1);
    assert_eq!(s.detached[0].node, "ap-1");
    assert_eq!(t.walk().len(), 4);
    assert_eq!(s.node_count(), 5);
}

#[test]
fn the_standby_is_shown_beside_the_live_publisher() {
    let mut m = tree_msg();
    assert_eq!(stream_view(&m).unwrap().standby, None);
    m.standby = Some(v1::StandbyOrigin {
        stream: "demo".into(),
        node_id: "us-3".into(),
        region: "us".into(),
        relay_addr: "x:3".into(),
        epoch: 11,
        started_at_ms: 2,
    });
    let s = stream_view(&m).unwrap();
    let b = s.standby.as_ref().unwrap();
    assert_eq!(
        (b.node.as_str(), b.region.as_str(), b.epoch),
        ("us-3", "us", 11)
    );
    // The standby serves nobody: it is not a node of the tree.
    assert_eq!(s.node_count(), 5);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["standby"]["node"], "us-3");
    assert_eq!(json["main"]["node"], "eu-1");
}

#[test]
fn cycles_do_not_loop() {
    let mut m = tree_msg();
    m.subscribers.push(v1::Subscriber {
        stream: "demo".into(),
        region: "us".into(),
        node_id: "us-1".into(),
        upstream_node_id: "us-2".into(),
    });
    let s = stream_view(&m).unwrap();
    assert_eq!(s.tree.walk().len(), 4);
}

#[test]
fn json_field_names_are_stable() {
    let s = stream_view(&tree_msg()).unwrap();
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["tree"]["role"], "main_origin");
    assert_eq!(v["tree"]["children"][1]["role"], "regional_origin");
    assert_eq!(v["tree"]["children"][0].get("epoch"), None);
    assert_eq!(v["main"]["node"], "eu-1");
}

/// A depth-2 chain with link costs: eu-1 (main) → us-1 (use) → usw-1 (usw).
pub(crate) fn chain_msg() -> v1::StreamTree {
    let mut m = tree_msg();
    m.subscribers.clear();
    m.regional = vec![
        v1::RegionalOrigin {
            stream: "demo".into(),
            region: "use".into(),
            node_id: "use-1".into(),
            epoch: 9,
            upstream_node_id: "eu-1".into(),
            depth: 1,
            link_cost_ms: 40,
            link_cost_source: "pinned".into(),
            path_cost_ms: 40,
            ..Default::default()
        },
        v1::RegionalOrigin {
            stream: "demo".into(),
            region: "usw".into(),
            node_id: "usw-1".into(),
            epoch: 11,
            upstream_node_id: "use-1".into(),
            upstream_region: "use".into(),
            depth: 2,
            link_cost_ms: 15,
            link_cost_source: "measured".into(),
            path_cost_ms: 55,
            ..Default::default()
        },
    ];
    m
}

#[test]
fn regional_origins_carry_their_link_cost() {
    let s = stream_view(&chain_msg()).unwrap();
    let use1 = &s.tree.children[0];
    assert_eq!(use1.node, "use-1");
    let link = use1.link.as_ref().unwrap();
    assert_eq!(
        (
            link.from_region.as_str(),
            link.depth,
            link.cost_ms,
            link.path_cost_ms
        ),
        ("", 1, 40, 40)
    );
    let usw1 = &use1.children[0];
    assert_eq!(usw1.node, "usw-1", "nested under the region it pulls from");
    let link = usw1.link.as_ref().unwrap();
    assert_eq!(link.from_region, "use");
    assert_eq!(link.label(), "link 15 ms measured, path 55 ms");
    assert_eq!(s.tree.link, None, "the main origin pulls from nobody");

    let v = serde_json::to_value(&s).unwrap();
    let l = &v["tree"]["children"][0]["children"][0]["link"];
    assert_eq!(l["cost_ms"], 15);
    assert_eq!(l["source"], "measured");
    assert_eq!(l["path_cost_ms"], 55);
    assert_eq!(l["from_region"], "use");
    assert_eq!(l["depth"], 2);
    assert_eq!(v["regional_origins"][1]["link"]["cost_ms"], 15);

    // Without costs (a replica predating the graph): no link at all.
    assert_eq!(
        stream_view(&tree_msg()).unwrap().tree.children[1].link,
        None
    );
}
