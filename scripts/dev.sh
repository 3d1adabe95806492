#!/usr/bin/env bash
# The local dev cluster: builds the binaries (dev profile) and runs strata-dev, which starts
# etcd, a control plane and nodes in two regions on 127.0.0.1, publishes a test stream, and
# prints where to play it. Ctrl-C stops everything. Arguments go to strata-dev, e.g.
#
#   scripts/dev.sh --regions eu,us,ap --nodes-per-region 2
#   scripts/dev.sh --port-base 7400 --no-publisher
#   scripts/dev.sh --help
set -euo pipefail

cd "$(dirname "$0")/.."

# etcd comes from scripts/setup.sh (Debian's etcd-server); without it strata-dev falls back
# to the control plane's memory store.
if [ -z "${STRATA_ETCD:-}" ] && ! command -v etcd >/dev/null; then
    echo "dev.sh: etcd is missing; running scripts/setup.sh"
    scripts/setup.sh
fi

cargo build -p strata-control -p strata-node -p strata-tests --bins
exec target/debug/strata-dev "$@"
