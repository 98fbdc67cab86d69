#!/usr/bin/env bash
# http.sh - chatd's HTTP ceiling against nginx, its idle cost and its
# start-up time, in one command.
#
#   bash bench/http.sh
#
# 1. Throughput. A private nginx (worker_processes = chatd's MHD worker
#    threads, one per core; access_log off; keep-alive) serves a static copy
#    of chatd's /health body from a temp dir: the reference, measured in
#    the same run as chatd. chatd runs on a fresh SQLite file with
#    build-bench/mock-llm (--delay-ms 0) upstream; before the runs it gets
#    one conversation of 20 messages (10 chats of `mock:tokens=20`) and, in
#    a second conversation, one answered question whose repeat is a cache
#    hit (each hit stores its exchange too, so every round asks it in a new
#    conversation). Then wrk (-t2 -c64 -dDURATION, bench/wrk-summary.lua) measures,
#    in this order, ROUNDS times over (interleaved, so that noise falls on
#    every target alike):
#      nginx        GET /health.json (static file)
#      health       chatd GET /health
#      conversation chatd GET /api/conversations/{id} (20 messages)
#      cache hit    chatd POST /api/chat, the cached question again
#    Reported per target: req/s per round and their mean, latency p50 and
#    p99 (means over the rounds), server CPU per request, and chatd/nginx
#    req/s ratios against the targets (health >= 0.50, conversation >=
#    0.30, cache hit >= 0.25). Before and after every chatd run curl checks
#    the answer (200, 20 messages, "cached": true); any wrk error (connect,
#    read, write, timeout, status >= 400) or failed check fails the run.
#    With PERF=1, one more wrk run per chatd target under
#    `perf record -g -p PID` (not part of the figures) prints the top
#    symbols.
# 2. Idle cost. A fresh chatd: VmRSS when /health first answered 200 (target
#    < 10 MB) and 0.5 s later, beside the floor under it (bench/rssfloor: a
#    program linking chatd's libraries, before and after curl_global_init); then bench/streamload --hold opens
#    IDLE_STREAMS (9000) POST /api/chat-stream requests of `mock:stall=1
#    mock:tokens=5 <i>`, so each stream gets one token and then idles with
#    its upstream connection open; once all have their token: chatd's
#    VmRSS, its fds and one /health's time. Then the client closes them and
#    the time until chatd has cancelled every upstream call is measured
#    (the mock's /stats "active" back to 0).
# 3. Start-up. STARTUP_RUNS (5) times, a fresh database file:
#    bench/firstreply execs chatd and polls GET /health every millisecond;
#    exec to the first 200, best and median (target < 100 ms).
#
# Environment: DURATION (10 s per wrk run), ROUNDS (2), CONNS (64),
# WRK_THREADS (2), IDLE_STREAMS (9000), RAMP (2000 connections/s),
# STARTUP_RUNS (5), PERF (0), PERF_S (5), NGINX (/usr/sbin/nginx),
# BUILD_DIR (build-bench), BUILD_TYPE (RelWithDebInfo), RESULTS_DIR
# (bench/results). Results: a table on stdout, details on stderr,
# $RESULTS_DIR/http-<date>.json. Exit status 0 when every run was clean and
# every check passed, else 1 (the targets are reported, not enforced).
# Every process is stopped and the temp dir removed on exit (also on
# Ctrl-C); every wrk/curl/streamload call has a time limit; 127.0.0.1 only.
# Needs bash, cmake, a C compiler and scripts/install-deps.sh --bench (wrk,
# nginx-light, curl).
set -euo pipefail
export LC_ALL=C # '.' decimals in EPOCHREALTIME, awk and printf

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH_NAME=http.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
IDLE_STREAMS=${IDLE_STREAMS:-9000}
RAMP=${RAMP:-2000}
STARTUP_RUNS=${STARTUP_RUNS:-5}
PERF=${PERF:-0}
PERF_S=${PERF_S:-5}
NGINX=${NGINX:-/usr/sbin/nginx}
BUILD=${BUILD_DIR:-build-bench}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
RESULTS=${RESULTS_DIR:-bench/results}
# targets: chatd/nginx req/s, idle RSS, start-up time
declare -A TARGET_RATIO=([health]=0.50 [conversation]=0.30 [cachehit]=0.25)
IDLE_RSS_TARGET_MB=10
STARTUP_TARGET_MS=100
WORKERS=$(nproc) # chatd's default: one MHD worker thread per core

for v in DURATION ROUNDS CONNS WRK_THREADS IDLE_STREAMS RAMP STARTUP_RUNS PERF_S; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "http.sh: $v must be a positive integer" >&2; exit 2; }
done
for tool in cmake curl wrk timeout "$NGINX"; do
    command -v "$tool" >/dev/null ||
        { echo "http.sh: needs $tool (scripts/install-deps.sh --bench installs wrk, nginx-light and curl)" >&2; exit 2; }
done
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then
    echo "http.sh: PERF=1 needs perf (linux-perf)" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/chatd-http-bench.XXXXXX")
# nginx's workers run as nobody when we are root: they must reach their files
chmod 755 "$TMP"
MOCK_PID=
CHATD_PID=
LOAD_PID=
NGINX_PID=
PERF_PID=

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    stop_pid "$PERF_PID"
    stop_pid "$NGINX_PID"
    bench_cleanup
}
bench_traps cleanup

minimum() { printf '%s\n' "$@" | sort -g | head -n 1; }
# ge A B: exit status 0 when A >= B (decimals)
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

# A TCP port between 20000 and 31999 (below the usual ephemeral range) that
# no socket on this machine uses now.
free_port() {
    local p hex used
    used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 12000))
        hex=$(printf '%04X' "$p")
        grep -qx "$hex" <<<"$used" || { echo "$p"; return 0; }
    done
    return 1
}

# VmRSS, RssAnon and RssFile of process $1, "KB KB KB".
rss_parts() { echo "$(vm_kb "$1" VmRSS) $(vm_kb "$1" RssAnon) $(vm_kb "$1" RssFile)"; }
# Pss of process $1 in kB: its RSS with each shared page divided among the
# processes that map it (shared libraries are mostly shared with others).
pss_kb() { awk '/^Pss:/ { print $2; exit }' "/proc/$1/smaps_rollup" 2>/dev/null || echo null; }

# CPU ticks of nginx: the master and its workers.
nginx_ticks() {
    local t=0 p
    for p in "$NGINX_PID" $(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null); do
        t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# --- build -------------------------------------------------------------------
bench_build "$BUILD" "$BUILD_TYPE" "$TMP/build.log" firstreply rssfloor
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" -lt $((IDLE_STREAMS * 2 + 200)) ]; then
    say "warning: the open-file limit $NOFILE is below 2 x $IDLE_STREAMS + 200: idle streams beyond it will fail"
fi

# --- mock and chatd --------------------------------------------------------------
"$BUILD/mock-llm" --port 0 --quiet --delay-ms 0 >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
MOCK_PORT=$(wait_port "$TMP/mock.out" "$MOCK_PID" 400) || { cat "$TMP/mock.err" >&2; die "mock-llm did not start"; }
LLM_URL="http://127.0.0.1:$MOCK_PORT/v1"

# start_chatd DBFILE: a fresh chatd; sets CHATD_PID, CHATD_PORT, CHATD_URL and
# waits for its first 200 on /health.
start_chatd() {
    rm -f "$1" "$1-wal" "$1-shm"
    : >"$TMP/chatd.err"
    "$BUILD/chatd" --host 127.0.0.1 --port 0 --db "sqlite:$1" --llm-url "$LLM_URL" \
        --log-level warn --export-dir "$TMP/exports" >"$TMP/chatd.out" 2>"$TMP/chatd.err" &
    CHATD_PID=$!
    CHATD_PORT=$(wait_port "$TMP/chatd.err" "$CHATD_PID" 400) || { cat "$TMP/chatd.err" >&2; die "chatd did not start"; }
    CHATD_URL="http://127.0.0.1:$CHATD_PORT"
    wait_health "$CHATD_URL" "$CHATD_PID" "$TMP/chatd.err"
}

# stop_chatd LABEL: stops it; CHATD_LOG_LINES: lines it wrote to stderr,
# the first ones shown.
stop_chatd() {
    stop_pid "$CHATD_PID"
    CHATD_PID=
    CHATD_LOG_LINES=$(wc -l <"$TMP/chatd.err")
    if [ "$CHATD_LOG_LINES" -gt 0 ]; then
        say "$1: chatd wrote $CHATD_LOG_LINES lines to stderr; the first 10:"
        head -n 10 "$TMP/chatd.err" >&2
    fi
}

DATE=$(date -u +%Y%m%d-%H%M%S)
COMMIT=$(bench_commit)
ANY_FAIL=0
PROBLEMS=()
problem() {
    ANY_FAIL=1
    PROBLEMS+=("$*")
    say "FAILED: $*"
}

BUSY_BEFORE=$(busy_pct)
[ "$BUSY_BEFORE" -le 10 ] ||
    say "warning: the machine is ${BUSY_BEFORE}% busy before the run: other processes will skew the figures"

start_chatd "$TMP/b.db"
say "chatd on port $CHATD_PORT, mock on $MOCK_PORT"
HEALTH_BODY=$HBODY

# --- preparation: a conversation of 20 messages, a cached question ------------------
CONV_ID=""
for i in $(seq 10); do
    body="{\"message\": \"mock:tokens=20 question $i\"${CONV_ID:+, \"conversation_id\": \"$CONV_ID\"}}"
    hreq POST "$CHATD_URL/api/chat" "$body"
    [ "$HCODE" = 200 ] || die "preparing: POST /api/chat answered $HCODE: $HBODY"
    id=$(conv_id_of "$HBODY")
    [ -n "$CONV_ID" ] || CONV_ID=$id
    [ "$id" = "$CONV_ID" ] || die "preparing: chat $i went to conversation '$id', not $CONV_ID"
done
CONV_URL="$CHATD_URL/api/conversations/$CONV_ID"
check_conversation() {
    hreq GET "$CONV_URL"
    [ "$HCODE" = 200 ] && [ "$(count_messages "$HBODY")" = 20 ]
}
check_conversation || die "preparing: GET $CONV_URL: $HCODE, $(count_messages "$HBODY") messages (want 200, 20): $HBODY"
CONV_BYTES=${#HBODY}

# The cached question: asked in a new conversation (a miss, answered by the
# mock), then again with that conversation's id: a hit, as is every repeat.
# Each hit stores its exchange too, so the conversation grows by 2 messages
# per request; every round gets a new one (prepare_cachehit), so that the
# rounds start alike.
CACHE_MSG="mock:tokens=20 the cached question"
CACHE_ID=""
CACHE_BODY=""
check_cachehit() {
    hreq POST "$CHATD_URL/api/chat" "$CACHE_BODY"
    [ "$HCODE" = 200 ] && [[ $HBODY == *'"cached": true'* ]] && [[ $HBODY == *"\"conversation_id\": \"$CACHE_ID\""* ]]
}
prepare_cachehit() {
    hreq POST "$CHATD_URL/api/chat" "{\"message\": \"$CACHE_MSG\"}"
    { [ "$HCODE" = 200 ] && [[ $HBODY == *'"cached": false'* ]]; } ||
        die "preparing the cached question: POST /api/chat answered $HCODE: $HBODY"
    CACHE_ID=$(conv_id_of "$HBODY")
    { [ -n "$CACHE_ID" ] && [ "$CACHE_ID" != "$CONV_ID" ]; } ||
        die "preparing: no new conversation for the cached question: $HBODY"
    CACHE_BODY="{\"message\": \"$CACHE_MSG\", \"conversation_id\": \"$CACHE_ID\"}"
    T_BODY[cachehit]=$CACHE_BODY
    check_cachehit || die "preparing: the repeated question is no cache hit: $HCODE $HBODY"
}
# messages stored in conversation $1 (sqlite3 shell, read-only next to chatd)
conv_messages() {
    timeout 60 sqlite3 -readonly "$TMP/b.db" "SELECT count(*) FROM messages WHERE conversation_id = '$1'" 2>/dev/null || echo null
}
declare -A T_BODY=()
prepare_cachehit
CACHE_BYTES=${#HBODY}
check_health() {
    hreq GET "$CHATD_URL/health"
    [ "$HCODE" = 200 ] && [[ $HBODY == *'"status": "服务正常"'* ]]
}
say "prepared: conversation $CONV_ID (20 messages, $CONV_BYTES bytes), cached question in $CACHE_ID ($CACHE_BYTES bytes), /health ${#HEALTH_BODY} bytes"

# --- nginx -----------------------------------------------------------------------
NG=$TMP/nginx
mkdir -p "$NG/www" "$NG/tmp" "$NG/logs"
printf '%s' "$HEALTH_BODY" >"$NG/www/health.json"
chmod -R a+rX "$NG"
NGINX_USER=""
if [ "$(id -u)" = 0 ]; then
    NGINX_USER="user $(id -un nobody 2>/dev/null || echo nobody) $(id -gn nobody 2>/dev/null || echo nogroup);"
fi
start_nginx() {
    for _ in 1 2 3 4 5; do
        NGINX_PORT=$(free_port) || die "no free port for nginx"
        cat >"$NG/nginx.conf" <<EOF
# bench/http.sh's reference server: a static file, nothing else
$NGINX_USER
worker_processes $WORKERS;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    types { application/json json; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $NG/www;
    }
}
EOF
        "$NGINX" -p "$NG" -c "$NG/nginx.conf" -g 'daemon off;' >"$TMP/nginx.out" 2>"$TMP/nginx.err" &
        NGINX_PID=$!
        local i
        for i in $(seq 200); do
            hreq GET "http://127.0.0.1:$NGINX_PORT/health.json"
            if [ "$HCODE" = 200 ]; then
                [ "$HBODY" = "$HEALTH_BODY" ] || die "nginx serves something else than health.json: $HBODY"
                return 0
            fi
            kill -0 "$NGINX_PID" 2>/dev/null || break
            sleep 0.025
        done
        stop_pid "$NGINX_PID"
        NGINX_PID=
        grep -q 'Address already in use' "$TMP/nginx.err" "$NG/logs/error.log" 2>/dev/null || break
    done
    cat "$TMP/nginx.err" "$NG/logs/error.log" >&2 2>/dev/null || true
    die "nginx did not start"
}
start_nginx
NGINX_URL="http://127.0.0.1:$NGINX_PORT/health.json"
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 | awk '{ print $2 }' || true)
say "nginx $NGINX_VERSION on port $NGINX_PORT ($WORKERS workers); wrk $WRK_VERSION"

# --- 1. throughput --------------------------------------------------------------
TARGETS=(nginx health conversation cachehit)
declare -A T_LABEL=([nginx]="nginx static file" [health]="chatd GET /health"
    [conversation]="chatd GET conversation" [cachehit]="chatd POST chat (cache hit)")
declare -A T_URL=([nginx]=$NGINX_URL [health]=$CHATD_URL/health [conversation]=$CONV_URL
    [cachehit]=$CHATD_URL/api/chat)
declare -A T_METHOD=([nginx]=GET [health]=GET [conversation]=GET [cachehit]=POST)
T_BODY=([nginx]="" [health]="" [conversation]="" [cachehit]=$CACHE_BODY)
declare -A T_CHECK=([nginx]=true [health]=check_health [conversation]=check_conversation
    [cachehit]=check_cachehit)
declare -A RPS P50 P99 CPU_US BUSY  # "v1 v2 ..." per target, one per round
WRK_JSON=""
CACHE_CONV_MSGS=()  # messages in the cache-hit conversation after each round

# run_wrk TARGET: one wrk run against TARGET; sets WJ (its JSON line), W_RPS,
# W_P50_MS, W_P99_MS, W_CPU_US (server CPU per request), W_BUSY (machine %).
run_wrk() {
    local t=$1 c0 c1 b0 t0 b1 t1 errs
    if [ "$t" = nginx ]; then c0=$(nginx_ticks); else c0=$(cpu_ticks "$CHATD_PID"); fi
    read -r b0 t0 _ <<<"$(machine_ticks)"
    WRK_METHOD=${T_METHOD[$t]} WRK_BODY=${T_BODY[$t]} \
        timeout $((DURATION + 60)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
        -s bench/wrk-summary.lua "${T_URL[$t]}" >"$TMP/wrk.out" 2>&1 &
    LOAD_PID=$!
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=
    read -r b1 t1 _ <<<"$(machine_ticks)"
    if [ "$t" = nginx ]; then c1=$(nginx_ticks); else c1=$(cpu_ticks "$CHATD_PID" 2>/dev/null || echo "$c0"); fi
    WJ=$(grep '^{' "$TMP/wrk.out" | tail -n 1 || true)
    if [ "$rc" != 0 ] || [ -z "$WJ" ]; then
        cat "$TMP/wrk.out" >&2
        problem "${T_LABEL[$t]}: wrk exit $rc, no result"
        WJ="{\"requests\": 0, \"duration_us\": 1, \"err_connect\": 0, \"err_read\": 0, \"err_write\": 0, \"err_status\": 0, \"err_timeout\": 0, \"lat_p50_us\": 0, \"lat_p99_us\": 0}"
    fi
    errs=$(awk -v j="$WJ" 'BEGIN { n = split("err_connect err_read err_write err_status err_timeout", k, " ")
        s = 0; for (i = 1; i <= n; i++) if (match(j, "\"" k[i] "\": [0-9]+")) { v = substr(j, RSTART, RLENGTH); sub(/.*: /, "", v); s += v }
        print s }')
    if [ "$errs" != 0 ] || grep -q 'Non-2xx' "$TMP/wrk.out"; then
        grep -E 'Socket errors|Non-2xx|requests in' "$TMP/wrk.out" >&2 || true
        problem "${T_LABEL[$t]}: wrk counted $errs errors: $WJ"
    fi
    W_RPS=$(calc '%.0f' "$(jget "$WJ" requests) / ($(jget "$WJ" duration_us) / 1e6)")
    W_P50_MS=$(calc '%.3f' "$(jget "$WJ" lat_p50_us) / 1000")
    W_P99_MS=$(calc '%.3f' "$(jget "$WJ" lat_p99_us) / 1000")
    W_CPU_US=$(calc '%.1f' "($c1 - $c0) / $CLK_TCK * 1e6 / ($(jget "$WJ" requests) > 0 ? $(jget "$WJ" requests) : 1)")
    W_BUSY=$(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
}

for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        [ "$t" != cachehit ] || [ "$round" = 1 ] || prepare_cachehit
        ${T_CHECK[$t]} || problem "${T_LABEL[$t]}: check before round $round failed: $HCODE ${HBODY:0:300}"
        run_wrk "$t"
        if [ "$t" != nginx ]; then
            kill -0 "$CHATD_PID" 2>/dev/null || { cat "$TMP/chatd.err" >&2; die "chatd died during ${T_LABEL[$t]}"; }
        fi
        ${T_CHECK[$t]} || problem "${T_LABEL[$t]}: check after round $round failed: $HCODE ${HBODY:0:300}"
        [ "$t" != cachehit ] || CACHE_CONV_MSGS+=("$(conv_messages "$CACHE_ID")")
        RPS[$t]+="${RPS[$t]:+ }$W_RPS"
        P50[$t]+="${P50[$t]:+ }$W_P50_MS"
        P99[$t]+="${P99[$t]:+ }$W_P99_MS"
        CPU_US[$t]+="${CPU_US[$t]:+ }$W_CPU_US"
        BUSY[$t]+="${BUSY[$t]:+ }$W_BUSY"
        say "round $round, ${T_LABEL[$t]}: $W_RPS req/s, p50 $W_P50_MS ms, p99 $W_P99_MS ms, server cpu $W_CPU_US us/req, machine busy $W_BUSY%"
        WRK_JSON+="${WRK_JSON:+,
    }{\"round\": $round, \"target\": \"$t\", \"req_per_s\": $W_RPS, \"server_cpu_us_per_req\": $W_CPU_US, \"machine_busy_pct\": $W_BUSY, \"wrk\": $WJ}"
    done
done

# PERF=1: where chatd's CPU goes, one more (unmeasured) run per chatd target.
PERF_JSON=null
if [ "$PERF" = 1 ]; then
    PERF_JSON=""
    for t in health conversation cachehit; do
        [ "$t" != cachehit ] || prepare_cachehit
        (sleep 2 && exec perf record -q -g -p "$CHATD_PID" -o "$TMP/perf-$t.data" -- sleep "$PERF_S") \
            >"$TMP/perf-$t.out" 2>&1 &
        PERF_PID=$!
        run_wrk "$t"
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=
        # self time by library, then by symbol: shares of chatd's samples
        for sort in dso dso,symbol; do
            timeout 120 perf report -i "$TMP/perf-$t.data" --stdio --no-children -g none \
                --sort "$sort" --percent-limit 0.8 2>/dev/null |
                awk '/^ *[0-9.]+%/ { sub(/ +- +- *$/, ""); $1 = $1; print }' | head -n 25 >"$TMP/perf-$t.$sort" || true
        done
        say "perf, ${T_LABEL[$t]} ($W_RPS req/s under perf): chatd's samples (self) by library, then by symbol:"
        sed 's/^/    /' "$TMP/perf-$t.dso" >&2
        echo "    --" >&2
        sed 's/^/    /' "$TMP/perf-$t.dso,symbol" >&2
        PERF_JSON+="${PERF_JSON:+,
    }\"$t\": {\"req_per_s_under_perf\": $W_RPS"
        for sort in dso dso,symbol; do
            lines=""
            while IFS= read -r l; do lines+="${lines:+, }\"$(jstr "$l")\""; done <"$TMP/perf-$t.$sort"
            PERF_JSON+=", \"${sort/,/_}\": [$lines]"
        done
        PERF_JSON+="}"
    done
    PERF_JSON="{$PERF_JSON}"
fi

THROUGHPUT_THREADS=$(thread_cpu "$CHATD_PID")
THROUGHPUT_HWM_KB=$(vm_kb "$CHATD_PID" VmHWM)
DB_MESSAGES=$(sqlite3 "$TMP/b.db" "SELECT count(*) FROM messages" 2>/dev/null || echo null)
stop_chatd throughput
THROUGHPUT_LOG_LINES=$CHATD_LOG_LINES
[ "$THROUGHPUT_LOG_LINES" = 0 ] || problem "chatd logged $THROUGHPUT_LOG_LINES lines at warn during the throughput runs"
stop_pid "$NGINX_PID"
NGINX_PID=

# --- 2. idle cost ------------------------------------------------------------------
say "idle: a fresh chatd, then $IDLE_STREAMS idle streams"
start_chatd "$TMP/idle.db"
read -r RSS_START ANON_START FILE_START <<<"$(rss_parts "$CHATD_PID")"
PSS_START=$(pss_kb "$CHATD_PID")
sleep 0.5
read -r RSS_IDLE ANON_IDLE FILE_IDLE <<<"$(rss_parts "$CHATD_PID")"
IDLE_TIMEOUT=$((IDLE_STREAMS / RAMP + 60))
"$BUILD/streamload" --port "$CHATD_PORT" -n "$IDLE_STREAMS" --tokens 5 --ramp "$RAMP" \
    --timeout "$IDLE_TIMEOUT" --hold 300 --json --progress >"$TMP/hold.out" 2>"$TMP/hold.err" &
LOAD_PID=$!
HELD=""
for _ in $(seq $((IDLE_TIMEOUT * 10 + 100))); do
    HELD=$(grep '"phase": "held"' "$TMP/hold.out" || true)
    [ -z "$HELD" ] || break
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$HELD" ] || { tail -n 20 "$TMP/hold.err" >&2; problem "idle streams: streamload never reported them held"; HELD=null; }
if kill -0 "$CHATD_PID" 2>/dev/null; then
    read -r RSS_HELD ANON_HELD FILE_HELD <<<"$(rss_parts "$CHATD_PID")"
    FDS_HELD=$(find "/proc/$CHATD_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    MOCK_RSS_HELD=$(vm_kb "$MOCK_PID" VmRSS)
    HEALTH_UNDER_IDLE_S=$(curl -s -o /dev/null --max-time 10 -w '%{time_total}' "$CHATD_URL/health" || echo null)
else
    problem "chatd died while opening the idle streams"
    cat "$TMP/chatd.err" >&2
    RSS_HELD=0 ANON_HELD=0 FILE_HELD=0 FDS_HELD=0 MOCK_RSS_HELD=0 HEALTH_UNDER_IDLE_S=null
fi
N_HELD=$(jget "$HELD" held)
say "idle: $N_HELD streams held: chatd VmRSS $(mb "$RSS_HELD") MB (anon $(mb "$ANON_HELD"), file $(mb "$FILE_HELD")), $FDS_HELD fds; /health in ${HEALTH_UNDER_IDLE_S} s"
kill -USR1 "$LOAD_PID" 2>/dev/null || true
wait "$LOAD_PID" || true
LOAD_PID=
T_CLOSED=$(now)
HOLD=$(grep '^{' "$TMP/hold.out" | grep -v '"phase"' | tail -n 1 || true)
grep -v '^{' "$TMP/hold.out" >&2 || true
[ -n "$HOLD" ] || { tail -n 20 "$TMP/hold.err" >&2; HOLD=null; }
{ [ "$(jget "$HOLD" failed)" = 0 ] && [ "$(jget "$HOLD" completed)" = "$IDLE_STREAMS" ]; } ||
    problem "idle streams: $(jget "$HOLD" completed) of $IDLE_STREAMS held to the end, $(jget "$HOLD" failed) failed"
# How long chatd takes to notice the clients left: every upstream call
# cancelled (the mock's active count back to 0).
CANCEL_S=null
ACTIVE=""
for _ in $(seq 1200); do
    ACTIVE=$(curl -s --max-time 5 "http://127.0.0.1:$MOCK_PORT/stats" | sed -n 's/.*"active": *\([0-9]*\).*/\1/p')
    if [ "$ACTIVE" = 0 ]; then
        CANCEL_S=$(elapsed "$T_CLOSED" "$(now)")
        break
    fi
    sleep 0.1
done
[ "$CANCEL_S" != null ] || say "warning: 120 s after the clients closed, $ACTIVE upstream calls are still open"
say "idle: upstream calls all cancelled ${CANCEL_S} s after the clients closed"
if kill -0 "$CHATD_PID" 2>/dev/null; then
    RSS_AFTER=$(vm_kb "$CHATD_PID" VmRSS)
    HWM_IDLE=$(vm_kb "$CHATD_PID" VmHWM)
    check_health || problem "chatd's /health after the idle streams: $HCODE $HBODY"
else
    RSS_AFTER=0 HWM_IDLE=0
    problem "chatd died after the idle streams"
fi
IDLE_STORED=$(sqlite3 "$TMP/idle.db" "SELECT count(*) FROM messages" 2>/dev/null || echo null)
IDLE_WARN_LINES=$(grep -c ' warn ' "$TMP/chatd.err" || true)
IDLE_ERROR_LINES=$(grep -c ' error ' "$TMP/chatd.err" || true)
stop_chatd "idle streams"
IDLE_LOG_LINES=$CHATD_LOG_LINES
PER_STREAM_KB=$( [ "${N_HELD:-0}" != - ] && [ "${N_HELD:-0}" -gt 0 ] && calc '%.1f' "($RSS_HELD - $RSS_IDLE) / $N_HELD" || echo null)

# The floor under the idle RSS: chatd's libraries loaded, nothing done;
# then libcurl initialised (bench/rssfloor.c).
FLOOR=$(timeout 30 "$BUILD/rssfloor" 2>/dev/null) || { problem "rssfloor failed"; FLOOR=null; }
FLOOR_LINKED=$(jget "$FLOOR" linked_rss_kb)
FLOOR_CURL=$(jget "$FLOOR" curl_init_rss_kb)

# --- 3. start-up -------------------------------------------------------------------
STARTS=()
STARTUP_JSON=""
STARTUP_RSS=()
for i in $(seq "$STARTUP_RUNS"); do
    port=$(free_port) || die "no free port"
    db="$TMP/start-$i.db"
    rm -f "$db"*
    out=$(timeout 30 "$BUILD/firstreply" --port "$port" --interval-us 1000 --timeout-ms 10000 -- \
        "$BUILD/chatd" --host 127.0.0.1 --port "$port" --db "sqlite:$db" --llm-url "$LLM_URL" \
        --log-level warn --export-dir "$TMP/exports" 2>"$TMP/start.err") || true
    j=$(grep '^{' <<<"$out" | tail -n 1 || true)
    if [ -z "$j" ] || [ "$(jget "$j" ok)" != true ]; then
        cat "$TMP/start.err" >&2
        problem "start-up run $i: no 200 on /health: ${j:-no result}"
        continue
    fi
    [ ! -s "$TMP/start.err" ] || { say "start-up run $i: chatd wrote to stderr:"; head -n 5 "$TMP/start.err" >&2; }
    STARTS+=("$(jget "$j" exec_to_200_ms)")
    STARTUP_RSS+=("$(jget "$j" rss_kb)")
    STARTUP_JSON+="${STARTUP_JSON:+, }$j"
    sleep 0.2
done
if [ ${#STARTS[@]} -gt 0 ]; then
    START_BEST=$(minimum "${STARTS[@]}")
    START_MEDIAN=$(median "${STARTS[@]}")
else
    START_BEST=null START_MEDIAN=null
fi
say "start-up (exec to the first 200 on /health): ${STARTS[*]:-none} ms"

# --- report ------------------------------------------------------------------------
verdict() { # VALUE OP TARGET
    [ "$1" != null ] || { echo "-"; return; }
    case $2 in
    ge) ge "$1" "$3" && echo PASS || echo FAIL ;;
    lt) awk -v a="$1" -v b="$3" 'BEGIN { exit !(a < b) }' && echo PASS || echo FAIL ;;
    esac
}
echo
echo "chatd HTTP vs nginx $NGINX_VERSION: wrk $WRK_VERSION -t$WRK_THREADS -c$CONNS -d${DURATION}s, $ROUNDS rounds" \
    "interleaved; $(nproc) cpus, $WORKERS nginx workers / MHD threads; commit $COMMIT, $BUILD_TYPE build"
printf '%-28s %-17s %9s %8s %8s %8s %7s %7s %7s %7s\n' "" "req/s" "req/s" "p50" "p99" "server" "" "" "" "busy%"
printf '%-28s %-17s %9s %8s %8s %8s %7s %7s %7s %7s\n' target "per round" mean ms ms "us/req" ratio target verdict run
TARGETS_JSON=""
# shellcheck disable=SC2086 # a list of numbers
NGINX_MEAN=$(mean ${RPS[nginx]})
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    m=$(calc '%.0f' "$(mean ${RPS[$t]})")
    # shellcheck disable=SC2086
    p50=$(calc '%.3f' "$(mean ${P50[$t]})")
    # shellcheck disable=SC2086
    p99=$(calc '%.3f' "$(mean ${P99[$t]})")
    # shellcheck disable=SC2086
    cpu=$(calc '%.1f' "$(mean ${CPU_US[$t]})")
    if [ "$t" = nginx ]; then
        ratio=1 tgt="-" v="-" ratios="null"
    else
        ratio=$(calc '%.3f' "$m / $NGINX_MEAN")
        tgt=${TARGET_RATIO[$t]}
        v=$(verdict "$ratio" ge "$tgt")
        # per-round ratios, each against the nginx run of the same round
        ratios=$(paste -d' ' <(tr ' ' '\n' <<<"${RPS[$t]}") <(tr ' ' '\n' <<<"${RPS[nginx]}") |
            awk '{ printf "%s%.3f", (NR > 1 ? ", " : ""), $1 / $2 }')
        ratios="[$ratios]"
    fi
    printf '%-28s %-17s %9s %8s %8s %8s %7s %7s %7s %7s\n' "${T_LABEL[$t]}" "${RPS[$t]// //}" "$m" \
        "$p50" "$p99" "$cpu" "$ratio" "$tgt" "$v" "${BUSY[$t]// //}"
    TARGETS_JSON+="${TARGETS_JSON:+,
    }\"$t\": {\"label\": \"${T_LABEL[$t]}\", \"url\": \"$(jstr "${T_URL[$t]}")\", \"method\": \"${T_METHOD[$t]}\""
    TARGETS_JSON+=", \"req_per_s\": [${RPS[$t]// /, }], \"req_per_s_mean\": $m"
    TARGETS_JSON+=", \"p50_ms\": [${P50[$t]// /, }], \"p50_ms_mean\": $p50, \"p99_ms\": [${P99[$t]// /, }], \"p99_ms_mean\": $p99"
    TARGETS_JSON+=", \"server_cpu_us_per_req\": [${CPU_US[$t]// /, }], \"machine_busy_pct\": [${BUSY[$t]// /, }]"
    TARGETS_JSON+=", \"ratio_vs_nginx\": $ratio, \"ratio_per_round\": $ratios"
    TARGETS_JSON+=", \"ratio_target\": $([ "$tgt" = - ] && echo null || echo "$tgt"), \"verdict\": \"$v\"}"
done
echo "req/s: requests / wrk's duration in each round, then their mean; p50, p99: wrk's latency"
echo "percentiles (means over the rounds); server us/req: CPU of chatd (or nginx's master and"
echo "workers) per request; ratio: chatd's mean req/s / nginx's; busy%: the whole machine per round."
echo "conversation: $CONV_BYTES-byte body (20 messages); cache hit: $CACHE_BYTES bytes, each hit also"
echo "stores its exchange: a new conversation per round, ${CACHE_CONV_MSGS[*]} messages in it after each"
echo "round; /health and nginx's copy of it: ${#HEALTH_BODY} bytes."

RSS_V=$(verdict "$(calc '%.3f' "$RSS_START / 1024")" lt "$IDLE_RSS_TARGET_MB")
START_V=$(verdict "$START_BEST" lt "$STARTUP_TARGET_MS")
echo
echo "chatd idle cost"
printf '  %-44s %8s MB  (anon %s, file %s; Pss %s)  target < %s MB: %s\n' "VmRSS at the first 200 on /health" \
    "$(mb "$RSS_START")" "$(mb "$ANON_START")" "$(mb "$FILE_START")" "$(mb "$PSS_START")" "$IDLE_RSS_TARGET_MB" "$RSS_V"
printf '  %-44s %8s MB  (after curl_global_init: %s MB; bench/rssfloor)\n' \
    "floor: chatd's libraries loaded, nothing done" "$(mb "$FLOOR_LINKED")" "$(mb "$FLOOR_CURL")"
printf '  %-44s %8s MB  (anon %s, file %s)\n' "VmRSS 0.5 s later" "$(mb "$RSS_IDLE")" "$(mb "$ANON_IDLE")" "$(mb "$FILE_IDLE")"
printf '  %-44s %8s MB  (anon %s, file %s; %s KB per stream; %s fds)\n' \
    "VmRSS with ${N_HELD} idle streams" "$(mb "$RSS_HELD")" "$(mb "$ANON_HELD")" "$(mb "$FILE_HELD")" \
    "$PER_STREAM_KB" "$FDS_HELD"
printf '  %-44s %8s MB  (peak %s MB)\n' "VmRSS after they closed" "$(mb "$RSS_AFTER")" "$(mb "$HWM_IDLE")"
printf '  %-44s %8s s\n' "/health with the streams open" "$HEALTH_UNDER_IDLE_S"
printf '  %-44s %8s s  (%s exchanges stored, %s warn lines)\n' "client close -> every upstream call cancelled" \
    "$CANCEL_S" "$IDLE_STORED" "$IDLE_WARN_LINES"
echo
echo "chatd start-up: exec -> first 200 on GET /health, fresh database, $STARTUP_RUNS runs"
printf '  best %s ms, median %s ms (runs: %s)  target < %s ms: %s\n' "$START_BEST" "$START_MEDIAN" \
    "${STARTS[*]:-none}" "$STARTUP_TARGET_MS" "$START_V"
if [ ${#PROBLEMS[@]} -gt 0 ]; then
    echo
    echo "PROBLEMS:"
    printf '  %s\n' "${PROBLEMS[@]}"
fi

PROBLEMS_JSON=""
for p in "${PROBLEMS[@]}"; do PROBLEMS_JSON+="${PROBLEMS_JSON:+, }\"$(jstr "$p")\""; done
mkdir -p "$RESULTS"
OUT="$RESULTS/http-$DATE.json"
cat >"$OUT" <<EOF
{"benchmark": "http", "date": "$DATE", "commit": "$COMMIT", "build_type": "$BUILD_TYPE",
 "machine": {"cpus": $(nproc), "kernel": "$(uname -r)", "nofile": $NOFILE, "busy_pct_before": $BUSY_BEFORE},
 "nginx": {"version": "$NGINX_VERSION", "workers": $WORKERS},
 "wrk": {"version": "$WRK_VERSION", "threads": $WRK_THREADS, "connections": $CONNS, "duration_s": $DURATION, "rounds": $ROUNDS},
 "bodies_bytes": {"health": ${#HEALTH_BODY}, "conversation": $CONV_BYTES, "cachehit": $CACHE_BYTES},
 "targets": {
    $TARGETS_JSON
 },
 "runs": [
    $WRK_JSON
 ],
 "throughput_chatd": {"threads_cpu_s": "$THROUGHPUT_THREADS", "peak_rss_kb": $THROUGHPUT_HWM_KB,
    "messages_stored": $DB_MESSAGES, "stderr_lines": $THROUGHPUT_LOG_LINES,
    "cachehit_conversation_messages_per_round": [$(IFS=,; s="${CACHE_CONV_MSGS[*]:-}"; echo "${s//,/, }")]},
 "perf_top": $PERF_JSON,
 "idle": {"rss_start_kb": $RSS_START, "anon_start_kb": $ANON_START, "file_start_kb": $FILE_START,
    "pss_start_kb": $PSS_START, "floor": $FLOOR,
    "rss_target_mb": $IDLE_RSS_TARGET_MB, "verdict": "$RSS_V",
    "rss_idle_kb": $RSS_IDLE, "anon_idle_kb": $ANON_IDLE, "file_idle_kb": $FILE_IDLE,
    "streams": $IDLE_STREAMS, "held": ${N_HELD/-/null}, "rss_held_kb": $RSS_HELD, "anon_held_kb": $ANON_HELD,
    "file_held_kb": $FILE_HELD, "kb_per_stream": $PER_STREAM_KB, "fds_held": $FDS_HELD,
    "mock_rss_held_kb": $MOCK_RSS_HELD, "health_s_with_streams": $HEALTH_UNDER_IDLE_S,
    "rss_after_close_kb": $RSS_AFTER, "peak_rss_kb": $HWM_IDLE, "cancel_all_s": $CANCEL_S,
    "exchanges_stored": $IDLE_STORED, "stderr_lines": $IDLE_LOG_LINES,
    "warn_lines": $IDLE_WARN_LINES, "error_lines": $IDLE_ERROR_LINES,
    "held_report": $HELD,
    "load": $HOLD},
 "startup": {"runs": [$STARTUP_JSON], "exec_to_200_ms": [$(IFS=,; s="${STARTS[*]:-}"; echo "${s//,/, }")],
    "best_ms": $START_BEST, "median_ms": $START_MEDIAN, "target_ms": $STARTUP_TARGET_MS, "verdict": "$START_V",
    "rss_kb": [$(IFS=,; s="${STARTUP_RSS[*]:-}"; echo "${s//,/, }")]},
 "problems": [$PROBLEMS_JSON]}
EOF
echo
echo "results: $OUT"
exit "$ANY_FAIL"
