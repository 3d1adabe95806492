//! Groups, sans IO.
//!
//! - [`GroupPlanner`] (sender): when a new group starts and which superseded
//!   groups to give up on.
//! - [`GroupOrder`] (receiver): deliver groups in order, holding back newer
//!   groups for a short while so that the tail of the previous one, arriving
//!   late on its own QUIC stream, is still played.
//! - [`HeadGate`] (receiver, in front of `GroupOrder`): a group's keyframe
//!   goes on whole or not at all.

mod head;
mod order;
mod planner;

pub use head::{HeadFrame, HeadGate, HeadLimits, HeadOut};
pub use order::{GroupOrder, OrderLimits};
pub use planner::{GroupPlanner, PacketPlan};
