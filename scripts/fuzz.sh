#!/bin/sh
# Runs libFuzzer harnesses: scripts/fuzz.sh SECONDS NAME...
# Each starts from tests/fuzz/corpus/NAME (committed seeds) plus what earlier
# runs found (build/fuzz/corpus-NAME); a crash stops with a non-zero exit and
# leaves the input in build/fuzz/.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=$1
shift
status=0
for name in "$@"; do
    work="$root/build/fuzz/corpus-$name"
    mkdir -p "$work"
    echo "fuzz $name: ${seconds}s" >&2
    if ! "$root/build/fuzz/fuzz_$name" -max_total_time="$seconds" -max_len=65536 \
            -artifact_prefix="$root/build/fuzz/crash-$name-" -print_final_stats=1 \
            "$work" "$root/tests/fuzz/corpus/$name" > "$root/build/fuzz/$name.log" 2>&1; then
        echo "fuzz $name: FAILED, see build/fuzz/$name.log" >&2
        tail -30 "$root/build/fuzz/$name.log" >&2
        status=1
    else
        grep -E "stat::number_of_executed_units|cov:" "$root/build/fuzz/$name.log" | tail -2 >&2
    fi
done
exit $status
