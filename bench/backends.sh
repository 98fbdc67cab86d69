#!/usr/bin/env bash
# backends.sh - chatd on SQLite, PostgreSQL and MariaDB, side by side, in
# one command.
#
#   bash bench/backends.sh           # about 7 minutes on 2 cores
#
# Builds chatd, mock-llm and streamload (bench/lib.sh's build-bench/),
# then runs itself again (--inner) under tests/db/with-postgres.sh and
# tests/db/with-mariadb.sh, which start a throwaway PostgreSQL and MariaDB
# server on 127.0.0.1 (fsync off / log flushed once a second: see those
# scripts) and remove them afterwards. The three backends: a SQLite file in
# the temp dir, $CHATD_TEST_PG_URL and $CHATD_TEST_MYSQL_URL. Every phase
# starts from empty tables (dropped, then created by chatd) and fresh
# chatds; the backends are measured in the same run, interleaved where
# the phase allows, so that the machine's noise falls on all three.
#
# 1. Throughput (as bench/http.sh): one chatd per backend, with a mock-llm
#    (--delay-ms 0) upstream; each gets a conversation of 20 messages (10
#    chats of `mock:tokens=20`) and a cached question (asked once in a new
#    conversation; repeats are cache hits, each of which stores its
#    exchange, so every round asks it in a new conversation). wrk -t2 -c64
#    -dDURATION (bench/wrk-summary.lua), ROUNDS times over, in the order
#    round > target > backend:
#      cache hit  POST /api/chat, the cached question again
#      history    GET /api/conversations/{id} (20 messages)
#    Reported: req/s (mean over rounds), latency p50/p99, chatd's CPU per
#    request and the database server's (the postgres processes: the
#    postmaster, its children and the children it reaped; mariadbd) per
#    request; SQLite runs inside chatd, so its cost is in chatd's.
# 2. Streams (as bench/streams.sh): a fresh chatd per backend
#    (--cache-size 0) and a fresh mock; bench/streamload opens STREAMS
#    (1000) concurrent POST /api/chat-stream, each TOKENS (100) tokens
#    DELAY_MS (50) ms apart; one run per backend, one after the other.
#    Reported: completed/failed, time to first token p50/p99, added delay
#    per token p50/p99, stream duration p99 (a stream's `done` waits for
#    its exchange to be stored), chatd's peak RSS (VmHWM).
# 3. Export: one conversation of EXPORT_MSGS (1,000,000) messages written
#    straight into each database by its own client in SQL (sqlite3 with a
#    recursive CTE, psql with generate_series, mariadb with the SEQUENCE
#    engine's seq_0_to_N), the same rows in all three: the content comes
#    from a pool of 8,192 texts made by export_gen.py's generator (mixed
#    English and Chinese, 90-300 bytes, quotes, commas, newlines, list
#    lines), roles alternate, timestamps increase, the conversation's
#    last_active is now; then VACUUM ANALYZE (PostgreSQL) / ANALYZE TABLE
#    (MariaDB), as a live database's autovacuum / statistics would have.
#    One chatd per backend and format; curl downloads
#    /api/conversations/{id}/export?format=csv|json to /dev/null EXPORT_REPS
#    (3) times, interleaved (rep > format > backend), each within
#    EXPORT_LIMIT (60) seconds (a backend whose download hits the limit is
#    not asked again). Reported: median seconds, MB/s, chatd's peak RSS.
#
# Checks (any failure: exit status 1, and listed under PROBLEMS): every wrk
# run without errors and its target answering right (200, 20 messages /
# "cached": true) before and after; every stream completed; every export
# 200, complete, the same bytes in every rep, the export file chatd keeps
# as large with the right record count, and the same bytes from all three
# backends (the data are the same); chatd alive and silent on stderr.
#
# Environment: DURATION (10 s per wrk run), ROUNDS (2), CONNS (64),
# WRK_THREADS (2), STREAMS (1000), TOKENS (100), DELAY_MS (50), RAMP
# (2000/s), EXPORT_MSGS (1000000), EXPORT_REPS (3), EXPORT_LIMIT (60 s),
# BACKENDS ("sqlite postgresql mariadb"; sqlite is the reference of the
# ratios, so it must be first), BUILD_DIR (build-bench), BUILD_TYPE
# (RelWithDebInfo), RESULTS_DIR (bench/results). Results: a table on
# stdout (one row per measure and backend, with the ratio to SQLite),
# details on stderr, $RESULTS_DIR/backends-<date>.json. Every process and
# temp file (the database servers too) is removed on exit, also on Ctrl-C;
# every client call has a time limit; 127.0.0.1 only. Needs bash, cmake, a
# C compiler, python3 and scripts/install-deps.sh --bench (wrk, curl,
# sqlite3, postgresql, mariadb-server-core, mariadb-client-core).
set -euo pipefail
export LC_ALL=C # '.' decimals in EPOCHREALTIME, awk and printf

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH_NAME=backends.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
STREAMS=${STREAMS:-1000}
TOKENS=${TOKENS:-100}
DELAY_MS=${DELAY_MS:-50}
RAMP=${RAMP:-2000}
EXPORT_MSGS=${EXPORT_MSGS:-1000000}
EXPORT_REPS=${EXPORT_REPS:-3}
EXPORT_LIMIT=${EXPORT_LIMIT:-60}
# An array is not exported: the --inner run gets the list as BACKENDS_LIST.
read -r -a BACKENDS <<<"${BACKENDS_LIST:-${BACKENDS:-sqlite postgresql mariadb}}"
BUILD=${BUILD_DIR:-build-bench}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
RESULTS=${RESULTS_DIR:-bench/results}
export DURATION ROUNDS CONNS WRK_THREADS STREAMS TOKENS DELAY_MS RAMP EXPORT_MSGS EXPORT_REPS \
    EXPORT_LIMIT BUILD_DIR=$BUILD BUILD_TYPE RESULTS_DIR=$RESULTS
export BACKENDS_LIST="${BACKENDS[*]}"

for v in DURATION ROUNDS CONNS WRK_THREADS STREAMS TOKENS DELAY_MS RAMP EXPORT_MSGS EXPORT_REPS EXPORT_LIMIT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "backends.sh: $v must be a positive integer" >&2; exit 2; }
done
[ "${BACKENDS[0]:-}" = sqlite ] || { echo "backends.sh: BACKENDS must begin with sqlite (the reference)" >&2; exit 2; }
for b in "${BACKENDS[@]}"; do
    case $b in sqlite | postgresql | mariadb) ;; *) echo "backends.sh: unknown backend '$b'" >&2; exit 2 ;; esac
done

# --- outer: build, then run --inner next to the two servers -------------------
if [ "${1:-}" != --inner ]; then
    for tool in cmake curl wrk sqlite3 python3 timeout; do
        command -v "$tool" >/dev/null ||
            { echo "backends.sh: needs $tool (scripts/install-deps.sh --bench)" >&2; exit 2; }
    done
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/chatd-backends-build.XXXXXX")
    MOCK_PID="" CHATD_PID="" LOAD_PID="" WRAP_PID=""
    # shellcheck disable=SC2317 # invoked by the trap
    outer_cleanup() {
        # the wrappers stop their servers and the inner run on TERM
        if [ -n "$WRAP_PID" ] && kill -0 "$WRAP_PID" 2>/dev/null; then
            kill -TERM "$WRAP_PID" 2>/dev/null || true
            for _ in $(seq 600); do kill -0 "$WRAP_PID" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$WRAP_PID" 2>/dev/null || true
            wait "$WRAP_PID" 2>/dev/null || true
        fi
        bench_cleanup
    }
    bench_traps outer_cleanup
    bench_build "$BUILD" "$BUILD_TYPE" "$TMP/build.log"
    wrap=()
    for b in "${BACKENDS[@]}"; do
        case $b in
        postgresql) wrap+=(tests/db/with-postgres.sh) ;;
        mariadb) wrap+=(tests/db/with-mariadb.sh) ;;
        esac
    done
    "${wrap[@]}" bash bench/backends.sh --inner &
    WRAP_PID=$!
    rc=0
    wait "$WRAP_PID" || rc=$?
    WRAP_PID=
    [ "$rc" != 77 ] || die "a database server's binaries are missing (scripts/install-deps.sh --bench installs postgresql and mariadb-server-core)"
    exit "$rc"
fi

# --- inner ---------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/chatd-backends-bench.XXXXXX")
MOCK_PID=
CHATD_PID=
LOAD_PID=
declare -A CPID=() CPORT=()   # chatds by key (phase-backend[-format])

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    local k
    for k in "${!CPID[@]}"; do stop_pid "${CPID[$k]}"; done
    bench_cleanup
}
bench_traps cleanup

PROBLEMS=()
problem() {
    PROBLEMS+=("$*")
    say "PROBLEM: $*"
}

# --- the database clients ---------------------------------------------------------
PSQL="" MYCLI=""
PG_URL=${CHATD_TEST_PG_URL:-}
MY_URL=${CHATD_TEST_MYSQL_URL:-}
has() { [[ " ${BACKENDS[*]} " == *" $1 "* ]]; }
if has postgresql; then
    [ -n "$PG_URL" ] || die "--inner without CHATD_TEST_PG_URL: run bash bench/backends.sh"
    # as tests/db/with-postgres.sh finds the server
    bindir=$(pg_config --bindir 2>/dev/null || true)
    # shellcheck disable=SC2012 # as with-postgres.sh does
    [ -x "$bindir/psql" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    PSQL=$bindir/psql
    [ -x "$PSQL" ] || PSQL=$(command -v psql) || die "no psql"
    PG_DIR=$(dirname "$CHATD_TEST_PG_CTL")
fi
if has mariadb; then
    [ -n "$MY_URL" ] || die "--inner without CHATD_TEST_MYSQL_URL: run bash bench/backends.sh"
    for c in mariadb mysql /usr/bin/mariadb /usr/local/bin/mariadb; do
        MYCLI=$(command -v "$c" 2>/dev/null) && break
    done
    [ -n "$MYCLI" ] || die "no mariadb client"
    MY_DIR=$(dirname "$CHATD_TEST_MYSQL_CTL")
    # mysql://user:pass@host:port/db (with-mariadb.sh's: nothing to decode)
    u=${MY_URL#mysql://}
    MY_USER=${u%%:*} u=${u#*:}
    MY_PASS=${u%%@*} u=${u#*@}
    MY_HOST=${u%%:*} u=${u#*:}
    MY_PORT=${u%%/*} MY_DB=${u#*/}
fi
pg_sql() { timeout 600 "$PSQL" "$PG_URL" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
my_sql() {
    MYSQL_PWD=$MY_PASS timeout 600 "$MYCLI" --no-defaults -u"$MY_USER" -h"$MY_HOST" -P"$MY_PORT" \
        --protocol=TCP --default-character-set=utf8mb4 -N -B "$MY_DB" "$@"
}
# db_sql BACKEND: runs the SQL on stdin in BACKEND's database (sqlite: the
# file of this phase, SQFILE).
db_sql() {
    case $1 in
    sqlite) timeout 600 sqlite3 -bail "$SQFILE" ;;
    postgresql) pg_sql ;;
    mariadb) my_sql ;;
    esac
}
# Server versions, for the record.
VERSIONS="\"sqlite\": \"$(sqlite3 :memory: 'select sqlite_version()')\""
has postgresql && VERSIONS+=", \"postgresql\": \"$(pg_sql -c 'SHOW server_version' | head -n 1)\""
has mariadb && VERSIONS+=", \"mariadb\": \"$(my_sql -e 'SELECT VERSION()')\""

# reset_db BACKEND PHASE: empty tables (chatd creates them); sets DBURL.
declare -A DBURL=()
reset_db() {
    case $1 in
    sqlite)
        SQFILE=$TMP/$2.db
        rm -f "$SQFILE" "$SQFILE-wal" "$SQFILE-shm"
        DBURL[sqlite]=sqlite:$SQFILE
        ;;
    postgresql)
        pg_sql -c 'DROP TABLE IF EXISTS messages, conversations CASCADE' >/dev/null 2>&1 ||
            die "postgresql: cannot drop the tables"
        DBURL[postgresql]=$PG_URL
        ;;
    mariadb)
        my_sql -e 'SET FOREIGN_KEY_CHECKS = 0; DROP TABLE IF EXISTS messages, conversations' ||
            die "mariadb: cannot drop the tables"
        DBURL[mariadb]=$MY_URL
        ;;
    esac
}

# CPU ticks of BACKEND's server: postgres = the postmaster, its children
# now and the children it reaped (cutime+cstime); mariadbd; sqlite: none.
stat_fields() { # /proc/PID/stat -> utime stime cutime cstime
    local stat rest
    read -r stat <"$1" 2>/dev/null || { echo "0 0 0 0"; return; }
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "${12} ${13} ${14} ${15}"
}
db_ticks() {
    local pid t=0 u s cu cs c
    case $1 in
    postgresql)
        pid=$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
        read -r u s cu cs <<<"$(stat_fields "/proc/$pid/stat")"
        t=$((u + s + cu + cs))
        for c in $(<"/proc/$pid/task/$pid/children"); do
            read -r u s _ _ <<<"$(stat_fields "/proc/$c/stat")"
            t=$((t + u + s))
        done
        echo "$t"
        ;;
    mariadb)
        pid=$(cat "$MY_DIR/mariadbd.pid" 2>/dev/null) || { echo 0; return; }
        cpu_ticks "$pid" 2>/dev/null || echo 0
        ;;
    *) echo 0 ;;
    esac
}

# --- chatd and the mock -----------------------------------------------------------
HREQ_MAX_TIME=30 # lib.sh's hreq: curl's --max-time

# start_mock [ARGS...]: a fresh mock-llm (the previous one stopped); LLM_URL.
start_mock() {
    stop_pid "$MOCK_PID"
    "$BUILD/mock-llm" --port 0 --quiet "$@" >"$TMP/mock.out" 2>"$TMP/mock.err" &
    MOCK_PID=$!
    MOCK_PORT=$(wait_port "$TMP/mock.out" "$MOCK_PID" 400) || { cat "$TMP/mock.err" >&2; die "mock-llm did not start"; }
    LLM_URL="http://127.0.0.1:$MOCK_PORT/v1"
}

# start_chatd KEY URL [ARGS...]: a fresh chatd on URL, waits for a 200 on
# /health; CPID[KEY], CPORT[KEY].
start_chatd() {
    local key=$1 url=$2 pid port
    shift 2
    mkdir -p "$TMP/exp-$key"
    : >"$TMP/$key.err"
    "$BUILD/chatd" --host 127.0.0.1 --port 0 --db "$url" --llm-url "$LLM_URL" --log-level warn \
        --export-dir "$TMP/exp-$key" "$@" >"$TMP/$key.out" 2>"$TMP/$key.err" &
    pid=$!
    CPID[$key]=$pid
    port=$(wait_port "$TMP/$key.err" "$pid" 400) || { cat "$TMP/$key.err" >&2; die "$key: chatd did not start"; }
    CPORT[$key]=$port
    wait_health "http://127.0.0.1:$port" "$pid" "$TMP/$key.err" "$key: "
}

# stop_chatd KEY: stops it; what it wrote to stderr is a problem.
stop_chatd() {
    local key=$1 n
    stop_pid "${CPID[$key]:-}"
    unset "CPID[$key]"
    n=$(wc -l <"$TMP/$key.err")
    if [ "$n" -gt 0 ]; then
        problem "$key: chatd wrote $n lines to stderr: $(head -n 3 "$TMP/$key.err" | tr '\n' ' ')"
    fi
}
alive() { kill -0 "${CPID[$1]}" 2>/dev/null; }

DATE=$(date -u +%Y%m%d-%H%M%S)
COMMIT=$(bench_commit)
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 | awk '{ print $2 }' || true)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
BUSY_BEFORE=$(busy_pct)
[ "$BUSY_BEFORE" -le 10 ] ||
    say "warning: the machine is ${BUSY_BEFORE}% busy before the run: other processes will skew the figures"
say "commit $COMMIT; backends: ${BACKENDS[*]}; machine ${BUSY_BEFORE}% busy before the run"

# ================================================================================
# 1. throughput: cache hit and history
# ================================================================================
say "1. throughput: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, $ROUNDS rounds"
start_mock --delay-ms 0
declare -A CONV_ID=() CACHE_ID=() CACHE_BODY=() CONV_BYTES=() CACHE_BYTES=()
CACHE_MSG="mock:tokens=20 the cached question"

check_history() { # BACKEND
    hreq GET "http://127.0.0.1:${CPORT[a-$1]}/api/conversations/${CONV_ID[$1]}"
    [ "$HCODE" = 200 ] && [ "$(count_messages "$HBODY")" = 20 ]
}
check_cachehit() { # BACKEND
    hreq POST "http://127.0.0.1:${CPORT[a-$1]}/api/chat" "${CACHE_BODY[$1]}"
    [ "$HCODE" = 200 ] && [[ $HBODY == *'"cached": true'* ]] &&
        [[ $HBODY == *"\"conversation_id\": \"${CACHE_ID[$1]}\""* ]]
}
prepare_cachehit() { # BACKEND: the cached question in a new conversation
    local b=$1 url="http://127.0.0.1:${CPORT[a-$1]}/api/chat"
    hreq POST "$url" "{\"message\": \"$CACHE_MSG\"}"
    { [ "$HCODE" = 200 ] && [[ $HBODY == *'"cached"'* ]]; } ||
        die "$b: preparing the cached question: POST /api/chat answered $HCODE: $HBODY"
    CACHE_ID[$b]=$(conv_id_of "$HBODY")
    [ -n "${CACHE_ID[$b]}" ] || die "$b: no conversation id in $HBODY"
    CACHE_BODY[$b]="{\"message\": \"$CACHE_MSG\", \"conversation_id\": \"${CACHE_ID[$b]}\"}"
    check_cachehit "$b" || die "$b: the repeated question is no cache hit: $HCODE $HBODY"
    CACHE_BYTES[$b]=${#HBODY}
}

for b in "${BACKENDS[@]}"; do
    reset_db "$b" throughput
    start_chatd "a-$b" "${DBURL[$b]}"
    url="http://127.0.0.1:${CPORT[a-$b]}/api/chat"
    CONV_ID[$b]=""
    for i in $(seq 10); do
        body="{\"message\": \"mock:tokens=20 question $i\"${CONV_ID[$b]:+, \"conversation_id\": \"${CONV_ID[$b]}\"}}"
        hreq POST "$url" "$body"
        [ "$HCODE" = 200 ] || die "$b: preparing: POST /api/chat answered $HCODE: $HBODY"
        [ -n "${CONV_ID[$b]}" ] || CONV_ID[$b]=$(conv_id_of "$HBODY")
    done
    check_history "$b" || die "$b: preparing: the conversation: $HCODE, $(count_messages "$HBODY") messages: ${HBODY:0:300}"
    CONV_BYTES[$b]=${#HBODY}
    prepare_cachehit "$b"
    say "$b: chatd on port ${CPORT[a-$b]}: conversation ${CONV_ID[$b]} (${CONV_BYTES[$b]} bytes), cached question in ${CACHE_ID[$b]}"
done

declare -A RPS=() P50=() P99=() CPU_US=() DB_US=() BUSY=()
WRK_JSON=""
# run_wrk BACKEND TARGET: one wrk run; sets WJ W_RPS W_P50 W_P99 W_CPU W_DB W_BUSY.
run_wrk() {
    local b=$1 t=$2 pid=${CPID[a-$1]} url method body c0 c1 d0 d1 b0 t0 b1 t1 rc=0 errs n
    if [ "$t" = cachehit ]; then
        url="http://127.0.0.1:${CPORT[a-$b]}/api/chat" method=POST body=${CACHE_BODY[$b]}
    else
        url="http://127.0.0.1:${CPORT[a-$b]}/api/conversations/${CONV_ID[$b]}" method=GET body=""
    fi
    c0=$(cpu_ticks "$pid")
    d0=$(db_ticks "$b")
    read -r b0 t0 _ <<<"$(machine_ticks)"
    WRK_METHOD=$method WRK_BODY=$body timeout $((DURATION + 60)) wrk -t"$WRK_THREADS" -c"$CONNS" \
        -d"${DURATION}s" --latency -s bench/wrk-summary.lua "$url" >"$TMP/wrk.out" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=
    read -r b1 t1 _ <<<"$(machine_ticks)"
    d1=$(db_ticks "$b")
    c1=$(cpu_ticks "$pid" 2>/dev/null || echo "$c0")
    WJ=$(grep '^{' "$TMP/wrk.out" | tail -n 1 || true)
    if [ "$rc" != 0 ] || [ -z "$WJ" ]; then
        cat "$TMP/wrk.out" >&2
        problem "$b $t: wrk exit $rc, no result"
        WJ='{"requests": 0, "duration_us": 1, "err_connect": 0, "err_read": 0, "err_write": 0, "err_status": 0, "err_timeout": 0, "lat_p50_us": 0, "lat_p99_us": 0}'
    fi
    errs=0
    for k in err_connect err_read err_write err_status err_timeout; do
        errs=$((errs + $(jget "$WJ" "$k")))
    done
    if [ "$errs" != 0 ] || grep -q 'Non-2xx' "$TMP/wrk.out"; then
        grep -E 'Socket errors|Non-2xx|requests in' "$TMP/wrk.out" >&2 || true
        problem "$b $t: wrk counted $errs errors: $WJ"
    fi
    n=$(jget "$WJ" requests)
    [ "$n" -gt 0 ] || n=1
    W_RPS=$(calc '%.0f' "$(jget "$WJ" requests) / ($(jget "$WJ" duration_us) / 1e6)")
    W_P50=$(calc '%.3f' "$(jget "$WJ" lat_p50_us) / 1000")
    W_P99=$(calc '%.3f' "$(jget "$WJ" lat_p99_us) / 1000")
    W_CPU=$(calc '%.1f' "($c1 - $c0) / $CLK_TCK * 1e6 / $n")
    W_DB=$(calc '%.1f' "($d1 - $d0) / $CLK_TCK * 1e6 / $n")
    W_BUSY=$(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
}

for round in $(seq "$ROUNDS"); do
    for t in cachehit history; do
        for b in "${BACKENDS[@]}"; do
            [ "$t" != cachehit ] || [ "$round" = 1 ] || prepare_cachehit "$b"
            check_$t "$b" || problem "$b $t: check before round $round failed: $HCODE ${HBODY:0:300}"
            run_wrk "$b" "$t"
            alive "a-$b" || { cat "$TMP/a-$b.err" >&2; die "$b: chatd died during $t"; }
            check_$t "$b" || problem "$b $t: check after round $round failed: $HCODE ${HBODY:0:300}"
            k=$b/$t
            RPS[$k]+="${RPS[$k]:+ }$W_RPS"
            P50[$k]+="${P50[$k]:+ }$W_P50"
            P99[$k]+="${P99[$k]:+ }$W_P99"
            CPU_US[$k]+="${CPU_US[$k]:+ }$W_CPU"
            DB_US[$k]+="${DB_US[$k]:+ }$W_DB"
            BUSY[$k]+="${BUSY[$k]:+ }$W_BUSY"
            say "round $round, $t, $b: $W_RPS req/s, p50 $W_P50 ms, p99 $W_P99 ms, chatd $W_CPU us/req, db server $W_DB us/req, machine busy $W_BUSY%"
            WRK_JSON+="${WRK_JSON:+,
    }{\"round\": $round, \"target\": \"$t\", \"backend\": \"$b\", \"req_per_s\": $W_RPS, \"chatd_cpu_us_per_req\": $W_CPU, \"db_cpu_us_per_req\": $W_DB, \"machine_busy_pct\": $W_BUSY, \"wrk\": $WJ}"
        done
    done
done
declare -A A_HWM=() A_THREADS=()
for b in "${BACKENDS[@]}"; do
    A_HWM[$b]=$(vm_kb "${CPID[a-$b]}" VmHWM)
    A_THREADS[$b]=$(thread_cpu "${CPID[a-$b]}")
    say "$b: chatd threads (cpu s) after the throughput runs: ${A_THREADS[$b]}"
    stop_chatd "a-$b"
done

# ================================================================================
# 2. streams
# ================================================================================
say "2. streams: $STREAMS concurrent, $TOKENS tokens ${DELAY_MS} ms apart"
start_mock
declare -A S_LOAD=() S_HWM=() S_CPU=() S_DB=() S_BUSY=() S_BUSY0=()
STIMEOUT=$((STREAMS / RAMP + TOKENS * DELAY_MS / 1000 + 60))
for b in "${BACKENDS[@]}"; do
    reset_db "$b" streams
    start_chatd "s-$b" "${DBURL[$b]}" --cache-size 0
    sleep 0.5
    S_BUSY0[$b]=$(busy_pct)
    pid=${CPID[s-$b]}
    c0=$(cpu_ticks "$pid")
    d0=$(db_ticks "$b")
    read -r b0 t0 _ <<<"$(machine_ticks)"
    timeout $((STIMEOUT + 30)) "$BUILD/streamload" --port "${CPORT[s-$b]}" -n "$STREAMS" --tokens "$TOKENS" \
        --delay-ms "$DELAY_MS" --ramp "$RAMP" --timeout "$STIMEOUT" --json --progress \
        >"$TMP/load.out" 2>"$TMP/load.err" &
    LOAD_PID=$!
    wait "$LOAD_PID" || true
    LOAD_PID=
    read -r b1 t1 _ <<<"$(machine_ticks)"
    d1=$(db_ticks "$b")
    LOAD=$(grep '^{' "$TMP/load.out" | tail -n 1 || true)
    [ -n "$LOAD" ] || { tail -n 20 "$TMP/load.err" >&2; LOAD=null; }
    if alive "s-$b"; then
        S_HWM[$b]=$(vm_kb "$pid" VmHWM)
        S_CPU[$b]=$(secs $(($(cpu_ticks "$pid") - c0)))
    else
        S_HWM[$b]=0 S_CPU[$b]=0
        problem "$b streams: chatd died"
    fi
    S_DB[$b]=$(secs $((d1 - d0)))
    S_BUSY[$b]=$(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
    S_LOAD[$b]=$LOAD
    { [ "$(jget "$LOAD" completed)" = "$STREAMS" ] && [ "$(jget "$LOAD" failed)" = 0 ]; } || {
        tail -n 15 "$TMP/load.err" >&2
        problem "$b streams: $(jget "$LOAD" completed) of $STREAMS completed, $(jget "$LOAD" failed) failed"
    }
    stored=$(db_sql "$b" <<<"SELECT count(*) FROM messages;" 2>/dev/null | tail -n 1 || echo "?")
    say "$b: $(jget "$LOAD" completed)/$STREAMS completed; ttft p50/p99 $(j2 "$LOAD" ttft_ms_p50)/$(j2 "$LOAD" ttft_ms_p99) ms;" \
        "added per token p50/p99 $(j2 "$LOAD" delay_ms_p50)/$(j2 "$LOAD" delay_ms_p99) ms; stream duration p50/p99" \
        "$(j2 "$LOAD" duration_s_p50)/$(j2 "$LOAD" duration_s_p99) s; chatd peak $(mb "${S_HWM[$b]}") MB, cpu ${S_CPU[$b]} s;" \
        "db server cpu ${S_DB[$b]} s; $stored messages stored; machine busy ${S_BUSY0[$b]}% before, ${S_BUSY[$b]}% during;" \
        "chatd threads (cpu s): $(thread_cpu "$pid")"
    [ "$stored" = $((STREAMS * 2)) ] || problem "$b streams: $stored messages stored, want $((STREAMS * 2))"
    stop_chatd "s-$b"
done
stop_pid "$MOCK_PID"
MOCK_PID=

# ================================================================================
# 3. export of one conversation of EXPORT_MSGS messages
# ================================================================================
say "3. export: one conversation of $EXPORT_MSGS messages, written in SQL into each database"
LLM_URL=http://127.0.0.1:1/v1 # no upstream needed
# The pool: 4,096 user and 4,096 assistant texts from export_gen.py's
# generator, as standard SQL (quotes doubled; no backslashes in them).
timeout 120 python3 - >"$TMP/pool.sql" <<'EOF' || die "cannot make the content pool"
import random, sys
sys.path.insert(0, "bench")
import export_gen as g
rng = random.Random("backends.sh/pool")
rows = []
for k in range(8192):
    role = "user" if k < 4096 else "assistant"
    c = g.make_content(rng, role, rng.randint(90, 180) if role == "user" else rng.randint(140, 290))
    assert "\\" not in c and "\0" not in c
    rows.append("(%d, '%s')" % (k, c.replace("'", "''")))
print("CREATE TABLE bench_pool (k INTEGER PRIMARY KEY, content TEXT NOT NULL);")
for i in range(0, len(rows), 512):
    print("INSERT INTO bench_pool (k, content) VALUES\n" + ",\n".join(rows[i:i + 512]) + ";")
EOF
EXP_ID=$(cat /proc/sys/kernel/random/uuid)
NOW_US=$(date +%s%6N)
BASE_US=$((NOW_US - (EXPORT_MSGS * 2 + 3600) * 1000000))
iso_us() { echo "$(date -u -d "@$(($1 / 1000000))" +%Y-%m-%dT%H:%M:%S).$(printf '%06d' $(($1 % 1000000)))"; }
BASE_TS=$(iso_us "$BASE_US")
NOW_TS=$(iso_us "$NOW_US")
N1=$((EXPORT_MSGS - 1))
# message i (0-based): role user/assistant by parity, content from the pool,
# time BASE + 2(i+1) s + (i * 7919 mod 10^6) us, strictly increasing.
POOL_K="(i % 2) * 4096 + (i * 2654435761) % 4096"
gen_sql() {
    echo "INSERT INTO conversations(id, created_at, last_active) VALUES ('$EXP_ID', '$BASE_TS', '$NOW_TS');"
    case $1 in
    sqlite)
        local us="($BASE_US + (i + 1) * 2000000 + (i * 7919) % 1000000)"
        cat <<EOF
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < $N1)
INSERT INTO messages(conversation_id, role, content, timestamp)
SELECT '$EXP_ID', CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END,
  (SELECT content FROM bench_pool WHERE k = $POOL_K),
  strftime('%Y-%m-%dT%H:%M:%S', $us / 1000000, 'unixepoch') || printf('.%06d', $us % 1000000)
FROM s;
EOF
        ;;
    postgresql)
        cat <<EOF
INSERT INTO messages(conversation_id, role, content, timestamp)
SELECT '$EXP_ID', CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END,
  (SELECT content FROM bench_pool WHERE k = $POOL_K),
  timestamp '$BASE_TS' + (i + 1) * 2 * interval '1 second' + ((i * 7919) % 1000000) * interval '1 microsecond'
FROM generate_series(0::bigint, $N1) AS i ORDER BY i;
EOF
        ;;
    mariadb)
        cat <<EOF
INSERT INTO messages(conversation_id, role, content, timestamp)
SELECT '$EXP_ID', IF(seq % 2 = 0, 'user', 'assistant'),
  (SELECT content FROM bench_pool WHERE k = ${POOL_K//i/seq}),
  TIMESTAMP'$BASE_TS' + INTERVAL (seq + 1) * 2 SECOND + INTERVAL (seq * 7919) % 1000000 MICROSECOND
FROM seq_0_to_$N1 ORDER BY seq;
EOF
        ;;
    esac
    echo "DROP TABLE bench_pool;"
}
declare -A GEN_S=()
for b in "${BACKENDS[@]}"; do
    reset_db "$b" export
    # chatd creates its schema, then the rows go in with the server's client
    start_chatd "schema-$b" "${DBURL[$b]}"
    stop_chatd "schema-$b"
    t0=$(now)
    case $b in
    sqlite) { echo "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; BEGIN;"; cat "$TMP/pool.sql"
              gen_sql sqlite; echo "COMMIT; PRAGMA wal_checkpoint(TRUNCATE);"; } | db_sql sqlite >/dev/null ;;
    postgresql) { echo "BEGIN;"; cat "$TMP/pool.sql"; gen_sql postgresql; echo "COMMIT; VACUUM ANALYZE;"; } | db_sql postgresql ;;
    mariadb) { echo "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES'), time_zone = '+00:00';"
               cat "$TMP/pool.sql"; gen_sql mariadb; echo "ANALYZE TABLE conversations, messages;"; } |
               db_sql mariadb >/dev/null ;;
    esac || die "$b: writing the export data failed"
    GEN_S[$b]=$(elapsed "$t0" "$(now)")
    n=$(db_sql "$b" <<<"SELECT count(*) FROM messages WHERE conversation_id = '$EXP_ID';" | tail -n 1)
    [ "$n" = "$EXPORT_MSGS" ] || die "$b: $n messages written, want $EXPORT_MSGS"
    say "$b: $EXPORT_MSGS messages written in ${GEN_S[$b]} s"
done

# Counts the records of export file $1 (format $2): json, lines; csv, lines
# that end in CRLF (content has bare LF only).
records_in() {
    if [ "$2" = json ]; then wc -l <"$1"; else grep -c $'\r$' "$1" || true; fi
}
FORMATS=(csv json)
declare -A E_TIMES=() E_BYTES=() E_OK=() E_WHY=() E_HWM=() E_CPU=() E_DB=() E_N=() E_BUSY=()
for b in "${BACKENDS[@]}"; do
    for f in "${FORMATS[@]}"; do
        start_chatd "e-$b-$f" "${DBURL[$b]}"
        k=$b/$f
        E_OK[$k]=true E_WHY[$k]="" E_N[$k]=0 E_BYTES[$k]="" E_TIMES[$k]="" E_CPU[$k]=0 E_DB[$k]=0 E_BUSY[$k]=""
    done
done
[ "${BACKENDS[0]}" != sqlite ] || cat "$SQFILE" >/dev/null # page cache: as warm as the servers' will be
for rep in $(seq "$EXPORT_REPS"); do
    for f in "${FORMATS[@]}"; do
        for b in "${BACKENDS[@]}"; do
            k=$b/$f key=e-$b-$f
            [ "${E_OK[$k]}" = true ] || continue
            pid=${CPID[$key]}
            c0=$(cpu_ticks "$pid")
            d0=$(db_ticks "$b")
            read -r b0 t0 _ <<<"$(machine_ticks)"
            rc=0
            out=$(timeout $((EXPORT_LIMIT + 30)) curl -s -o /dev/null --max-time "$EXPORT_LIMIT" \
                -w '%{http_code} %{size_download} %{time_total} %header{x-export-file}' \
                "http://127.0.0.1:${CPORT[$key]}/api/conversations/$EXP_ID/export?format=$f") || rc=$?
            read -r b1 t1 _ <<<"$(machine_ticks)"
            read -r code bytes secs name <<<"$out"
            name=${name//$'\r'/}
            E_CPU[$k]=$((${E_CPU[$k]} + $(cpu_ticks "$pid" 2>/dev/null || echo "$c0") - c0))
            E_DB[$k]=$((${E_DB[$k]} + $(db_ticks "$b") - d0))
            E_BUSY[$k]+="${E_BUSY[$k]:+ }$(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))"
            say "export $f, rep $rep, $b: HTTP ${code:-000}, ${bytes:-0} bytes in ${secs:-?} s (curl exit $rc)"
            if [ "$rc" != 0 ] || [ "${code:-}" != 200 ]; then
                E_OK[$k]=false
                E_WHY[$k]+="rep $rep: HTTP ${code:-000}, curl exit $rc$([ "$rc" != 28 ] || echo " (the ${EXPORT_LIMIT} s limit)"), ${bytes:-0} bytes in ${secs:-?} s; "
                E_BYTES[$k]=${bytes:-0} E_TIMES[$k]=${secs:-0}
                problem "$b export $f: ${E_WHY[$k]}"
                continue
            fi
            E_N[$k]=$((${E_N[$k]} + 1))
            E_TIMES[$k]+="${E_TIMES[$k]:+ }$secs"
            if [ "$rep" = 1 ]; then
                E_BYTES[$k]=$bytes
                kept="$TMP/exp-$key/$name"
                for _ in $(seq 100); do [ -n "$name" ] && [ -f "$kept" ] && break; sleep 0.05; done
                if [ -z "$name" ] || [ ! -f "$kept" ]; then
                    E_OK[$k]=false E_WHY[$k]+="no export file '$name'; "
                else
                    ksize=$(stat -c %s "$kept")
                    recs=$(records_in "$kept" "$f")
                    [ "$ksize" = "$bytes" ] || { E_OK[$k]=false; E_WHY[$k]+="export file $ksize bytes, download $bytes; "; }
                    [ "$recs" = $((EXPORT_MSGS + 1)) ] ||
                        { E_OK[$k]=false; E_WHY[$k]+="$recs records in the export file, want $((EXPORT_MSGS + 1)); "; }
                fi
            elif [ "$bytes" != "${E_BYTES[$k]}" ]; then
                E_OK[$k]=false E_WHY[$k]+="rep $rep: $bytes bytes, rep 1 had ${E_BYTES[$k]}; "
            fi
            [ -z "$name" ] || rm -f "$TMP/exp-$key/$name"
            [ "${E_OK[$k]}" = true ] || problem "$b export $f: ${E_WHY[$k]}"
        done
    done
done
for b in "${BACKENDS[@]}"; do
    for f in "${FORMATS[@]}"; do
        k=$b/$f key=e-$b-$f
        if alive "$key"; then
            E_HWM[$k]=$(vm_kb "${CPID[$key]}" VmHWM)
        else
            E_HWM[$k]=0 E_OK[$k]=false
            problem "$b export $f: chatd died"
        fi
        stop_chatd "$key"
        # the same rows everywhere: the same bytes
        if [ "$b" != sqlite ] && [ "${E_OK[$k]}" = true ] && [ "${E_OK[sqlite/$f]}" = true ] &&
            [ "${E_BYTES[$k]}" != "${E_BYTES[sqlite/$f]}" ]; then
            problem "$b export $f: ${E_BYTES[$k]} bytes, sqlite's ${E_BYTES[sqlite/$f]}"
        fi
    done
done
BUSY_AFTER=$(busy_pct)

# ================================================================================
# report
# ================================================================================
REF=sqlite
ROWS=()
# row MEASURE BACKEND VALUE REFVALUE DETAILS BUSY
row() {
    local ratio="-"
    if [ "$3" != - ] && [ "$4" != - ] && awk -v r="$4" 'BEGIN { exit !(r > 0) }'; then
        ratio=$(calc '%.2f' "$3 / $4")
    fi
    ROWS+=("$(printf '%-30s %-11s %10s %6s  %-7s %s' "$1" "$2" "$3" "$ratio" "$6" "$5")")
}
THR_JSON=""
for t in cachehit history; do
    # shellcheck disable=SC2086 # lists of numbers
    ref=$(calc '%.0f' "$(mean ${RPS[$REF/$t]})")
    for b in "${BACKENDS[@]}"; do
        k=$b/$t
        # shellcheck disable=SC2086
        m=$(calc '%.0f' "$(mean ${RPS[$k]})")
        # shellcheck disable=SC2086
        p50=$(calc '%.2f' "$(mean ${P50[$k]})")
        # shellcheck disable=SC2086
        p99=$(calc '%.2f' "$(mean ${P99[$k]})")
        # shellcheck disable=SC2086
        cpu=$(calc '%.0f' "$(mean ${CPU_US[$k]})")
        # shellcheck disable=SC2086
        db=$(calc '%.0f' "$(mean ${DB_US[$k]})")
        if [ "$b" = sqlite ]; then db="- (in chatd)"; else db="$db us/req"; fi
        label="cache hit, req/s"
        [ "$t" = cachehit ] || label="history (20 msgs), req/s"
        row "$label" "$b" "$m" "$ref" "p50 $p50 ms, p99 $p99 ms; chatd $cpu us/req, db server $db; rounds ${RPS[$k]// //}" "${BUSY[$k]// //}"
        THR_JSON+="${THR_JSON:+,
    }\"$k\": {\"req_per_s\": [${RPS[$k]// /, }], \"req_per_s_mean\": $m, \"ratio_vs_sqlite\": $(calc '%.3f' "$m / $ref")"
        THR_JSON+=", \"p50_ms\": [${P50[$k]// /, }], \"p99_ms\": [${P99[$k]// /, }]"
        THR_JSON+=", \"chatd_cpu_us_per_req\": [${CPU_US[$k]// /, }], \"db_cpu_us_per_req\": [${DB_US[$k]// /, }]"
        THR_JSON+=", \"machine_busy_pct\": [${BUSY[$k]// /, }]}"
    done
done
S_JSON=""
for m in ttft add; do
    key=ttft_ms
    [ "$m" = ttft ] || key=delay_ms
    ref=$(j2 "${S_LOAD[$REF]}" "${key}_p99")
    for b in "${BACKENDS[@]}"; do
        L=${S_LOAD[$b]}
        if [ "$m" = ttft ]; then
            row "$STREAMS streams: TTFT p99 ms" "$b" "$(j2 "$L" ttft_ms_p99)" "$ref" \
                "$(jget "$L" completed)/$STREAMS completed, $(jget "$L" failed) failed; TTFT p50 $(j2 "$L" ttft_ms_p50) ms; duration p99 $(j2 "$L" duration_s_p99) s; chatd peak RSS $(mb "${S_HWM[$b]}") MB" \
                "${S_BUSY[$b]}"
        else
            row "$STREAMS streams: added/token p99" "$b" "$(j2 "$L" delay_ms_p99)" "$ref" \
                "p50 $(j2 "$L" delay_ms_p50) ms; chatd cpu ${S_CPU[$b]} s, db server ${S_DB[$b]} s" "${S_BUSY[$b]}"
        fi
    done
done
for b in "${BACKENDS[@]}"; do
    S_JSON+="${S_JSON:+,
    }\"$b\": {\"chatd_peak_rss_kb\": ${S_HWM[$b]}, \"chatd_cpu_s\": ${S_CPU[$b]}, \"db_cpu_s\": ${S_DB[$b]}"
    S_JSON+=", \"machine_busy_pct_before\": ${S_BUSY0[$b]}, \"machine_busy_pct\": ${S_BUSY[$b]}, \"load\": ${S_LOAD[$b]}}"
done
E_JSON=""
declare -A E_MED=()
for f in "${FORMATS[@]}"; do
    for b in "${BACKENDS[@]}"; do
        k=$b/$f
        # shellcheck disable=SC2086
        if [ "${E_N[$k]}" -gt 0 ]; then E_MED[$k]=$(calc '%.3f' "$(median ${E_TIMES[$k]})"); else E_MED[$k]=-; fi
    done
    for b in "${BACKENDS[@]}"; do
        k=$b/$f
        n=$((${E_N[$k]} > 0 ? ${E_N[$k]} : 1))
        if [ "${E_OK[$k]}" = true ]; then
            mbps=$(calc '%.0f' "${E_BYTES[$k]} / 1e6 / ${E_MED[$k]}")
            det="$(calc '%.1f' "${E_BYTES[$k]} / 1e6") MB, $mbps MB/s; chatd peak RSS $(mb "${E_HWM[$k]}") MB; cpu/export chatd $(secs $((${E_CPU[$k]} / n))) s, db server $(secs $((${E_DB[$k]} / n))) s; runs ${E_TIMES[$k]// //}"
        else
            mbps=null
            det="FAILED: ${E_WHY[$k]}chatd peak RSS $(mb "${E_HWM[$k]}") MB"
        fi
        row "export $EXPORT_MSGS $f, s" "$b" "${E_MED[$k]}" "${E_MED[$REF/$f]}" "$det" "${E_BUSY[$k]// //}"
        E_JSON+="${E_JSON:+,
    }\"$k\": {\"ok\": ${E_OK[$k]}, \"bytes\": ${E_BYTES[$k]:-0}, \"seconds\": [${E_TIMES[$k]// /, }]"
        E_JSON+=", \"seconds_median\": $([ "${E_MED[$k]}" = - ] && echo null || echo "${E_MED[$k]}"), \"mb_per_s\": $mbps"
        E_JSON+=", \"chatd_peak_rss_kb\": ${E_HWM[$k]}, \"chatd_cpu_s_total\": $(secs "${E_CPU[$k]}"), \"db_cpu_s_total\": $(secs "${E_DB[$k]}")"
        E_JSON+=", \"machine_busy_pct\": [${E_BUSY[$k]// /, }], \"problems\": \"$(jstr "${E_WHY[$k]}")\"}"
    done
done

echo
echo "chatd on ${BACKENDS[*]}: commit $COMMIT, $BUILD_TYPE build, $(nproc) cpus, machine ${BUSY_BEFORE}% busy before," \
    "${BUSY_AFTER}% after; wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s x $ROUNDS rounds; $STREAMS streams x $TOKENS tokens" \
    "${DELAY_MS} ms apart; export of $EXPORT_MSGS messages, median of $EXPORT_REPS (limit ${EXPORT_LIMIT} s)"
printf '%-30s %-11s %10s %6s  %-7s %s\n' measure backend value ratio busy% details
printf '%s\n' "${ROWS[@]}"
echo "ratio: value / sqlite's value (req/s: higher is better; ms and s: lower is better); busy%: the whole"
echo "machine during each run; db server: CPU of the postgres processes / mariadbd (sqlite runs inside chatd)."
if [ ${#PROBLEMS[@]} -gt 0 ]; then
    echo
    echo "PROBLEMS:"
    printf '  %s\n' "${PROBLEMS[@]}"
fi

PROBLEMS_JSON=""
for p in "${PROBLEMS[@]}"; do PROBLEMS_JSON+="${PROBLEMS_JSON:+, }\"$(jstr "$p")\""; done
GEN_JSON=""
for b in "${BACKENDS[@]}"; do GEN_JSON+="${GEN_JSON:+, }\"$b\": ${GEN_S[$b]}"; done
HWM_JSON=""
for b in "${BACKENDS[@]}"; do
    HWM_JSON+="${HWM_JSON:+, }\"$b\": {\"peak_rss_kb\": ${A_HWM[$b]}, \"threads_cpu_s\": \"${A_THREADS[$b]}\""
    HWM_JSON+=", \"conversation_bytes\": ${CONV_BYTES[$b]}, \"cachehit_bytes\": ${CACHE_BYTES[$b]}}"
done
mkdir -p "$RESULTS"
OUT="$RESULTS/backends-$DATE.json"
cat >"$OUT" <<EOF
{"benchmark": "backends", "date": "$DATE", "commit": "$COMMIT", "build_type": "$BUILD_TYPE",
 "machine": {"cpus": $(nproc), "kernel": "$(uname -r)", "nofile": $NOFILE, "busy_pct_before": $BUSY_BEFORE, "busy_pct_after": $BUSY_AFTER},
 "servers": {$VERSIONS},
 "settings": {"wrk_version": "$WRK_VERSION", "wrk_threads": $WRK_THREADS, "connections": $CONNS, "duration_s": $DURATION,
    "rounds": $ROUNDS, "streams": $STREAMS, "tokens": $TOKENS, "delay_ms": $DELAY_MS, "ramp": $RAMP,
    "export_messages": $EXPORT_MSGS, "export_reps": $EXPORT_REPS, "export_limit_s": $EXPORT_LIMIT},
 "throughput": {
    $THR_JSON
 },
 "throughput_chatd": {$HWM_JSON},
 "wrk_runs": [
    $WRK_JSON
 ],
 "streams": {
    $S_JSON
 },
 "export_data_seconds": {$GEN_JSON},
 "export": {
    $E_JSON
 },
 "problems": [$PROBLEMS_JSON]}
EOF
echo
echo "results: $OUT"
[ ${#PROBLEMS[@]} = 0 ]
