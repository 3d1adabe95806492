//! Benchmarks behind the `strata-bench` binary, one module per subcommand.
//!
//! The pieces every benchmark shares: a closed-loop load generator ([`load`]), latency
//! statistics and formatting ([`stats`]), and a description of the machine ([`machine`]).

pub mod control;
pub mod load;
pub mod machine;
pub mod relay;
pub mod stats;
