#!/bin/sh
# Runs the strata-rtc tests, the WebRTC ones included, inside a fresh network namespace where
# only the loopback interface exists, so that no packet (not even mDNS multicast) can leave the
# machine. Without STRATA_NETNS=1, which this script sets, the WebRTC tests skip themselves
# with a loud message. Needs root or CAP_SYS_ADMIN (CI runs as root); nothing is downloaded
# inside the namespace (CARGO_NET_OFFLINE), so fetch dependencies first.
#
#   data-plane/rtc/run-netns-tests.sh                  # all strata-rtc tests
#   data-plane/rtc/run-netns-tests.sh --test webrtc    # extra arguments go to cargo test
set -eu
cd "$(dirname "$0")/../.."
exec unshare --net sh -c '
    ip link set lo up
    export STRATA_NETNS=1 CARGO_NET_OFFLINE=true
    exec cargo test -p strata-rtc "$@"
' sh "$@"
