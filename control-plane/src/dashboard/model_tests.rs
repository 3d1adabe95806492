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
