#!/bin/sh
# with-postgres.sh CMD [ARGS...] - runs CMD next to a throwaway PostgreSQL.
#
# Starts a private server in a fresh `mktemp -d` directory (its own data
# directory, socket directory and log; never a system cluster or service),
# listening on 127.0.0.1 on a free port, with fsync off for speed. The
# user `chatd` logs in with a generated password (scram-sha-256 over TCP),
# so the password path is exercised too. Exports:
#
#   CHATD_TEST_PG_URL   postgresql://chatd:PASSWORD@127.0.0.1:PORT/chatd
#   CHATD_TEST_PG_CTL   a script: `$CHATD_TEST_PG_CTL stop|start` stops or
#                       starts this server (for reconnect tests)
#
# then runs CMD with its arguments untouched (so these scripts nest:
# with-postgres.sh tests/db/with-redis.sh python3 ...), stops the server,
# removes the directory (also on failure or a signal) and exits with CMD's
# status. Exits 77 (CTest's skip code) when the server binaries are
# missing. PostgreSQL refuses to run as root: as root, the server runs as
# the `postgres` system user, which owns the directory.
set -u

# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

bindir=""
if command -v pg_config >/dev/null 2>&1; then
    bindir=$(pg_config --bindir 2>/dev/null || true)
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
    echo "skipped: PostgreSQL server binaries not found (scripts/install-deps.sh installs them)" >&2
    exit 77
fi
if [ $# -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

dir=$(mktemp -d /tmp/chatd-pg-XXXXXX) || exit 1
as_server=""
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "with-postgres.sh: running as root and there is no 'postgres' user to run the server" >&2
        rm -rf "$dir"
        exit 1
    fi
    chown postgres "$dir"
    as_server="runuser -u postgres --"
fi

started=0
child=""
cleanup() {
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null
        child=""
    fi
    if [ "$started" -eq 1 ]; then
        $as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$dir"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
umask 077
printf '%s\n' "$password" >"$dir/pwfile"
[ -z "$as_server" ] || chown postgres "$dir/pwfile"

if ! $as_server "$bindir/initdb" -D "$dir/data" -U chatd --pwfile="$dir/pwfile" -E UTF8 \
        --locale=C --auth-local=trust --auth-host=scram-sha-256 --no-sync \
        >"$dir/initdb.log" 2>&1; then
    echo "with-postgres.sh: initdb failed:" >&2
    cat "$dir/initdb.log" >&2
    cleanup
    exit 1
fi

# pg_ctl with this server's settings, as the right user.
cat >"$dir/pgctl" <<EOF
#!/bin/sh
# $dir/pgctl stop|start - this throwaway server only.
case "\${1:-}" in
stop) exec $as_server "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop ;;
start) exec $as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start ;;
*) echo "usage: \$0 stop|start" >&2; exit 2 ;;
esac
EOF
chmod 755 "$dir/pgctl"
chmod 711 "$dir"

tries=0
while :; do
    port=$(free_port) || { cleanup; exit 1; }
    # The settings go in the config file, so `pgctl start` restarts the same.
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "max_connections = 200"
    } >"$dir/chatd.conf"
    [ -z "$as_server" ] || chown postgres "$dir/chatd.conf"
    grep -q "^include = '$dir/chatd.conf'" "$dir/data/postgresql.conf" ||
        echo "include = '$dir/chatd.conf'" >>"$dir/data/postgresql.conf"
    started=1
    if $as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
            >/dev/null 2>&1; then
        break
    fi
    started=0
    tries=$((tries + 1))
    if [ "$tries" -ge 3 ]; then
        echo "with-postgres.sh: the server did not start:" >&2
        cat "$dir/server.log" >&2
        cleanup
        exit 1
    fi
done

if ! $as_server "$bindir/psql" -h "$dir" -p "$port" -U chatd -d postgres -X -q \
        -c "CREATE DATABASE chatd" >/dev/null 2>"$dir/psql.log"; then
    echo "with-postgres.sh: cannot create the database:" >&2
    cat "$dir/psql.log" >&2
    cleanup
    exit 1
fi

export CHATD_TEST_PG_URL="postgresql://chatd:$password@127.0.0.1:$port/chatd"
export CHATD_TEST_PG_CTL="$dir/pgctl"
umask 022
# CMD runs in the background, so that a signal reaches the trap at once
# (not when CMD is done); its stdin stays ours.
exec 3<&0
"$@" <&3 3<&- &
child=$!
wait "$child"
status=$?
child=""
cleanup
exit "$status"
