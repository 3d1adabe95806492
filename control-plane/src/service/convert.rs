//! Records to API messages.

use strata_proto::v1;

use crate::cache::{StreamState, Versioned, View};
use crate::keys::{LoadRecord, MainRecord, NodeRecord, RegionalRecord, StandbyRecord};

pub(crate) fn node_info(n: &NodeRecord) -> v1::NodeInfo {
    v1::NodeInfo {
        id: n.id.clone(),
        region: n.region.clone(),
        relay_addr: n.relay_addr.clone(),
        http_url: n.http_url.clone(),
        capacity: n.capacity,
        version: n.version.clone(),
    }
}

pub(crate) fn load(l: &LoadRecord) -> v1::Load {
    v1::Load {
        streams: l.streams,
        players: l.players,
        publishers: l.publishers,
        egress_bps: l.egress_bps,
        cpu: l.cpu,
        stream_players: l
            .stream_players
            .iter()
            .map(|p| v1::StreamPlayers {
                stream: p.stream.clone(),
                players: p.players,
                low: p.layers[0],
                mid: p.layers[1],
                high: p.layers[2],
                region: String::new(),
            })
            .collect(),
    }
}

pub(crate) fn node(n: &NodeRecord, l: Option<&LoadRecord>) -> v1::Node {
    v1::Node {
        info: Some(node_info(n)),
        load: l.map(load),
        draining: n.draining,
        lease_id: n.lease,
        registered_at_ms: n.registered_at_ms,
    }
}

pub(crate) fn main_origin(stream: &str, m: &Versioned<MainRecord>) -> v1::MainOrigin {
    v1::MainOrigin {
        stream: stream.to_owned(),
        node_id: m.value.node_id.clone(),
        region: m.value.region.clone(),
        relay_addr: m.value.relay_addr.clone(),
        epoch: m.epoch(),
        started_at_ms: m.value.started_at_ms,
    }
}

pub(crate) fn regional(
    stream: &str,
    region: &str,
    r: &Versioned<RegionalRecord>,
) -> v1::RegionalOrigin {
    v1::RegionalOrigin {
        stream: stream.to_owned(),
        region: region.to_owned(),
        node_id: r.value.node_id.clone(),
        relay_addr: r.value.relay_addr.clone(),
        epoch: r.epoch(),
        upstream_node_id: r.value.upstream_node_id.clone(),
        upstream_region: r.value.upstream_region.clone().unwrap_or_default(),
        depth: r.value.depth,
        // Costs are filled by the routing service, which knows them.
        ..Default::default()
    }
}

/// A stream's tree with its players per region and layer (from the view's load records):
/// what `GetStream`, `ListStreams` and the dashboard show.
pub(crate) fn tree_with_players(
    view: &View,
    stream: &str,
    s: &StreamState,
) -> Option<v1::StreamTree> {
    let mut tree = tree(stream, s, view.standbys.get(stream).map(|b| &**b))?;
    tree.players = super::stream_players::by_region(view, stream);
    Some(tree)
}

pub(crate) fn tree(
    stream: &str,
    s: &StreamState,
    standby: Option<&Versioned<StandbyRecord>>,
) -> Option<v1::StreamTree> {
    let main = s.main.as_ref()?;
    Some(v1::StreamTree {
        main: Some(main_origin(stream, main)),
        regional: s
            .regions
            .iter()
            .map(|(region, r)| regional(stream, region, r))
            .collect(),
        subscribers: {
            let mut subs: Vec<v1::Subscriber> = s
                .subscribers
                .iter()
                .map(|(node, sub)| v1::Subscriber {
                    stream: stream.to_owned(),
                    region: sub.value.region.clone(),
                    node_id: node.clone(),
                    upstream_node_id: sub.value.upstream_node_id.clone(),
                })
                .collect();
            subs.sort_by(|a, b| (&a.region, &a.node_id).cmp(&(&b.region, &b.node_id)));
            subs
        },
        standby: standby.map(|b| super::routing::standby_origin(stream, b)),
        // From the load records: `tree_with_players`.
        players: Vec::new(),
    })
}
