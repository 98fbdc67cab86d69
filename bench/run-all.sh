#!/usr/bin/env bash
# run-all.sh - chatd's whole benchmark suite, in one command.
#
#   bash bench/run-all.sh
#
# 1. scripts/install-deps.sh --bench (wrk, nginx-light, curl and the build
#    dependencies; quiet when all are there, needs root or sudo otherwise).
# 2. bench/streams.sh with N = STREAMS_N ("100 1000 9000"): concurrent
#    streams against the mock, and the mock alone as the floor.
# 3. bench/http.sh: req/s against nginx, idle RSS, start-up time.
# 4. bench/export.sh: export throughput and memory against the sqlite3 shell.
#
# Each prints its table as it finishes (details on stderr); at the end all
# tables are printed again together, and one JSON file,
# $RESULTS_DIR/all-<date>.json, holds every figure: each benchmark's own
# JSON (the same as it writes when run alone) under "streams", "http" and
# "export", with the exit status and seconds of each. The three are not
# written separately. About 5-6 minutes on 2 cores (plus ~20 s the first
# time, when export.sh writes its data files); each benchmark has a time
# limit (STREAMS_LIMIT 600 s, HTTP_LIMIT 600 s, EXPORT_LIMIT 1200 s) after
# which it is stopped and counted as failed. Exit status: 0 when all three
# succeeded, else 1. Settings of the three scripts (BUILD_DIR, DURATION,
# REPS, ...) pass through the environment; SKIP="export" (any of streams,
# http, export) leaves benchmarks out.
set -uo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
BENCH_NAME=run-all.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"

STREAMS_N=${STREAMS_N:-"100 1000 9000"}
STREAMS_LIMIT=${STREAMS_LIMIT:-600}
HTTP_LIMIT=${HTTP_LIMIT:-600}
EXPORT_LIMIT=${EXPORT_LIMIT:-1200}
SKIP=${SKIP:-}
RESULTS=${RESULTS_DIR:-bench/results}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/chatd-run-all.XXXXXX")
RUN_PID=
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    # timeout passes the TERM on to the benchmark, whose own trap cleans up
    stop_pid "$RUN_PID"
    rm -rf "$TMP"
}
bench_traps cleanup

DATE=$(date -u +%Y%m%d-%H%M%S)
COMMIT=$(bench_commit)
T_ALL=$SECONDS

say "installing the benchmark dependencies (scripts/install-deps.sh --bench)"
scripts/install-deps.sh --bench || die "scripts/install-deps.sh --bench failed"

declare -A RC SECS FILE
NAMES=(streams http export)

# run NAME LIMIT SCRIPT [ARGS...]: one benchmark, its stdout also kept in
# $TMP/NAME.out, its JSON written into $TMP/results.
run() {
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    if [[ " $SKIP " == *" $name "* ]]; then
        say "$name: skipped (SKIP)"
        RC[$name]=skipped SECS[$name]=0 FILE[$name]=""
        return
    fi
    say "$name: bash $* (time limit $limit s)"
    mkdir -p "$TMP/results"
    RESULTS_DIR="$TMP/results" timeout -k 30 "$limit" bash "$@" >"$TMP/$name.out" &
    RUN_PID=$!
    # the table as it comes
    tail -n +1 -f --pid="$RUN_PID" "$TMP/$name.out" 2>/dev/null &
    local tail_pid=$! rc=0
    wait "$RUN_PID" || rc=$?
    RUN_PID=
    wait "$tail_pid" 2>/dev/null || true
    [ "$rc" != 124 ] || say "$name: stopped after its time limit of $limit s"
    RC[$name]=$rc
    SECS[$name]=$((SECONDS - t0))
    FILE[$name]=$(sed -n 's/^results: //p' "$TMP/$name.out" | tail -n 1)
    say "$name: exit status $rc after ${SECS[$name]} s"
}

# shellcheck disable=SC2086 # STREAMS_N is a list
run streams "$STREAMS_LIMIT" bench/streams.sh $STREAMS_N
run http "$HTTP_LIMIT" bench/http.sh
run export "$EXPORT_LIMIT" bench/export.sh

# --- all tables again, and the combined JSON ---------------------------------------
echo
echo "================ chatd benchmark suite, commit $COMMIT, $(nproc) cpus, $(((SECONDS - T_ALL) / 60)) min $(((SECONDS - T_ALL) % 60)) s"
ANY_FAIL=0
PARTS=""
STATUS=""
for n in "${NAMES[@]}"; do
    echo
    echo "---------------- $n (exit status ${RC[$n]}, ${SECS[$n]} s)"
    [ ! -s "$TMP/$n.out" ] || grep -v '^results: ' "$TMP/$n.out"
    [ "${RC[$n]}" = 0 ] || [ "${RC[$n]}" = skipped ] || ANY_FAIL=1
    f=${FILE[$n]}
    if [ -n "$f" ] && [ -s "$f" ]; then
        PARTS+=",
 \"$n\": $(cat "$f")"
    else
        PARTS+=",
 \"$n\": null"
    fi
    rc=${RC[$n]}
    [ "$rc" != skipped ] || rc=null
    STATUS+="${STATUS:+, }\"$n\": {\"exit_status\": $rc, \"seconds\": ${SECS[$n]}}"
done

CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1 | sed 's/["\\]//g')
MEM_KB=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
mkdir -p "$RESULTS"
OUT="$RESULTS/all-$DATE.json"
cat >"$OUT" <<EOF
{"benchmark": "all", "date": "$DATE", "commit": "$COMMIT",
 "machine": {"cpus": $(nproc), "cpu_model": "$CPU_MODEL", "mem_kb": $MEM_KB, "kernel": "$(uname -r)"},
 "seconds": $((SECONDS - T_ALL)),
 "runs": {$STATUS}$PARTS}
EOF
echo
echo "results: $OUT"
exit "$ANY_FAIL"
