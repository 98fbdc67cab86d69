#!/bin/sh
# with-redis.sh CMD [ARGS...] - runs CMD next to a throwaway Redis server.
#
# Starts redis-server in a mktemp -d directory on 127.0.0.1 and a free port,
# with a random password, no persistence (--save '' --appendonly no), and
# runs CMD with
#
#   CHATD_TEST_REDIS_URL   redis://:PASS@127.0.0.1:PORT/1
#   CHATD_TEST_REDIS_CTL   a script: "CTL stop" stops the server, "CTL start"
#                          starts it again on the same port (outage tests)
#
# then stops the server and removes the directory - also when CMD fails or
# a signal arrives - and exits with CMD's status. Arguments are passed
# through untouched, so wrappers nest (with-postgres.sh with-redis.sh CMD).
# Exits 77 (CTest's SKIP_RETURN_CODE) when redis-server is missing. Never
# touches a system service.
set -u

lib=$(cd "$(dirname "$0")" && pwd)/lib.sh
# shellcheck source=lib.sh
. "$lib"

if [ $# -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi
SERVER=$(find_bin redis-server) && CLI=$(find_bin redis-cli) || {
    echo "skipped: redis-server not found (scripts/install-deps.sh installs it)"
    exit 77
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/chatd-redis.XXXXXX") || exit 1
child=

cleanup() {
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    [ -x "$dir/ctl" ] && "$dir/ctl" stop >/dev/null 2>&1
    [ -n "${port:-}" ] && pkill -KILL -f -- "redis-server 127.0.0.1:$port\$" 2>/dev/null # whatever the pid file says
    rm -rf "$dir"
}

on_signal() {
    trap - EXIT INT TERM HUP
    cleanup
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

port=$(free_port)
pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

# The password goes in a config file, not on a command line that ps shows.
cat >"$dir/redis.conf" <<EOF2
port $port
bind 127.0.0.1
save ""
appendonly no
dir $dir
requirepass $pass
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
EOF2

cat >"$dir/ctl" <<EOF2
#!/bin/sh
# stop | start the throwaway Redis server of $dir
. "$lib"
case "\$1" in
stop)
    stop_pidfile "$dir/redis.pid" 5
    ;;
start)
    pid=\$(cat "$dir/redis.pid" 2>/dev/null) && kill -0 "\$pid" 2>/dev/null && exit 0 # running
    "$SERVER" "$dir/redis.conf" </dev/null >/dev/null 2>&1 || exit 1
    i=0
    until REDISCLI_AUTH=$pass "$CLI" -h 127.0.0.1 -p $port ping 2>/dev/null | grep -q PONG; do
        i=\$((i + 1))
        if [ \$i -gt 300 ]; then
            echo "with-redis: the server did not answer within 15 s:" >&2
            tail -n 20 "$dir/redis.log" >&2
            exit 1
        fi
        sleep 0.05
    done
    ;;
*)
    echo "usage: \$0 stop|start" >&2
    exit 2
    ;;
esac
EOF2
chmod 700 "$dir/ctl"
chmod 600 "$dir/redis.conf"
"$dir/ctl" start || exit 1

CHATD_TEST_REDIS_URL="redis://:$pass@127.0.0.1:$port/1"
CHATD_TEST_REDIS_CTL="$dir/ctl"
export CHATD_TEST_REDIS_URL CHATD_TEST_REDIS_CTL

"$@" &
child=$!
wait "$child"
status=$?
child=
exit "$status"
