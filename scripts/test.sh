#!/bin/sh
# Installs what the tests need, builds chatd twice - as released and with
# AddressSanitizer + UndefinedBehaviorSanitizer - and runs every test
# (style checks, unit, end-to-end) against both builds. Exits non-zero on
# the first failure.
set -eu
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/check-style.sh
jobs=$(nproc)

echo "== release build" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j2

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build" >&2
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCHATD_SANITIZE=ON -DCHATD_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j2
