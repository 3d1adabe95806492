//! Groups, sans IO.
//!
//! - [`GroupPlanner`] (sender): when a new group starts and which superseded
//!   groups to give up on.
//! - [`GroupOrder`] (receiver): deliver groups in order, holding back newer
//!   groups for a short while so that the tail of the previous one, arriving
//!   late on its own QUIC stream, is still played.

mod order;
mod planner;

pub use order::{GroupOrder, OrderLimits};
pub use planner::{GroupPlanner, PacketPlan};
