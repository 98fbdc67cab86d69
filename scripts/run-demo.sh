#!/bin/sh
# Installs what chatd needs, builds it, and runs it on port 5010 with
# sqlite:chatd.db. When neither CHATD_LLM_URL nor CHATD_LLM_KEY is set it
# also starts the bundled offline demo model (tools/mock-llm) and points
# chatd at it, and says so. Every CHATD_* variable and every chatd flag
# still applies: scripts/run-demo.sh --port 8080
set -eu
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHATD_TESTS=OFF -DCHATD_BENCH=OFF >/dev/null
cmake --build build -j"$(nproc)" --target chatd mock-llm >/dev/null

mock_pid=""
tmp=""
cleanup() {
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    [ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

if [ -z "${CHATD_LLM_URL:-}" ] && [ -z "${CHATD_LLM_KEY:-}" ]; then
    tmp=$(mktemp -d)
    build/mock-llm --host 127.0.0.1 --port 0 --quiet >"$tmp/mock.out" &
    mock_pid=$!
    port=""
    for _ in $(seq 1 100); do
        port=$(sed -n 's/^mock-llm: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/mock.out")
        [ -n "$port" ] && break
        sleep 0.05
    done
    if [ -z "$port" ]; then
        echo "run-demo: the demo model did not start" >&2
        exit 1
    fi
    export CHATD_LLM_URL="http://127.0.0.1:$port/v1"
    export CHATD_LLM_MODEL="${CHATD_LLM_MODEL:-chatd-demo}"
    echo "run-demo: neither CHATD_LLM_URL nor CHATD_LLM_KEY is set: using the bundled offline demo model (tools/mock-llm) at $CHATD_LLM_URL" >&2
    echo "run-demo: set CHATD_LLM_URL and CHATD_LLM_KEY to talk to a real model" >&2
fi

build/chatd "$@" &
chatd_pid=$!
trap 'kill -TERM $chatd_pid 2>/dev/null' INT TERM
status=0
wait "$chatd_pid" || status=$?
# A signal interrupts the first wait; wait for chatd's clean stop.
if kill -0 "$chatd_pid" 2>/dev/null; then
    wait "$chatd_pid" || status=$?
fi
exit "$status"
