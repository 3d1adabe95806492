//! What both Strata binaries need in the same form: the HTTP server loop with
//! its limits (header timeout, connection cap, per-address share of the cap),
//! configuration loading (a TOML file under environment variables under
//! flags), what a cluster certificate says about its holder (`cert`), and
//! the rule for stream, region and node names (`names`), and the WHIP/WHEP HTTP
//! conventions (CORS, preflight, bearer tokens: `http`), how metrics are exposed
//! (`metrics`), and the exponential backoff of reconnecting loops (`backoff`).
//!
//! Kept small on purpose: code lands here only when the control plane and the
//! node would otherwise each carry a copy.

pub mod backoff;
pub mod cert;
pub mod config;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod names;
