#!/usr/bin/env bash
# streams.sh - chatd's concurrent-stream benchmark, in one command.
#
#   bash bench/streams.sh            # N = 100 1000 9000
#   bash bench/streams.sh 100 1000   # any list of N
#
# Builds chatd, mock-llm and streamload (RelWithDebInfo, in build-bench/), starts
# the mock once, and for each N starts a fresh chatd (so VmHWM, the peak
# RSS, is per N), records its idle RSS, then lets bench/streamload open N
# concurrent POST /api/chat-stream requests of TOKENS stamped tokens
# DELAY_MS apart (tools/MOCK.md, `mock:stamp`). Reported per N: completed
# and failed streams, time to first token, added delay per token (client
# arrival minus the mock's stamp), chatd's peak RSS and CPU seconds
# (utime+stime delta from /proc/PID/stat) and the mock's CPU seconds.
# Unless REFERENCE=0, each N is also run against the mock alone
# (streamload --raw-openai): the floor that chatd's figures compare to.
#
# Environment: TOKENS (100), DELAY_MS (50), RAMP (2000 connections/s),
# BUILD_DIR (build-bench), BUILD_TYPE (RelWithDebInfo), REFERENCE (1),
# RESULTS_DIR (bench/results). Results: a table on stdout and
# $RESULTS_DIR/streams-<date>.json. All processes and temp files are
# removed on exit. Targets 127.0.0.1 only. Needs bash, cmake, a C compiler
# and the libraries of scripts/install-deps.sh; no python, no jq.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH_NAME=streams.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"

TOKENS=${TOKENS:-100}
DELAY_MS=${DELAY_MS:-50}
RAMP=${RAMP:-2000}
BUILD=${BUILD_DIR:-build-bench}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
REFERENCE=${REFERENCE:-1}
if [ $# -gt 0 ]; then NS=("$@"); else NS=(100 1000 9000); fi
for n in "${NS[@]}"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "streams.sh: N must be a positive integer, not '$n'" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/chatd-bench.XXXXXX")
MOCK_PID=
CHATD_PID=
LOAD_PID=

bench_traps bench_cleanup

# SYNs or connections the kernel dropped because a listen backlog was full
# (TcpExt ListenDrops, machine-wide): the ramp is meant to keep this at 0.
listen_drops() {
    awk '/^TcpExt:/ {
             if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 }
             else for (i = 2; i <= NF; i++) if (k[i] == "ListenDrops") print $i
         }' /proc/net/netstat
}

# secs and mb truncate here (lib.sh's round), as this script's tables always
# have; lib.sh's thread_cpu uses this secs.
secs() { # ticks -> seconds with 2 decimals
    local t=$1
    printf '%d.%02d' $((t / CLK_TCK)) $(((t % CLK_TCK) * 100 / CLK_TCK))
}

mb() { # kB -> MB with 1 decimal
    printf '%d.%d' $(($1 / 1024)) $((($1 % 1024) * 10 / 1024))
}

# --- build -------------------------------------------------------------------
bench_build "$BUILD" "$BUILD_TYPE" "$TMP/build.log"

# Each stream costs chatd two fds and the mock and streamload one each:
# children inherit the raised soft limit (streamload also raises its own).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

# --- mock --------------------------------------------------------------------
"$BUILD/mock-llm" --port 0 --quiet >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
MOCK_PORT=$(wait_port "$TMP/mock.out" "$MOCK_PID") || {
    cat "$TMP/mock.err" >&2
    die "mock-llm did not start"
}

start_chatd() {
    rm -f "$TMP"/bench.db*
    : >"$TMP/chatd.err"
    "$BUILD/chatd" --host 127.0.0.1 --port 0 --db "sqlite:$TMP/bench.db" \
        --llm-url "http://127.0.0.1:$MOCK_PORT/v1" --cache-size 0 --log-level warn \
        --export-dir "$TMP/exports" \
        >"$TMP/chatd.out" 2>"$TMP/chatd.err" &
    CHATD_PID=$!
    CHATD_PORT=$(wait_port "$TMP/chatd.err" "$CHATD_PID") || {
        cat "$TMP/chatd.err" >&2
        die "chatd did not start"
    }
}

# streamload with this run's N and schedule, plus the arguments given. It
# runs in the background so that a signal reaches the trap at once.
run_load() {
    "$BUILD/streamload" -n "$N" --tokens "$TOKENS" --delay-ms "$DELAY_MS" --ramp "$RAMP" \
        --timeout "$TIMEOUT" "$@" &
    LOAD_PID=$!
    wait "$LOAD_PID" || true
    LOAD_PID=
}

# --- runs --------------------------------------------------------------------
DATE=$(date -u +%Y%m%d-%H%M%S)
COMMIT=$(bench_commit)
ROWS=()
REFROWS=()
RUNS_JSON=""
ANY_FAIL=0

for N in "${NS[@]}"; do
    TIMEOUT=$((N / RAMP + TOKENS * DELAY_MS / 1000 + 30))
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$TMP/mock.err" >&2; die "mock-llm died"; }

    # Other work on the machine skews every figure here: measure how busy
    # it is for a second before the run, and record it.
    IDLE_BUSY_PCT=$(busy_pct)
    if [ "$IDLE_BUSY_PCT" -gt 10 ]; then
        echo "streams.sh: warning: the machine is ${IDLE_BUSY_PCT}% busy before N=$N:" \
            "other processes will skew the figures" >&2
    fi
    start_chatd
    sleep 0.5
    IDLE_KB=$(vm_kb "$CHATD_PID" VmRSS)
    C0=$(cpu_ticks "$CHATD_PID")
    M0=$(cpu_ticks "$MOCK_PID")
    read -r B0 T0 I0 <<<"$(machine_ticks)"
    D0=$(listen_drops)
    echo "streams.sh: N=$N against chatd (port $CHATD_PORT, idle RSS $(mb "$IDLE_KB") MB)" >&2
    run_load --port "$CHATD_PORT" --json --progress >"$TMP/load.out" 2>"$TMP/load.err"
    read -r B1 T1 I1 <<<"$(machine_ticks)"
    DROPS=$(($(listen_drops) - D0))
    if kill -0 "$CHATD_PID" 2>/dev/null; then
        C1=$(cpu_ticks "$CHATD_PID")
        HWM_KB=$(vm_kb "$CHATD_PID" VmHWM)
        RSS_KB=$(vm_kb "$CHATD_PID" VmRSS)
        THREADS=$(thread_cpu "$CHATD_PID")
        ALIVE=true
    else
        C1=$C0 HWM_KB=0 RSS_KB=0 THREADS="" ALIVE=false
    fi
    M1=$(cpu_ticks "$MOCK_PID")
    MOCK_CPU=$(secs $((M1 - M0)))
    CHATD_CPU=$(secs $((C1 - C0)))
    BUSY_PCT=$(((B1 - B0) * 100 / (T1 - T0 > 0 ? T1 - T0 : 1)))
    stop_pid "$CHATD_PID"
    CHATD_PID=
    LOG_LINES=$(wc -l <"$TMP/chatd.err")

    LOAD=$(grep '^{' "$TMP/load.out" | tail -n 1 || true)
    grep -v '^{' "$TMP/load.out" >&2 || true
    [ -n "$LOAD" ] || { cat "$TMP/load.err" >&2; LOAD="null"; }
    # CPU the machine spent on anything but chatd, the mock and streamload
    LOADER_TICKS=$(awk -v s="$(jget "$LOAD" loader_cpu_s)" -v hz="$CLK_TCK" \
        'BEGIN { printf "%d", (s == "-" ? 0 : s) * hz }')
    IRQ_CPU=$(secs $((I1 - I0)))
    OTHER_TICKS=$((B1 - B0 - (I1 - I0) - (C1 - C0) - (M1 - M0) - LOADER_TICKS))
    [ "$OTHER_TICKS" -ge 0 ] || OTHER_TICKS=0
    OTHER_CPU=$(secs "$OTHER_TICKS")
    echo "streams.sh: N=$N: machine busy ${BUSY_PCT}% of $(nproc) cpus during the run" \
        "(${IDLE_BUSY_PCT}% before it); irq+softirq ${IRQ_CPU} cpu-s; ${OTHER_CPU} cpu-s not" \
        "attributed to chatd, mock or streamload; listen drops $DROPS;" \
        "chatd threads (cpu s): $THREADS" >&2
    if [ "$(jget "$LOAD" failed)" != 0 ] || [ "$ALIVE" != true ]; then
        ANY_FAIL=1
        echo "streams.sh: N=$N: failures or a dead chatd; streamload progress:" >&2
        tail -n 15 "$TMP/load.err" >&2
    fi
    if [ "$LOG_LINES" -gt 0 ]; then
        echo "streams.sh: N=$N: chatd wrote $LOG_LINES lines to stderr; the first 20:" >&2
        head -n 20 "$TMP/chatd.err" >&2
    fi
    ROWS+=("$(printf '%6s %9s %6s %9s %9s %9s %9s %8s %8s %8s %8s %6s %5s %5s %7s' "$N" \
        "$(jget "$LOAD" completed)" "$(jget "$LOAD" failed)" \
        "$(j2 "$LOAD" ttft_ms_p50)" "$(j2 "$LOAD" ttft_ms_p99)" \
        "$(j2 "$LOAD" delay_ms_p50)" "$(j2 "$LOAD" delay_ms_p99)" \
        "$(mb "$IDLE_KB")" "$(mb "$HWM_KB")" "$CHATD_CPU" "$MOCK_CPU" \
        "$ALIVE" "$IDLE_BUSY_PCT" "$BUSY_PCT" "$OTHER_CPU")")

    REF="null"
    REF_MOCK_CPU=null
    if [ "$REFERENCE" = 1 ]; then
        M0=$(cpu_ticks "$MOCK_PID")
        echo "streams.sh: N=$N against the mock alone (reference)" >&2
        run_load --raw-openai --port "$MOCK_PORT" --json >"$TMP/ref.out" 2>"$TMP/ref.err"
        M1=$(cpu_ticks "$MOCK_PID")
        REF=$(grep '^{' "$TMP/ref.out" | tail -n 1 || true)
        [ -n "$REF" ] || { cat "$TMP/ref.err" >&2; REF="null"; }
        REF_MOCK_CPU=$(secs $((M1 - M0)))
        REFROWS+=("$(printf '%6s %9s %6s %9s %9s %9s %9s %8s %10s' "$N" \
            "$(jget "$REF" completed)" "$(jget "$REF" failed)" \
            "$(j2 "$REF" ttft_ms_p50)" "$(j2 "$REF" ttft_ms_p99)" \
            "$(j2 "$REF" delay_ms_p50)" "$(j2 "$REF" delay_ms_p99)" \
            "$REF_MOCK_CPU" "$(jget "$REF" loader_cpu_s)")")
    fi

    RUNS_JSON+="${RUNS_JSON:+,
    }{\"n\": $N, \"chatd_idle_rss_kb\": $IDLE_KB, \"chatd_peak_rss_kb\": $HWM_KB"
    RUNS_JSON+=", \"chatd_rss_after_kb\": $RSS_KB, \"chatd_cpu_s\": $CHATD_CPU"
    RUNS_JSON+=", \"mock_cpu_s\": $MOCK_CPU"
    RUNS_JSON+=", \"machine_busy_pct_before\": $IDLE_BUSY_PCT, \"machine_busy_pct\": $BUSY_PCT"
    RUNS_JSON+=", \"listen_drops\": $DROPS, \"irq_cpu_s\": $IRQ_CPU, \"other_cpu_s\": $OTHER_CPU, \"chatd_threads_cpu_s\": \"$THREADS\""
    RUNS_JSON+=", \"chatd_alive_after\": $ALIVE, \"chatd_stderr_lines\": $LOG_LINES"
    RUNS_JSON+=",
     \"load\": $LOAD,
     \"reference_mock_only\": $REF, \"reference_mock_cpu_s\": $REF_MOCK_CPU}"
done

# --- report ------------------------------------------------------------------
echo
echo "chatd streams: $TOKENS tokens ${DELAY_MS} ms apart per stream, ramp $RAMP/s, $(nproc) cpus," \
    "commit $COMMIT, $BUILD_TYPE build"
printf '%6s %9s %6s %9s %9s %9s %9s %8s %8s %8s %8s %6s %5s %5s %7s\n' N completed failed \
    "ttft p50" "ttft p99" "add p50" "add p99" "idle MB" "peak MB" "chatd s" "mock s" alive \
    busy% busy% "other s"
printf '%6s %9s %6s %9s %9s %9s %9s %8s %8s %8s %8s %6s %5s %5s %7s\n' "" "" "" ms ms ms/token \
    ms/token RSS VmHWM cpu cpu "" before run cpu
printf '%s\n' "${ROWS[@]}"
if [ "$REFERENCE" = 1 ]; then
    echo
    echo "reference: the same load against the mock alone (no chatd)"
    printf '%6s %9s %6s %9s %9s %9s %9s %8s %10s\n' N completed failed \
        "ttft p50" "ttft p99" "add p50" "add p99" "mock s" "loader s"
    printf '%s\n' "${REFROWS[@]}"
fi

RESULTS=${RESULTS_DIR:-bench/results}
mkdir -p "$RESULTS"
OUT="$RESULTS/streams-$DATE.json"
cat >"$OUT" <<EOF
{"benchmark": "streams", "date": "$DATE", "commit": "$COMMIT", "build_type": "$BUILD_TYPE",
 "machine": {"cpus": $(nproc), "kernel": "$(uname -r)", "nofile": $NOFILE},
 "tokens": $TOKENS, "delay_ms": $DELAY_MS, "ramp": $RAMP,
 "runs": [
    $RUNS_JSON
 ]}
EOF
echo
echo "results: $OUT"
exit "$ANY_FAIL"
