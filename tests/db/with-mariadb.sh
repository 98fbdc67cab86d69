#!/bin/sh
# with-mariadb.sh CMD [ARGS...] - runs CMD next to a throwaway MariaDB server.
#
# Creates a data directory under mktemp -d, starts mariadbd on 127.0.0.1 and
# a free port (its own socket, no system config: --no-defaults), creates a
# database and a user with a random password, and runs CMD with
#
#   CHATD_TEST_MYSQL_URL     mysql://USER:PASS@127.0.0.1:PORT/DB
#   CHATD_TEST_MYSQL_SOCKET  the server's socket (root, no password), for
#                            tests that inspect or prepare the database
#   CHATD_TEST_MYSQL_CTL     a script: "CTL stop" stops the server, "CTL
#                            start" starts it again on the same port and
#                            data directory (reconnect tests)
#
# then stops the server and removes the directory - also when CMD fails or
# a signal arrives - and exits with CMD's status. Arguments are passed
# through untouched, so wrappers nest (with-mariadb.sh with-redis.sh CMD).
# Exits 77 (CTest's SKIP_RETURN_CODE) when the server binaries are missing.
# Never touches a system service.
set -u

lib=$(cd "$(dirname "$0")" && pwd)/lib.sh
# shellcheck source=lib.sh
. "$lib"

if [ $# -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi
MARIADBD=$(find_bin mariadbd mysqld) &&
    INSTALL_DB=$(find_bin mariadb-install-db mysql_install_db) &&
    CLIENT=$(find_bin mariadb mysql) || {
    echo "skipped: MariaDB server binaries not found (scripts/install-deps.sh installs them)"
    exit 77
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/chatd-mariadb.XXXXXX") || exit 1
child=

stop_server() {
    [ -x "$dir/ctl" ] && "$dir/ctl" stop >/dev/null 2>&1
    # Whatever the pid file says, no server of this directory outlives us.
    pkill -KILL -f -- "--datadir=$dir/data" 2>/dev/null
}

cleanup() {
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    stop_server
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

user_opt=
[ "$(id -u)" -eq 0 ] && user_opt=--user=root

# Each server gets its own tmpdir: the bootstrap names its temporary tables
# /tmp/#sql-temptable-..., and installs running side by side in one /tmp
# (ctest -j) failed now and then with "Unknown table 'mysql.tmp_user_sys'".
mkdir "$dir/tmp" || exit 1
if ! "$INSTALL_DB" --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db $user_opt --tmpdir="$dir/tmp" >"$dir/install.log" 2>&1; then
    echo "with-mariadb: mariadb-install-db failed:" >&2
    cat "$dir/install.log" >&2
    exit 1
fi

# The control script holds the exact command line, so a restart comes back
# on the same port (kept in $dir/port) and data directory.
cat >"$dir/ctl" <<EOF
#!/bin/sh
# stop | start the throwaway MariaDB server of $dir
. "$lib"
case "\$1" in
stop)
    stop_pidfile "$dir/mariadbd.pid" 30
    ;;
start)
    # Already running: nothing to do (a second mariadbd on the same data
    # directory would fail, and take the pid file with it).
    pid=\$(cat "$dir/mariadbd.pid" 2>/dev/null) && kill -0 "\$pid" 2>/dev/null && exit 0
    "$MARIADBD" --no-defaults $user_opt --datadir="$dir/data" --tmpdir="$dir/tmp" --socket="$dir/mysql.sock" \\
        --port=\$(cat "$dir/port") --bind-address=127.0.0.1 --pid-file="$dir/mariadbd.pid" \\
        --log-error="$dir/error.log" --skip-log-bin --skip-name-resolve \\
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \\
        --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \\
        --innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0 \\
        --performance-schema=0 --max-connections=500 </dev/null >/dev/null 2>&1 &
    server=\$!
    i=0
    until "$CLIENT" --no-defaults -uroot --socket="$dir/mysql.sock" -e 'SELECT 1' >/dev/null 2>&1; do
        i=\$((i + 1))
        if ! kill -0 "\$server" 2>/dev/null; then
            echo "with-mariadb: the server exited at start:" >&2
            tail -n 30 "$dir/error.log" >&2
            exit 1
        fi
        if [ \$i -gt 600 ]; then
            echo "with-mariadb: the server did not answer within 60 s:" >&2
            tail -n 30 "$dir/error.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    ;;
*)
    echo "usage: \$0 stop|start" >&2
    exit 2
    ;;
esac
EOF
chmod +x "$dir/ctl"

# A free port can be taken by someone else before the server binds it:
# then try another.
tries=0
while :; do
    port=$(free_port) || exit 1
    echo "$port" >"$dir/port"
    "$dir/ctl" start 2>"$dir/start.log" && break
    tries=$((tries + 1))
    if [ "$tries" -ge 3 ]; then
        cat "$dir/start.log" >&2
        exit 1
    fi
done

pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
if ! "$CLIENT" --no-defaults -uroot --socket="$dir/mysql.sock" >"$dir/setup.log" 2>&1 <<EOF; then
CREATE DATABASE chatd_test CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER 'chatd'@'127.0.0.1' IDENTIFIED BY '$pass';
CREATE USER 'chatd'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON chatd_test.* TO 'chatd'@'127.0.0.1';
GRANT ALL ON chatd_test.* TO 'chatd'@'localhost';
EOF
    echo "with-mariadb: cannot create the test database:" >&2
    cat "$dir/setup.log" >&2
    exit 1
fi

CHATD_TEST_MYSQL_URL="mysql://chatd:$pass@127.0.0.1:$port/chatd_test"
CHATD_TEST_MYSQL_SOCKET="$dir/mysql.sock"
CHATD_TEST_MYSQL_CTL="$dir/ctl"
export CHATD_TEST_MYSQL_URL CHATD_TEST_MYSQL_SOCKET CHATD_TEST_MYSQL_CTL

"$@" &
child=$!
wait "$child"
status=$?
child=
exit "$status"
