#!/usr/bin/env bash
# Whole-process benchmark: times `kinesync sync` (the release binary, as a user runs it) from an
# NDJSON model of the reference rows into a simulated 4-shard stream without limits (a paced
# one would measure the stream), with SQLite state: a backfill, then a run with 1% of the rows
# changed. Prints rows/s, seconds and peak memory
# (maximum resident set size, from /usr/bin/time) for each payload mode.
#
#   scripts/bench-process.sh [ROWS] [MODES]      # defaults: 1000000 "template mapping"
#   KINESYNC_BIN=path/to/kinesync scripts/bench-process.sh   # another build, to compare side by side
#
# Figures go in the README's performance section. Timings vary on a shared machine: compare
# figures from one run.
set -euo pipefail

rows=${1:-1000000}
modes=${2:-template mapping}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -z "${KINESYNC_BIN:-}" ]; then
    cargo build -q --release -p kinesync-cli
fi
cargo build -q --release -p kinesync-fixtures --example gen_rows
kinesync="${KINESYNC_BIN:-$root/target/release/kinesync}"
gen_rows="$root/target/release/examples/gen_rows"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$gen_rows" "$rows" "$work/model-0.ndjson"
"$gen_rows" "$rows" "$work/model-1.ndjson" 1
echo "model: $rows rows, $(du -h "$work/model-0.ndjson" | cut -f1) of NDJSON; $(nproc) cores"

payload() {
    case "$1" in
    template)
        printf '[payload]\nmode = "template"\ntemplate_file = "%s"\n' "$root/fixtures/bench/reference.liquid"
        ;;
    mapping)
        printf '[payload]\nmode = "mapping"\n'
        for column in id first_name last_name email age tags created_at country plan score active; do
            printf '[[payload.fields]]\nfrom = "%s"\nto = "user_%s"\n' "$column" "$column"
        done
        ;;
    esac
}

# One timed run: prints "seconds peak_kib".
timed_sync() {
    /usr/bin/time -f "%e %M" -o "$work/time" "$kinesync" sync --config "$work/kinesync.toml" >"$work/out" 2>"$work/err" || {
        echo "kinesync sync failed:" >&2
        cat "$work/out" "$work/err" >&2
        exit 1
    }
    grep -q '^complete' "$work/out" || { cat "$work/out" >&2; exit 1; }
    cat "$work/time"
}

for mode in $modes; do
    rm -rf "$work/kinesync-state.db"* "$work/kinesync-runs"
    cp "$work/model-0.ndjson" "$work/model.ndjson"
    {
        printf '[source]\npath = "model.ndjson"\nprimary_key = "id"\n\n'
        payload "$mode"
        printf '\n[destination]\nstream = "bench"\nsimulated = { shards = 4, unlimited = true }\n'
    } >"$work/kinesync.toml"
    read -r backfill_s backfill_kib < <(timed_sync)
    grep -q "added $rows" "$work/out" || { cat "$work/out" >&2; exit 1; }
    cp "$work/model-1.ndjson" "$work/model.ndjson"
    read -r changed_s changed_kib < <(timed_sync)
    grep -q "changed $(( (rows + 99) / 100 ))" "$work/out" || { cat "$work/out" >&2; exit 1; }
    awk -v mode="$mode" -v rows="$rows" -v bs="$backfill_s" -v bk="$backfill_kib" -v cs="$changed_s" -v ck="$changed_kib" 'BEGIN {
        printf "%-9s backfill %8.0f rows/s (%6.2f s, peak %4.0f MiB) | 1%% changed %8.0f rows/s (%5.2f s, peak %4.0f MiB)\n",
            mode, rows / bs, bs, bk / 1024, rows / cs, cs, ck / 1024
    }'
done
