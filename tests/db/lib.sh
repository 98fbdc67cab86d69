# shellcheck shell=sh
# lib.sh - shell functions the with-*.sh wrappers share; sourced, not run.
# The control scripts they write source it too (by its absolute path).

# find_bin NAME... - the path of the first NAME found on PATH or in the usual
# bin and sbin directories (sbin is often not on a user's PATH).
find_bin() {
    for c in "$@"; do
        p=$(command -v "$c" 2>/dev/null) && { echo "$p"; return 0; }
        for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
            [ -x "$d/$c" ] && { echo "$d/$c"; return 0; }
        done
    done
    return 1
}

# free_port - a TCP port on 127.0.0.1 that is free now (someone may take it
# before the server binds it: callers retry).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_pidfile FILE SECONDS - sends TERM to the process FILE names, KILL if it
# still runs after SECONDS, and removes FILE. No FILE: nothing to do.
stop_pidfile() {
    pid=$(cat "$1" 2>/dev/null) || return 0
    if kill -TERM "$pid" 2>/dev/null; then
        i=0
        while kill -0 "$pid" 2>/dev/null; do
            i=$((i + 1))
            if [ "$i" -gt $(($2 * 20)) ]; then
                kill -KILL "$pid" 2>/dev/null
                sleep 0.2
                break
            fi
            sleep 0.05
        done
    fi
    rm -f "$1"
}
