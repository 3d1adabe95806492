//! Benchmarks behind the `strata-bench` binary, one module per subcommand.
//!
//! The pieces every benchmark shares: a closed-loop load generator ([`load`]), latency
//! statistics and formatting ([`stats`]), per-process CPU time ([`cpu`]), and a description of
//! the machine ([`machine`]).

pub mod control;
pub mod cpu;
pub mod fanout;
pub mod ingest;
pub mod load;
pub mod machine;
pub mod relay;
pub mod scale;
pub mod stamp;
pub mod stats;
pub mod wan;
