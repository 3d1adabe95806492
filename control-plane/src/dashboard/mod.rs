//! The operator's view of the cluster: the JSON model served at
//! `GET /api/v1/topology` (and printed by `strata-control … --json`), and the
//! self-contained dashboard page that polls it.

pub mod model;
mod players;
mod tree;

pub use model::{
    LinkView, LoadView, MainView, NodeView, RegionPlayers, RegionSummary, RegionalView, Role,
    StreamView, SubscriberView, Topology, TreeNode,
};

/// The dashboard page: one HTML file with inline CSS and JavaScript, no
/// external assets. It polls `/api/v1/topology` every second and renders
/// every value with `textContent`.
pub const PAGE: &str = include_str!("dashboard.html");
