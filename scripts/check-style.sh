#!/bin/sh
# The checks STYLE.md asks CI to make: no banned C functions, and every C
# file formatted by .clang-format.
set -eu
cd "$(dirname "$0")/.."

files=$(git ls-files 'src/*.c' 'src/*.h' 'tools/*.c' 'tests/*.c' 'bench/*.c' 2>/dev/null || true)
[ -n "$files" ] || exit 0

# shellcheck disable=SC2086
banned=$(grep -nE '\b(sprintf|strcpy|strcat|strncpy|strtok|atoi|gets)[[:space:]]*\(' $files |
         grep -vE '\b(snprintf|vsnprintf)\b' || true)
if [ -n "$banned" ]; then
    echo "check-style: banned functions (see STYLE.md):" >&2
    echo "$banned" >&2
    exit 1
fi

if command -v clang-format >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    if ! clang-format --dry-run -Werror $files >/dev/null 2>&1; then
        echo "check-style: files not formatted with .clang-format (run: clang-format -i FILES):" >&2
        for f in $files; do
            clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "  $f" >&2
        done
        exit 1
    fi
fi
