//! Strata integration harness.

pub mod bench;
pub mod child;
pub mod cluster;
pub mod control;
pub mod dirs;
pub mod etcd;
pub mod faults;
pub mod grpcurl;
pub mod holes;
pub mod http;
pub mod media;
pub mod ports;
pub mod procs;
pub mod promtool;
pub mod pushback;
pub mod rtmp;
pub mod shaper;
pub mod wait;

/// Installs a test-writer tracing subscriber for the test binary (`RUST_LOG` overrides
/// `default_filter`); later calls are no-ops.
pub fn init_test_tracing(default_filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_test_writer()
        .try_init();
}
