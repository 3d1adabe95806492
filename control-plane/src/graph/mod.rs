//! The region graph: link costs between regions and the choice of each
//! regional origin's upstream (the main origin or a nearer region that
//! already carries the stream). Pure: the routing service reads the
//! records and costs, asks here, and claims with the chain as its guard.

pub mod choice;
pub mod costs;

pub use choice::{Choice, Graph};
pub use costs::{Costs, Measured, Source, UNKNOWN_COST_MS};
