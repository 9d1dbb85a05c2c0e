#!/usr/bin/env bash
# Runs every benchmark in <build>/bench/ against the local services.
# Each prints its figures beside a baseline measured in the same run.
#   scripts/bench.sh [build-dir] [bench-name ...]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
shift || true
scripts/services.sh up >/dev/null
export EXECD_BIN="$PWD/$build/execd"
names=("$@")
if [ "${#names[@]}" -eq 0 ]; then
    for b in "$build"/bench/*; do
        [ -x "$b" ] && [ -f "$b" ] && names+=("$(basename "$b")")
    done
fi
[ "${#names[@]}" -gt 0 ] || { echo "bench: nothing built in $build/bench" >&2; exit 1; }
for n in "${names[@]}"; do
    echo "== bench/$n"
    "$build/bench/$n"
    echo
done
