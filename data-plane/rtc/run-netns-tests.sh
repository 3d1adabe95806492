#!/bin/sh
# Runs the strata-rtc tests, the WebRTC ones included, inside a fresh network namespace where
# only the loopback interface exists, so that no packet (not even mDNS multicast) can leave the
# machine. The WebRTC tests are #[ignore]d (a plain `cargo test` lists them as ignored) and
# panic if run with --ignored outside a namespace; this script sets STRATA_NETNS=1 and passes
# --include-ignored, so unit tests and WebRTC tests all run. Needs root or CAP_SYS_ADMIN (CI
# runs as root); nothing is downloaded inside the namespace (CARGO_NET_OFFLINE), so fetch
# dependencies first.
#
#   data-plane/rtc/run-netns-tests.sh                  # all strata-rtc tests
#   data-plane/rtc/run-netns-tests.sh --test webrtc    # extra arguments go to cargo test
set -eu
cd "$(dirname "$0")/../.."
exec unshare --net sh -c '
    ip link set lo up
    export STRATA_NETNS=1 CARGO_NET_OFFLINE=true
    # --include-ignored goes to the test binary: after any "--" given by the caller.
    case " $* " in
        *" -- "*) set -- "$@" --include-ignored ;;
        *) set -- "$@" -- --include-ignored ;;
    esac
    exec cargo test -p strata-rtc "$@"
' sh "$@"
