# shellcheck shell=bash
# lib.sh - helpers shared by bench/streams.sh, bench/export.sh, bench/http.sh
# and bench/backends.sh.
#
# Sourced, not run: `. "$ROOT/bench/lib.sh"` after setting BENCH_NAME (the
# script's name, which prefixes its messages). Linux only (/proc). Sets
# CLK_TCK. secs and mb here round; streams.sh redefines both to truncate,
# as its tables always have (thread_cpu uses whichever secs is defined).

: "${BENCH_NAME:?set BENCH_NAME before sourcing bench/lib.sh}"

die() {
    echo "$BENCH_NAME: $*" >&2
    exit 1
}
say() { echo "$BENCH_NAME: $*" >&2; }

# Stops one process we started: TERM, up to 10 s, then KILL.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Stops the processes a run may have under way (LOAD_PID, CHATD_PID,
# MOCK_PID; empty when none) and removes TMP: the end of each script's
# cleanup.
bench_cleanup() {
    stop_pid "$LOAD_PID"
    stop_pid "$CHATD_PID"
    stop_pid "$MOCK_PID"
    rm -rf "$TMP"
}

# bench_traps FUNC: FUNC runs on exit, also on Ctrl-C and TERM.
bench_traps() {
    # shellcheck disable=SC2064 # FUNC's name, expanded now on purpose
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# The port on which process $1 listens on 127.0.0.1, from /proc/net/tcp:
# the LISTEN (0A) socket whose inode is among the process's fds.
proc_listen_port() {
    local inodes hex
    inodes=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -lname 'socket:*' -printf '%l\n' 2>/dev/null |
        sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p' | tr '\n' ' ')
    [ -n "$inodes" ] || return 1
    hex=$(awk -v inodes=" $inodes" \
        'NR > 1 && $4 == "0A" && index(inodes, " " $10 " ") && $2 ~ /^0100007F:/ {
             print substr($2, 10); exit }' /proc/net/tcp)
    [ -n "$hex" ] || return 1
    echo $((16#$hex))
}

# wait_port FILE PID [TRIES]: waits until process PID listens: "listening
# on 127.0.0.1:PORT" in FILE or, as chatd logs that line only at
# --log-level info, its listening socket in /proc. Looks TRIES times
# (200, i.e. 10 s), 50 ms apart. Prints PORT.
wait_port() {
    local file=$1 pid=$2 tries=${3:-200} port
    for _ in $(seq "$tries"); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$file" | head -n 1)
        [ -n "$port" ] || port=$(proc_listen_port "$pid") || true
        if [ -n "$port" ]; then
            echo "$port"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# utime+stime in clock ticks from a stat file ($1: /proc/PID/stat or
# /proc/PID/task/TID/stat), fields 14 and 15 counted after the
# parenthesised command name.
stat_ticks() {
    local stat rest
    read -r stat <"$1" || { echo 0; return; }
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${12} + ${13}))
}

cpu_ticks() { stat_ticks "/proc/$1/stat"; }

# A VmXXX value of /proc/PID/status in kB.
vm_kb() {
    local key val
    while read -r key val _; do
        if [ "$key" = "$2:" ]; then
            echo "$val"
            return
        fi
    done <"/proc/$1/status"
    echo 0
}

# "busy total irq" clock ticks of the whole machine, from the cpu line of
# /proc/stat (busy: user nice system irq softirq steal; total adds idle
# and iowait; irq: irq and softirq, where the loopback's packet processing
# is often charged instead of to a process).
machine_ticks() {
    local u n sy id io irq si st
    read -r _ u n sy id io irq si st _ </proc/stat
    echo "$((u + n + sy + irq + si + st)) $((u + n + sy + irq + si + st + id + io)) $((irq + si))"
}

# How busy the machine is over one second, in percent.
busy_pct() {
    local b0 t0 b1 t1
    read -r b0 t0 _ <<<"$(machine_ticks)"
    sleep 1
    read -r b1 t1 _ <<<"$(machine_ticks)"
    echo $(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
}

# Each thread of process $1 as NAME:CPU_SECONDS, space separated.
thread_cpu() {
    local t comm out=""
    for t in /proc/"$1"/task/*; do
        read -r comm <"$t/comm" 2>/dev/null || continue
        out+="${out:+ }${comm// /_}:$(secs "$(stat_ticks "$t/stat" 2>/dev/null)")"
    done
    echo "$out"
}

# Clock ticks -> seconds with 2 decimals.
secs() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }
# kB -> MB with 1 decimal (never "-0.0").
mb() { awk -v k="$1" 'BEGIN { v = k / 1024; if (v > -0.05 && v < 0.05) v = 0; printf "%.1f", v }'; }
# Floating-point arithmetic: calc FORMAT 'EXPR'.
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# Median and mean of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mean() { printf '%s\n' "$@" | awk '{ s += $1; n++ } END { printf "%.6g", n ? s / n : 0 }'; }
now() { echo "$EPOCHREALTIME"; }
# elapsed T0 T1 [DECIMALS]: T1 - T0 (now's seconds), 3 decimals unless told.
elapsed() { awk -v a="$1" -v b="$2" -v d="${3:-3}" 'BEGIN { printf "%." d "f", b - a }'; }
# $1 as the inside of a JSON string.
jstr() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '%s' "${s//[$'\t\r\n']/ }"
}

# Value of "key" in a flat one-line JSON ($1, e.g. streamload's), or "-"
# if absent.
jget() {
    local v
    v=$(sed -n "s/.*\"$2\": \([^,}]*\).*/\1/p" <<<"$1")
    [ -n "$v" ] && [ "$v" != null ] && echo "$v" || echo "-"
}

# Prints the value of "key" with two decimals, or "-".
j2() {
    local v
    v=$(jget "$1" "$2")
    [ "$v" = "-" ] && echo "-" || printf '%.2f' "$v"
}

# hreq METHOD URL [BODY]: one request by curl (JSON body, HREQ_MAX_TIME
# seconds at most, 10 unless set); sets HCODE and HBODY.
hreq() {
    local out rc=0 max=${HREQ_MAX_TIME:-10}
    if [ $# -ge 3 ]; then
        out=$(curl -s --max-time "$max" -X "$1" -H 'Content-Type: application/json' --data-binary "$3" \
            -w '\n%{http_code}' "$2") || rc=$?
    else
        out=$(curl -s --max-time "$max" -X "$1" -w '\n%{http_code}' "$2") || rc=$?
    fi
    HCODE=${out##*$'\n'}
    HBODY=${out%$'\n'*}
    [ "$rc" = 0 ] || HCODE="000 (curl exit $rc)"
}

# wait_health BASE_URL PID ERRFILE [PREFIX]: polls BASE_URL/health (500
# times, 10 ms apart) until it answers 200; if it never does or PID dies,
# shows ERRFILE and dies (PREFIX starts the message). HBODY: the last body.
wait_health() {
    for _ in $(seq 500); do
        hreq GET "$1/health"
        [ "$HCODE" != 200 ] || return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.01
    done
    cat "$3" >&2
    die "${4:-}chatd's /health did not answer 200 (last: $HCODE $HBODY)"
}

# The conversation id in a chat answer $1; the number of messages in a
# history answer $1.
conv_id_of() { sed -n 's/.*"conversation_id": *"\([^"]*\)".*/\1/p' <<<"$1"; }
count_messages() { grep -o '"role": *"' <<<"$1" | wc -l; }

# bench_build DIR TYPE LOG [TARGET...]: builds chatd, mock-llm, streamload
# and any further TARGETs (bench/NAME.c builds as NAME) in DIR
# (CMAKE_BUILD_TYPE TYPE, output to LOG); on failure shows the end of LOG
# and dies.
bench_build() {
    local dir=$1 type=$2 log=$3
    shift 3
    local targets=(chatd mock-llm streamload "$@")
    say "building ${targets[*]} in $dir ($type)"
    if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DCHATD_TESTS=OFF \
               >"$log" 2>&1 &&
           cmake --build "$dir" -j "$(nproc)" --target "${targets[@]}" \
               >>"$log" 2>&1; }; then
        tail -n 40 "$log" >&2
        die "build failed (the last 40 lines of the build log are above)"
    fi
}

# The short commit of HEAD, "+dirty" when src/ or tools/ (what the build
# used) have uncommitted changes, or "unknown"; BENCH_COMMIT, when set, is
# taken as it is (a tree exported with `git archive`, which has no .git).
bench_commit() {
    local c
    if [ -n "${BENCH_COMMIT:-}" ]; then
        echo "$BENCH_COMMIT"
        return
    fi
    c=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ "$c" != unknown ] && [ -n "$(git status --porcelain -- src tools 2>/dev/null)" ]; then
        c="$c+dirty"
    fi
    echo "$c"
}

# shellcheck disable=SC2034 # used by the sourcing scripts
CLK_TCK=$(getconf CLK_TCK)
