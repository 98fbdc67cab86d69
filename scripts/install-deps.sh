#!/bin/sh
# Installs every Debian package that chatd's build, tests and demo need:
# the client libraries of every backend (libpq, MariaDB Connector/C,
# hiredis) and, for the tests, the database servers' binaries (PostgreSQL,
# MariaDB, Redis - the tests start throwaway servers from them, never a
# system service), Node.js/npm for the web page's libraries and Chromium
# for the browser tests. With --bench also what the benchmarks under bench/
# need (wrk, nginx as the reference server, curl). Idempotent and quiet when everything is
# already present; run as root (or with sudo available).
# Usage: scripts/install-deps.sh [--bench]
set -eu

PACKAGES="build-essential cmake pkg-config git ca-certificates
libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev sqlite3
libpq-dev libmariadb-dev libhiredis-dev
libcmocka-dev python3 clang-format
postgresql mariadb-server-core mariadb-client-core redis-server
chromium"
if [ "${1:-}" = "--bench" ]; then
    PACKAGES="$PACKAGES wrk nginx-light curl procps"
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root (or sudo) to install:$missing" >&2; exit 1; }
    SUDO="sudo"
fi
echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends $missing >/dev/null
