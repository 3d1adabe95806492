#!/usr/bin/env bash
# Strata's test command: the one the README names, and what CI runs (.ci/run).
#
#   1. scripts/setup.sh --browser       install what is missing (fast no-op otherwise)
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo build --workspace --bins  the binaries the process-level tests start
#   5. cargo test --workspace           netns_ tests are #[ignore]d, so they show as ignored
#   6. the ignored netns_ tests (--ignored netns_), inside a loopback-only network namespace
#   7. scripts/check-deploy.sh          offline checks of deploy/ and docs/operations.md
#
# Network-namespace convention
#   A test that must not run on the machine's real network (WebRTC stacks, browsers: anything
#   that might send mDNS or other packets off the machine) is named with the prefix `netns_`,
#   is marked `#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]` and
#   starts with
#       strata_tests::ports::require_netns("netns_my_test");
#   (strata-rtc's tests: `common::in_netns`), which panics unless STRATA_NETNS=1. So a plain
#   `cargo test` reports these tests as ignored, never as passed, and `--ignored` outside the
#   namespace fails loudly. Step 5 runs everything else; step 6 runs
#   `cargo test ... -- --ignored netns_` (a substring filter, not --exact) under `unshare -n`
#   with only `lo` up and STRATA_NETNS=1, so every packet stays on 127.0.0.1. Only netns_ tests
#   may be #[ignore]d: step 6 runs every ignored test whose name contains netns_.
#   Step 6 runs `--offline`: the namespace has no network, and steps 4 and 5 built everything.
#
#   The tests that start real processes (the operator CLI, the process cluster, failover,
#   chaos, strata-dev) run the `strata-control` and `strata-node` binaries from the target
#   directory; `cargo test` builds binaries only for its own package's tests, so step 4
#   builds them first.
#
# Every step uses the default dev/test profile, so nothing is built twice. All steps run even
# after a failure; the exit status is non-zero if any failed. The last line is a summary:
# "summary: N passed, N failed" over all cargo test binaries.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "${CI:-}" = true ]; then
    # Clean one-off builds: incremental caches only cost time and disk.
    export CARGO_INCREMENTAL=0 CARGO_TERM_COLOR=never
fi
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

log="$(mktemp -t strata-test.XXXXXX)"
trap 'rm -f "$log"' EXIT

failed_steps=()
step() {
    local name="$1"
    shift
    echo "==> $name: $*"
    local start=$SECONDS
    if "$@"; then
        echo "==> $name: ok ($((SECONDS - start)) s)"
    else
        echo "==> $name: FAILED ($((SECONDS - start)) s)"
        failed_steps+=("$name")
    fi
}

# Runs cargo test, keeping its output for the summary.
cargo_test() {
    "$@" 2>&1 | tee -a "$log"
}

# Runs "$@" in a fresh network namespace that has only `lo`, up.
in_netns() {
    local unshare=(unshare -n)
    # Without root, a user namespace grants what creating the network namespace needs.
    [ "$(id -u)" -eq 0 ] || unshare=(unshare -r -n)
    "${unshare[@]}" env STRATA_NETNS=1 sh -c 'ip link set lo up && exec "$@"' sh "$@"
}

step setup scripts/setup.sh --browser
if [ "${#failed_steps[@]}" -gt 0 ]; then
    echo "test.sh: setup failed; nothing else can run"
    exit 1
fi
step fmt cargo fmt --all -- --check
step module-cycles scripts/check-module-cycles.py
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace --bins
step test cargo_test cargo test --workspace --no-fail-fast
step netns-test cargo_test in_netns \
    cargo test --workspace --offline --tests --no-fail-fast -- --ignored netns_
step deploy scripts/check-deploy.sh

read -r passed failed < <(awk '
    /^test result:/ {
        for (i = 2; i <= NF; i++) {
            if ($i == "passed;") p += $(i - 1)
            if ($i == "failed;") f += $(i - 1)
        }
    }
    END { print p + 0, f + 0 }' "$log")

if [ "${#failed_steps[@]}" -gt 0 ]; then
    echo "test.sh: FAILED steps: ${failed_steps[*]}"
    echo "summary: $passed passed, $failed failed"
    exit 1
fi
echo "test.sh: all steps passed"
echo "summary: $passed passed, $failed failed"
