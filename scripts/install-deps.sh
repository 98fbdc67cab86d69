#!/bin/sh
# Installs every Debian package that chatd's build, tests and demo need:
# the client libraries of every backend (libpq, MariaDB Connector/C,
# hiredis) and, for the tests, the database servers' binaries (PostgreSQL,
# MariaDB, Redis - the tests start throwaway servers from them, never a
# system service), Node.js/npm for the web page's libraries and Chromium
# (and a CJK font) for the browser tests; then `npm ci` for the page's
# libraries and playwright-core, as package-lock.json pins them. With
# --bench also what the benchmarks under bench/ need (wrk, nginx as the
# reference server, curl). Idempotent and quiet when everything is already
# present; run as root (or with sudo available).
# Usage: scripts/install-deps.sh [--bench]
set -eu

PACKAGES="build-essential cmake pkg-config git ca-certificates
libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev sqlite3
libpq-dev libmariadb-dev libhiredis-dev
libcmocka-dev python3 clang-format
postgresql mariadb-server-core mariadb-client-core redis-server
chromium fonts-wqy-microhei"
# npm for the web page's libraries and the browser tests: Debian's, unless
# an npm is already on the PATH (e.g. from NodeSource).
command -v npm >/dev/null 2>&1 || PACKAGES="$PACKAGES nodejs npm"
if [ "${1:-}" = "--bench" ]; then
    PACKAGES="$PACKAGES wrk nginx-light curl procps"
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
npm_ci() {
    # The page's libraries and playwright-core, exactly as package-lock.json
    # pins them; only when the lock file changed since the last install.
    if ! cmp -s package-lock.json node_modules/.chatd-lock 2>/dev/null ||
        [ ! -f node_modules/marked/package.json ] || [ ! -f node_modules/dompurify/package.json ] ||
        [ ! -f node_modules/playwright-core/package.json ]; then
        echo "install-deps: npm ci (the web page's libraries, the browser tests' playwright-core)" >&2
        npm ci --no-audit --no-fund --loglevel=error >/dev/null
        cp package-lock.json node_modules/.chatd-lock
    fi
}
cd "$(dirname "$0")/.."
if [ -z "$missing" ]; then
    npm_ci
    exit 0
fi

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
npm_ci
