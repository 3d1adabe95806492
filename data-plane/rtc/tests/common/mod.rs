//! Shared by the WebRTC integration tests.

#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

/// Generous bound for anything that should take milliseconds on loopback.
pub const STEP: Duration = Duration::from_secs(10);

/// WebRTC tests run only inside the loopback-only network namespace that
/// `data-plane/rtc/run-netns-tests.sh` sets up (it sets `STRATA_NETNS=1`). Elsewhere they skip,
/// loudly, so that no test ever sends packets on a real interface.
pub fn in_netns(test: &str) -> bool {
    if std::env::var("STRATA_NETNS").as_deref() == Ok("1") {
        init_tracing();
        return true;
    }
    // Written to the stderr handle rather than with eprintln!, which the test harness would
    // capture and hide for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPING {test}: WebRTC tests only run in a loopback-only network namespace.\n\
         *** Run them with data-plane/rtc/run-netns-tests.sh (sets STRATA_NETNS=1).\n"
    );
    false
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
