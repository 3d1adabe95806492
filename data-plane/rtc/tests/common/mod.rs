//! Shared by the WebRTC integration tests.

#![allow(dead_code)]

use std::time::Duration;

/// Generous bound for anything that should take milliseconds on loopback.
pub const STEP: Duration = Duration::from_secs(10);

/// WebRTC tests run only inside the loopback-only network namespace that
/// `data-plane/rtc/run-netns-tests.sh` and `scripts/test.sh` set up (they set `STRATA_NETNS=1`).
/// They are `#[ignore]`d, so a plain `cargo test` lists them as ignored; run with `--ignored`
/// outside the namespace, this guard panics so that no test ever sends packets on a real
/// interface or passes without having run.
pub fn in_netns(test: &str) {
    assert!(
        std::env::var("STRATA_NETNS").as_deref() == Ok("1"),
        "{test}: WebRTC tests only run in a loopback-only network namespace; \
         run them with data-plane/rtc/run-netns-tests.sh (sets STRATA_NETNS=1)"
    );
    init_tracing();
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
