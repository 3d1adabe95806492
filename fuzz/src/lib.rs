//! Fuzz target bodies. `bodies.rs` is also compiled into the workspace test
//! `tests/tests/fuzz_corpus.rs`, which runs every target over its seed corpus
//! in CI without a fuzzer.

mod bodies;

pub use bodies::*;
