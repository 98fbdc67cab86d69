#!/usr/bin/env bash
# export.sh - chatd's export benchmark, in one command.
#
#   bash bench/export.sh
#
# 1. Data: SQLite files with chatd's schema, written straight by
#    bench/export_gen.py (not through chatd) and cached in
#    build-bench/data/ by their parameters: one conversation of 100,000
#    messages, one of 1,000,000, and 3,600 and 36,000 conversations of 30
#    messages for export-all. Their schema is checked against the one chatd
#    creates, and last_active is set to now before each run so that every
#    conversation is live.
# 2. For each data set and format (csv, json): a fresh chatd on the file
#    (so VmHWM, its peak RSS, is per case) exports over HTTP to /dev/null
#    (curl), REPS times. Reported: median seconds, MB/s, messages/s, bytes,
#    chatd's CPU per export and peak RSS; the export file chatd keeps is
#    checked (its size is the download's and its record count is right),
#    then deleted. Target: the 1,000,000 case's peak RSS within 16 MB of
#    the 100,000 case's.
# 3. The floor: the sqlite3 shell reads the same rows in the same order
#    (.mode csv / .mode json for the two formats; .mode list recorded too)
#    to /dev/null, REPS times. Reported: chatd's time / sqlite3's time.
#    Target: 2x at most.
# 4. Concurrency: STREAMS concurrent chat streams (bench/streamload against
#    chatd with build-bench/mock-llm upstream, TOKENS tokens DELAY_MS apart)
#    on a copy of the 3,600 x 30 set, once alone and once while CONC curl
#    loops download export-all (json) over and over. Reported: completed
#    streams, TTFT p50/p99 with and without the exports, and the exports'
#    count and throughput.
#
# Environment: REPS (3), SETS ("1x100000 1x1000000 3600x30 36000x30": CxM,
# C conversations of M messages; the RSS target needs 1x100000 and
# 1x1000000, the concurrency run 3600x30), FORMATS ("csv json"), CONC (20),
# STREAMS (200), TOKENS (100), DELAY_MS (50), CONCURRENCY (1; 0 skips 4),
# BUILD_DIR (build-bench), BUILD_TYPE (RelWithDebInfo), DATA_DIR
# ($BUILD_DIR/data), RESULTS_DIR (bench/results). Results: a table on
# stdout, details on stderr, and $RESULTS_DIR/export-<date>.json. Exit status 0 when every export and
# stream completed and was right, else 1 (the targets are reported, not
# enforced). All processes and temp files are removed on exit (also on
# Ctrl-C); every network call has a timeout; 127.0.0.1 only. Needs bash,
# cmake, a C compiler and scripts/install-deps.sh's libraries, curl,
# the sqlite3 shell and python3 (standard library only, for the data).
set -euo pipefail
export LC_ALL=C # '.' decimals in EPOCHREALTIME, awk and printf

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH_NAME=export.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"

REPS=${REPS:-3}
SETS=${SETS:-"1x100000 1x1000000 3600x30 36000x30"}
FORMATS=${FORMATS:-"csv json"}
CONC=${CONC:-20}
STREAMS=${STREAMS:-200}
TOKENS=${TOKENS:-100}
DELAY_MS=${DELAY_MS:-50}
CONCURRENCY=${CONCURRENCY:-1}
BUILD=${BUILD_DIR:-build-bench}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
DATA=${DATA_DIR:-$BUILD/data}
RSS_TARGET_MB=16
RATIO_TARGET=2
CONC_SET=3600x30

for s in $SETS; do
    [[ $s =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "export.sh: a set is CxM (e.g. 3600x30), not '$s'" >&2; exit 2; }
done
for f in $FORMATS; do
    [[ $f == csv || $f == json ]] || { echo "export.sh: formats are csv and json, not '$f'" >&2; exit 2; }
done
for v in REPS CONC STREAMS TOKENS DELAY_MS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "export.sh: $v must be a positive integer" >&2; exit 2; }
done
for tool in cmake curl sqlite3 python3 timeout; do
    command -v "$tool" >/dev/null || { echo "export.sh: needs $tool" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/chatd-export-bench.XXXXXX")
EXPDIR=$TMP/exports
MOCK_PID=
CHATD_PID=
LOAD_PID=
LOOP_PIDS=()

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    : >"$TMP/stop" 2>/dev/null || true
    local p
    for p in "${LOOP_PIDS[@]}"; do stop_pid "$p"; done
    bench_cleanup
}
bench_traps cleanup

# --- build -------------------------------------------------------------------
bench_build "$BUILD" "$BUILD_TYPE" "$TMP/build.log"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- chatd -------------------------------------------------------------------
# start_chatd DBFILE [LLM_URL]: a fresh chatd on DBFILE; sets CHATD_PID,
# CHATD_PORT.
start_chatd() {
    local db=$1 llm=${2:-http://127.0.0.1:1/v1}
    : >"$TMP/chatd.err"
    mkdir -p "$EXPDIR"
    "$BUILD/chatd" --host 127.0.0.1 --port 0 --db "sqlite:$db" --llm-url "$llm" \
        --log-level warn --export-dir "$EXPDIR" >"$TMP/chatd.out" 2>"$TMP/chatd.err" &
    CHATD_PID=$!
    CHATD_PORT=$(wait_port "$TMP/chatd.err" "$CHATD_PID" 400) || {
        cat "$TMP/chatd.err" >&2
        die "chatd did not start on $db"
    }
}

# stop_chatd LABEL: stops it, and shows what it wrote to stderr, if anything.
stop_chatd() {
    stop_pid "$CHATD_PID"
    CHATD_PID=
    local n
    n=$(wc -l <"$TMP/chatd.err")
    CHATD_LOG_LINES=$n
    if [ "$n" -gt 0 ]; then
        say "$1: chatd wrote $n lines to stderr; the first 10:"
        head -n 10 "$TMP/chatd.err" >&2
    fi
}

# --- 1. data -------------------------------------------------------------------
mkdir -p "$DATA"
GEN_VERSION=1 # bump when export_gen.py's output changes: the cache key
db_file() { echo "$DATA/export-v$GEN_VERSION-$1.db"; }

# The schema chatd creates, to check the generated files against.
start_chatd "$TMP/schema.db"
stop_chatd schema
schema_of() { sqlite3 "$1" "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"; }
schema_of "$TMP/schema.db" >"$TMP/schema.want"

GEN_S_TOTAL=0
for set in $SETS; do
    f=$(db_file "$set")
    if [ ! -f "$f" ]; then
        say "generating $set (conversations x messages) into $f"
        t0=$(now)
        timeout 1800 python3 bench/export_gen.py --convs "${set%x*}" --msgs "${set#*x}" --out "$f" ||
            die "export_gen.py failed for $set"
        GEN_S_TOTAL=$(calc '%.1f' "$GEN_S_TOTAL + $(elapsed "$t0" "$(now)" 6)")
    fi
    schema_of "$f" | cmp -s - "$TMP/schema.want" ||
        die "$f: schema differs from the one chatd creates (delete the file to regenerate it)"
    # Live: last_active now (a cached file ages past the 24 h session TTL).
    nowts=$(date -u +%Y-%m-%dT%H:%M:%S.%6N)
    timeout 120 sqlite3 "$f" "PRAGMA journal_mode=WAL; UPDATE conversations SET last_active = '$nowts';" >/dev/null ||
        die "cannot refresh last_active in $f"
done

# --- 2 and 3. exports and the sqlite3 floor -------------------------------------
# sqlite3_time MODE DB SQL: median wall seconds of REPS runs to /dev/null.
sqlite3_time() {
    local mode=$1 db=$2 sql=$3 t0 ts=()
    for _ in $(seq "$REPS"); do
        t0=$(now)
        timeout 600 sqlite3 -bail "-$mode" "$db" "$sql" >/dev/null || die "sqlite3 failed on $db"
        ts+=("$(elapsed "$t0" "$(now)" 6)")
    done
    median "${ts[@]}"
}

# The export-all rows in chatd's order: conversations by (created_at, id),
# live ones only, each one's messages by id. idx_messages_conversation is
# (conversation_id, id), so the index search returns them in id order;
# adding m.id to ORDER BY makes SQLite sort each conversation's rows again
# in a temp B-tree (slower), so the floor leaves it out.
all_sql() {
    echo "SELECT c.id, c.created_at, c.last_active, m.timestamp, m.role, m.content" \
        "FROM conversations c JOIN messages m ON m.conversation_id = c.id" \
        "WHERE c.last_active >= '$1' ORDER BY c.created_at, c.id"
}
one_sql() {
    echo "SELECT m.timestamp, m.role, m.content FROM messages m WHERE conversation_id = '$1' ORDER BY id"
}

# Counts the records of export file $1 (format $2): json, lines;
# csv, lines that end in CRLF (content has bare LF only).
records_in() {
    if [ "$2" = json ]; then wc -l <"$1"; else grep -c $'\r$' "$1" || true; fi
}

# export_once URL: one download to /dev/null; sets CODE BYTES SECS NAME RC.
export_once() {
    local out
    RC=0
    out=$(timeout 900 curl -s -o /dev/null --max-time 880 \
        -w '%{http_code} %{size_download} %{time_total} %header{x-export-file}' "$1") || RC=$?
    read -r CODE BYTES SECS NAME <<<"$out"
    CODE=${CODE:-000} BYTES=${BYTES:-0} SECS=${SECS:-0} NAME=${NAME:-}
    NAME=${NAME//$'\r'/}
}

DATE=$(date -u +%Y%m%d-%H%M%S)
COMMIT=$(bench_commit)
ANY_FAIL=0
ROWS=()
CASES_JSON=""
declare -A PEAK_KB

BUSY_BEFORE=$(busy_pct)
[ "$BUSY_BEFORE" -le 10 ] ||
    say "warning: the machine is ${BUSY_BEFORE}% busy before the run: other processes will skew the figures"

for set in $SETS; do
    f=$(db_file "$set")
    convs=${set%x*}
    per=${set#*x}
    msgs=$((convs * per))
    cat "$f" >/dev/null # the page cache holds it for chatd and sqlite3 alike
    live_since=$(date -u -d '-1 day' +%Y-%m-%dT%H:%M:%S.%6N)
    if [ "$convs" = 1 ]; then
        id=$(sqlite3 "$f" "SELECT id FROM conversations LIMIT 1")
        url_path="/api/conversations/$id/export"
        sql=$(one_sql "$id")
        kind=one
    else
        url_path="/api/conversations/export-all"
        sql=$(all_sql "$live_since")
        kind=all
    fi
    list_s=$(sqlite3_time list "$f" "$sql")
    for fmt in $FORMATS; do
        label="$set $fmt"
        sq_s=$(sqlite3_time "$fmt" "$f" "$sql")
        start_chatd "$f"
        sleep 0.3
        idle_kb=$(vm_kb "$CHATD_PID" VmRSS)
        c0=$(cpu_ticks "$CHATD_PID")
        times=()
        ok=true
        why=""
        bytes=0
        for rep in $(seq "$REPS"); do
            export_once "http://127.0.0.1:$CHATD_PORT$url_path?format=$fmt"
            times+=("$SECS")
            if [ "$CODE" != 200 ] || [ "$RC" != 0 ]; then
                ok=false
                why+="rep $rep: HTTP $CODE, curl exit $RC, $BYTES bytes; "
                [ "$CODE" != 404 ] || why+="(are the export endpoints there?) "
                break
            fi
            if [ "$rep" = 1 ]; then
                bytes=$BYTES
                # The file chatd kept: whole, with every record.
                kept="$EXPDIR/$NAME"
                for _ in $(seq 40); do [ -n "$NAME" ] && [ -f "$kept" ] && break; sleep 0.05; done
                if [ -z "$NAME" ] || [ ! -f "$kept" ]; then
                    ok=false
                    why+="no export file '${NAME}' in the export dir; "
                else
                    ksize=$(stat -c %s "$kept")
                    recs=$(records_in "$kept" "$fmt")
                    if [ "$kind" = one ] || [ "$fmt" = csv ]; then want=$((msgs + 1)); else want=$((convs + 1)); fi
                    [ "$ksize" = "$BYTES" ] || { ok=false; why+="export file $ksize bytes, download $BYTES; "; }
                    [ "$recs" = "$want" ] || { ok=false; why+="$recs records in the export file, want $want; "; }
                fi
            elif [ "$BYTES" != "$bytes" ]; then
                ok=false
                why+="rep $rep: $BYTES bytes, rep 1 had $bytes; "
            fi
            [ -z "$NAME" ] || rm -f "$EXPDIR/$NAME"
        done
        alive=true
        if kill -0 "$CHATD_PID" 2>/dev/null; then
            c1=$(cpu_ticks "$CHATD_PID")
            hwm_kb=$(vm_kb "$CHATD_PID" VmHWM)
            threads=$(thread_cpu "$CHATD_PID")
        else
            c1=$c0 hwm_kb=0 threads="" alive=false ok=false why+="chatd died; "
        fi
        stop_chatd "$label"
        rm -rf "${EXPDIR:?}"/* 2>/dev/null || true
        [ "$CHATD_LOG_LINES" = 0 ] || why+="chatd logged $CHATD_LOG_LINES lines; "
        PEAK_KB[$set/$fmt]=$hwm_kb
        n_ok=${#times[@]}
        t=$(median "${times[@]}")
        cpu=$(calc '%.2f' "($c1 - $c0) / $CLK_TCK / $n_ok")
        if [ "$ok" = true ]; then
            mbps=$(calc '%.1f' "$bytes / 1e6 / $t")
            mps=$(calc '%.0f' "$msgs / $t")
            ratio=$(calc '%.2f' "$t / $sq_s")
            verdict=$(awk -v r="$ratio" -v t="$RATIO_TARGET" 'BEGIN { print (r <= t) ? "PASS" : "FAIL" }')
            ratio_l=$(calc '%.2f' "$t / $list_s")
            verdict_l=$(awk -v r="$ratio_l" -v t="$RATIO_TARGET" 'BEGIN { print (r <= t) ? "PASS" : "FAIL" }')
        else
            ANY_FAIL=1
            mbps=null mps=null ratio=null verdict=- ratio_l=null verdict_l=-
            say "$label: FAILED: $why"
        fi
        say "$label: $(calc '%.3f' "$t") s median of ${times[*]} s; sqlite3 -$fmt $sq_s s, -list $list_s s; chatd cpu $cpu s/export, idle $(mb "$idle_kb") MB, peak $(mb "$hwm_kb") MB; threads (cpu s) $threads${why:+; $why}"
        ROWS+=("$(printf '%-10s %-4s %8s %7s %7s %6s %8s | %7s %5s %4s | %7s %5s %4s | %7s %6s %4s' \
            "$set" "$fmt" "$msgs" "$(calc '%.1f' "$bytes / 1e6")" "$(calc '%.3f' "$t")" \
            "${mbps/null/-}" "${mps/null/-}" \
            "$(calc '%.3f' "$sq_s")" "${ratio/null/-}" "$verdict" \
            "$(calc '%.3f' "$list_s")" "${ratio_l/null/-}" "$verdict_l" \
            "$(mb "$hwm_kb")" "$cpu" "$([ "$ok" = true ] && echo ok || echo FAIL)")")
        CASES_JSON+="${CASES_JSON:+,
    }{\"set\": \"$set\", \"conversations\": $convs, \"messages\": $msgs, \"format\": \"$fmt\""
        CASES_JSON+=", \"ok\": $ok, \"bytes\": $bytes, \"seconds\": ${t:-null}, \"seconds_all\": [$(IFS=,; echo "${times[*]}")]"
        CASES_JSON+=", \"mb_per_s\": $mbps, \"messages_per_s\": $mps"
        CASES_JSON+=", \"sqlite3_seconds\": $sq_s, \"ratio_vs_sqlite3\": $ratio"
        CASES_JSON+=", \"sqlite3_list_seconds\": $list_s, \"ratio_vs_sqlite3_list\": $ratio_l"
        CASES_JSON+=", \"chatd_threads_cpu_s\": \"$threads\""
        CASES_JSON+=", \"chatd_cpu_s_per_export\": $cpu, \"chatd_idle_rss_kb\": $idle_kb, \"chatd_peak_rss_kb\": $hwm_kb"
        CASES_JSON+=", \"chatd_alive_after\": $alive, \"chatd_stderr_lines\": $CHATD_LOG_LINES"
        CASES_JSON+=", \"problems\": \"$(jstr "$why")\"}"
    done
done

# The memory target: a conversation 10x longer costs no more memory.
RSS_LINES=()
RSS_JSON=""
for fmt in $FORMATS; do
    a=${PEAK_KB[1x100000/$fmt]:-}
    b=${PEAK_KB[1x1000000/$fmt]:-}
    if [ -z "$a" ] || [ -z "$b" ] || [ "$a" = 0 ] || [ "$b" = 0 ]; then continue; fi
    d=$((b - a))
    v=$([ "$d" -le $((RSS_TARGET_MB * 1024)) ] && echo PASS || echo FAIL)
    RSS_LINES+=("$(printf '%-4s peak RSS 100k %s MB, 1M %s MB, difference %s MB (target <= %s MB): %s' \
        "$fmt" "$(mb "$a")" "$(mb "$b")" "$(mb "$d")" "$RSS_TARGET_MB" "$v")")
    RSS_JSON+="${RSS_JSON:+, }\"$fmt\": {\"peak_100k_kb\": $a, \"peak_1m_kb\": $b, \"diff_kb\": $d, \"pass\": $([ "$v" = PASS ] && echo true || echo false)}"
done

# --- 4. exports during streams ------------------------------------------------
# One download loop: export-all json to /dev/null until $TMP/stop exists;
# a line per download: "start_s end_s http_code bytes seconds curl_exit".
export_loop() {
    local i=$1 port=$2 cpid=0 out rc t0 code bytes secs name
    trap 'kill -TERM $cpid 2>/dev/null; exit 0' TERM
    while [ ! -e "$TMP/stop" ]; do
        t0=$(now)
        timeout 300 curl -s -o /dev/null --max-time 280 \
            -w '%{http_code} %{size_download} %{time_total} %header{x-export-file}' \
            "http://127.0.0.1:$port/api/conversations/export-all?format=json" >"$TMP/loop$i.cur" &
        cpid=$!
        rc=0
        wait "$cpid" || rc=$?
        read -r code bytes secs name <"$TMP/loop$i.cur" || true
        echo "$t0 $(now) ${code:-000} ${bytes:-0} ${secs:-0} $rc" >>"$TMP/loop$i.log"
        name=${name//$'\r'/}
        [ -z "$name" ] || rm -f "$EXPDIR/$name"
        [ "${code:-000}" = 200 ] || sleep 0.2 # no busy loop against a failing server
    done
}

# run_streams LABEL: streamload against the running chatd; sets LOAD.
run_streams() {
    "$BUILD/streamload" --port "$CHATD_PORT" -n "$STREAMS" --tokens "$TOKENS" --delay-ms "$DELAY_MS" \
        --timeout 120 --json >"$TMP/load.out" 2>"$TMP/load.err" &
    LOAD_PID=$!
    local t=$((TOKENS * DELAY_MS / 1000 + 180))
    # streamload stops itself at --timeout; this is the backstop
    (sleep "$t" && kill -TERM "$LOAD_PID" 2>/dev/null) &
    local guard=$!
    wait "$LOAD_PID" || true
    kill "$guard" 2>/dev/null || true
    wait "$guard" 2>/dev/null || true
    LOAD_PID=
    LOAD=$(grep '^{' "$TMP/load.out" | tail -n 1 || true)
    grep -v '^{' "$TMP/load.out" | sed "s/^/  [$1] /" >&2 || true
    [ -n "$LOAD" ] || { cat "$TMP/load.err" >&2; LOAD=null; }
}

CONC_JSON=null
CONC_LINES=()
if [ "$CONCURRENCY" = 1 ] && [[ " $SETS " == *" $CONC_SET "* ]]; then
    "$BUILD/mock-llm" --port 0 --quiet >"$TMP/mock.out" 2>"$TMP/mock.err" &
    MOCK_PID=$!
    MOCK_PORT=$(wait_port "$TMP/mock.out" "$MOCK_PID" 400) || { cat "$TMP/mock.err" >&2; die "mock-llm did not start"; }
    src=$(db_file "$CONC_SET")
    PHASES_JSON=""
    for phase in alone exports; do
        # a copy, as the streams add conversations to it
        rm -f "$TMP"/conc.db*
        cp "$src" "$TMP/conc.db"
        start_chatd "$TMP/conc.db" "http://127.0.0.1:$MOCK_PORT/v1"
        c0=$(cpu_ticks "$CHATD_PID")
        rm -f "$TMP/stop" "$TMP"/loop*.log
        LOOP_PIDS=()
        w0=$(now)
        if [ "$phase" = exports ]; then
            say "concurrency: $CONC export-all loops, then $STREAMS streams"
            for i in $(seq "$CONC"); do
                export_loop "$i" "$CHATD_PORT" &
                LOOP_PIDS+=($!)
            done
            sleep 1 # every download under way before the streams start
        else
            say "concurrency: $STREAMS streams alone"
        fi
        run_streams "$phase"
        if [ "$phase" = exports ]; then
            : >"$TMP/stop"
            # the downloads under way finish (each has its own timeout)
            for p in "${LOOP_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
            LOOP_PIDS=()
        fi
        w1=$(now)
        if kill -0 "$CHATD_PID" 2>/dev/null; then
            c1=$(cpu_ticks "$CHATD_PID") hwm=$(vm_kb "$CHATD_PID" VmHWM) alive=true
            threads=$(thread_cpu "$CHATD_PID")
        else
            c1=$c0 hwm=0 alive=false threads=""
        fi
        say "concurrency $phase: chatd threads (cpu s) $threads"
        stop_chatd "concurrency $phase"
        rm -rf "${EXPDIR:?}"/* 2>/dev/null || true
        cpu=$(secs $((c1 - c0)))
        window=$(elapsed "$w0" "$w1" 6)
        ex_json=null
        ex_desc="-"
        if [ "$phase" = exports ]; then
            cat "$TMP"/loop*.log >"$TMP/loops.log" 2>/dev/null || : >"$TMP/loops.log"
            # ok: 200 and curl exit 0 (a cut-off chunked body is exit 18)
            read -r ex_n ex_ok ex_bad ex_bytes ex_first ex_last <<<"$(awk '
                { n++; if ($3 == 200 && $6 == 0 && $4 > 0) { ok++; b += $4 } else bad++
                  if (!f || $1 < f) f = $1; if ($2 > l) l = $2 }
                END { printf "%d %d %d %d %s %s\n", n, ok, bad, b, f ? f : 0, l ? l : 0 }' "$TMP/loops.log")"
            ex_secs=$(awk '$3 == 200 && $6 == 0 { print $5 }' "$TMP/loops.log")
            # shellcheck disable=SC2086
            ex_p50=$( [ -n "$ex_secs" ] && median $ex_secs || echo 0)
            ex_max=$(awk 'BEGIN { m = 0 } $3 == 200 && $6 == 0 && $5 > m { m = $5 } END { print m }' "$TMP/loops.log")
            ex_span=$(elapsed "$ex_first" "$ex_last" 6)
            ex_mbps=$(calc '%.1f' "$ex_bytes / 1e6 / ($ex_span > 0 ? $ex_span : 1)")
            [ "$ex_bad" = 0 ] || { ANY_FAIL=1; say "concurrency: $ex_bad of $ex_n export downloads failed:"; awk '!($3 == 200 && $6 == 0 && $4 > 0)' "$TMP/loops.log" | head -n 5 >&2; }
            ex_desc="$ex_ok/$ex_n ok, $(calc '%.1f' "$ex_bytes / 1e6") MB in $(calc '%.1f' "$ex_span") s = $ex_mbps MB/s; per download p50 $(calc '%.2f' "$ex_p50") s, max $(calc '%.2f' "$ex_max") s"
            ex_json="{\"loops\": $CONC, \"downloads\": $ex_n, \"ok\": $ex_ok, \"failed\": $ex_bad, \"bytes\": $ex_bytes"
            ex_json+=", \"span_s\": $ex_span, \"mb_per_s\": $ex_mbps, \"download_s_p50\": $ex_p50, \"download_s_max\": $ex_max}"
        fi
        if [ "$(jget "$LOAD" failed)" != 0 ] || [ "$alive" != true ]; then ANY_FAIL=1; fi
        CONC_LINES+=("$(printf '%-8s %9s %6s %9s %9s %9s %9s %8s %8s  %s' "$phase" \
            "$(jget "$LOAD" completed)" "$(jget "$LOAD" failed)" \
            "$(j2 "$LOAD" ttft_ms_p50)" "$(j2 "$LOAD" ttft_ms_p99)" \
            "$(j2 "$LOAD" delay_ms_p50)" "$(j2 "$LOAD" delay_ms_p99)" \
            "$(mb "$hwm")" "$cpu" "$ex_desc")")
        PHASES_JSON+="${PHASES_JSON:+,
    }{\"phase\": \"$phase\", \"wall_s\": $window, \"chatd_cpu_s\": $cpu, \"chatd_peak_rss_kb\": $hwm"
        PHASES_JSON+=", \"chatd_alive_after\": $alive, \"chatd_stderr_lines\": $CHATD_LOG_LINES"
        PHASES_JSON+=", \"chatd_threads_cpu_s\": \"$threads\""
        PHASES_JSON+=",
     \"exports\": $ex_json,
     \"streams\": $LOAD}"
    done
    stop_pid "$MOCK_PID"
    MOCK_PID=
    CONC_JSON="{\"set\": \"$CONC_SET\", \"export_loops\": $CONC, \"streams\": $STREAMS, \"tokens\": $TOKENS, \"delay_ms\": $DELAY_MS,
 \"phases\": [
    $PHASES_JSON
 ]}"
fi

# --- report ------------------------------------------------------------------
echo
echo "chatd exports over HTTP to /dev/null (curl), median of $REPS, fresh chatd per row; $(nproc) cpus," \
    "commit $COMMIT, $BUILD_TYPE build"
printf '%-10s %-4s %8s %7s %7s %6s %8s | %7s %5s %4s | %7s %5s %4s | %7s %6s %4s\n' "" "" "" "" \
    chatd chatd chatd "sqlite3" "" "" sqlite3 "" "" chatd chatd ""
printf '%-10s %-4s %8s %7s %7s %6s %8s | %7s %5s %4s | %7s %5s %4s | %7s %6s %4s\n' set fmt messages MB \
    s "MB/s" "msg/s" "fmt s" ratio "<=${RATIO_TARGET}" "list s" ratio "<=${RATIO_TARGET}" "peak MB" "cpu s" ok
printf '%s\n' "${ROWS[@]}"
echo "set CxM: C conversations of M messages. chatd s: median of $REPS downloads, each the whole export, to"
echo "/dev/null. sqlite3: the sqlite3 shell reading the same rows in the same order to /dev/null, formatted"
echo "by .mode csv or .mode json (fmt s) or plain .mode list (list s); ratio: chatd s / sqlite3 s, target"
echo "<= ${RATIO_TARGET}. peak MB: chatd's VmHWM after the $REPS exports; cpu s: chatd's CPU per export."
if [ ${#RSS_LINES[@]} -gt 0 ]; then
    echo
    echo "memory target: 1,000,000 messages within $RSS_TARGET_MB MB of 100,000"
    printf '%s\n' "${RSS_LINES[@]}"
fi
if [ ${#CONC_LINES[@]} -gt 0 ]; then
    echo
    echo "$STREAMS streams ($TOKENS tokens ${DELAY_MS} ms apart, mock upstream) on the $CONC_SET set," \
        "alone and during $CONC export-all json download loops"
    printf '%-8s %9s %6s %9s %9s %9s %9s %8s %8s  %s\n' phase completed failed "ttft p50" "ttft p99" \
        "add p50" "add p99" "peak MB" "chatd s" exports
    printf '%s\n' "${CONC_LINES[@]}"
fi

RESULTS=${RESULTS_DIR:-bench/results}
mkdir -p "$RESULTS"
OUT="$RESULTS/export-$DATE.json"
cat >"$OUT" <<EOF
{"benchmark": "export", "date": "$DATE", "commit": "$COMMIT", "build_type": "$BUILD_TYPE",
 "machine": {"cpus": $(nproc), "kernel": "$(uname -r)", "sqlite3_shell": "$(sqlite3 --version | cut -d' ' -f1)", "busy_pct_before": $BUSY_BEFORE},
 "reps": $REPS, "generation_s_this_run": $GEN_S_TOTAL,
 "cases": [
    $CASES_JSON
 ],
 "rss_target_mb": $RSS_TARGET_MB, "rss": {$RSS_JSON},
 "ratio_target": $RATIO_TARGET,
 "concurrency": $CONC_JSON}
EOF
echo
echo "results: $OUT"
exit "$ANY_FAIL"
