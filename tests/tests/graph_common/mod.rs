//! What the region-graph suites (`control_plane_graph.rs`, `control_plane_links.rs`)
//! share: the graph service's client, pinning costs, and nodes kept alive.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use strata_proto::v1;
use strata_proto::v1::graph_service_client::GraphServiceClient;
use strata_tests::control::{Clients, ControlPlane};
use tonic::transport::Channel;

use crate::control_plane_common::{AbortOnDrop, keep_alive};

pub async fn graph(cp: &ControlPlane) -> GraphServiceClient<Channel> {
    GraphServiceClient::new(cp.channel().await.unwrap())
}

pub async fn pin(g: &mut GraphServiceClient<Channel>, from: &str, to: &str, cost_ms: i64) {
    let req = v1::SetLinkCostRequest {
        from_region: from.into(),
        to_region: to.into(),
        cost_ms,
        unpin: false,
    };
    g.set_link_cost(req).await.unwrap();
}

/// The WAN bench's shape: r1 (main) –40– r2 –15– r3, r1 –85– r3.
pub async fn pin_wan(g: &mut GraphServiceClient<Channel>) {
    pin(g, "r1", "r2", 40).await;
    pin(g, "r2", "r3", 15).await;
    pin(g, "r1", "r3", 85).await;
}

pub async fn register_all(c: &mut Clients, nodes: &[(&str, &str)]) -> AbortOnDrop {
    let mut leases = Vec::new();
    for (n, r) in nodes {
        leases.push((n.to_string(), c.register(n, r).await.unwrap().lease_id));
    }
    keep_alive(c.clone(), leases)
}
