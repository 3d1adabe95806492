#!/usr/bin/env bash
# Runs every Strata benchmark this machine can run and prints their tables (markdown).
#
#   bench/run.sh                 # release build, full runs (about 15–25 minutes on 2 cores)
#   bench/run.sh --quick         # smoke runs: seconds each (what CI does, in debug)
#   bench/run.sh fanout wan      # only these subcommands (any of: control relay fanout wan ingest)
#
# Builds `--release` once (strata-bench, strata-node, strata-control), then runs
# `strata-bench control`, `relay` (when this build has it), `fanout`, `wan` and `ingest` in turn. A
# benchmark that cannot run here says "skipped: …" and the others go on; the exit status is
# non-zero only if one failed. The whole report is also written to $STRATA_BENCH_OUT
# (default: a file in the temp dir, whose path is printed at the end).
#
# What the benchmarks need (each one checks for itself):
#   fanout  Janus for the comparison (apt-get install -y janus), ffmpeg for the 2 Mbit/s
#           720p source (otherwise the committed 600 kbit/s fixture), root for Janus's extra
#           interface; perf for --perf profiles. Runs in a private network namespace.
#   wan     root and iproute2 (network namespaces, veth pairs).
#   ingest  ffmpeg (libx264, AAC, libsrt) for the RTMP/SRT CPU runs; root for its private
#           network namespace (otherwise it runs on loopback in the host's).
# Heavy runs want a quiet machine: the load average is printed before each one.
set -uo pipefail

cd "$(dirname "$0")/.."

quick=()
only=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        control | relay | fanout | wan | ingest) only+=("$arg") ;;
        -h | --help)
            sed -n '2,20p' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

profile=(--release)
dir=target/release
if [ ${#quick[@]} -gt 0 ]; then
    profile=()
    dir=target/debug
fi
# A shared CARGO_TARGET_DIR is honoured.
[ -n "${CARGO_TARGET_DIR:-}" ] && dir="$CARGO_TARGET_DIR/${dir#target/}"

echo "==> building (${profile[*]:-debug}) strata-bench, strata-node, strata-control" >&2
cargo build "${profile[@]}" -p strata-tests -p strata-node -p strata-control --bins >&2 || exit 1
case "$dir" in
    /*) ;;
    *) dir="$PWD/$dir" ;;
esac
bench="$dir/strata-bench"
export STRATA_BIN_DIR="$dir"

out="${STRATA_BENCH_OUT:-$(mktemp -t strata-bench-report.XXXXXX.md)}"
: >"$out"

available=$("$bench" --help)
subcommands=(control relay fanout wan ingest)
[ ${#only[@]} -gt 0 ] && subcommands=("${only[@]}")

{
    echo "# Strata benchmarks"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r)"
    echo "Command: bench/run.sh $*"
} | tee -a "$out"

failed=()
for sub in "${subcommands[@]}"; do
    if ! grep -qE "^  $sub( |$)" <<<"$available"; then
        printf '\n## %s\n\nskipped: this build of strata-bench has no `%s` subcommand\n' "$sub" "$sub" | tee -a "$out"
        continue
    fi
    echo >&2
    echo "==> strata-bench $sub ${quick[*]:-} (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    start=$SECONDS
    printf '\n## strata-bench %s\n\n' "$sub" | tee -a "$out"
    if "$bench" "$sub" "${quick[@]}" | tee -a "$out"; then
        echo "==> $sub: ok ($((SECONDS - start)) s)" >&2
    else
        echo "==> $sub: FAILED ($((SECONDS - start)) s)" >&2
        echo "FAILED" | tee -a "$out"
        failed+=("$sub")
    fi
done

echo >&2
echo "report written to $out" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
