#!/usr/bin/env bash
# Warehouse benchmark: times `kinesync sync` (the release binary) over the reference rows held
# in a PostgreSQL table, into a simulated 4-shard stream without limits: a backfill, then a run after one
# UPDATE of 1% of the rows; with the state in the local SQLite file, then in the warehouse
# (`[sync] state_schema`, where the diff runs in the warehouse). The same rows from an NDJSON
# file run first, as the baseline the Postgres source is compared with. Prints rows/s, seconds,
# bytes read from Postgres (the values of the rows that came, as kinesync logs them) and peak
# memory (maximum resident set size, from /usr/bin/time) of each run; and, for the state in the
# warehouse, the time the diff's statements take alone in psql (the statements as kinesync logs
# it), to compare the 1% run with.
#
#   scripts/bench-warehouse.sh [ROWS]          # default 1000000; the documented run is 10000000
#   KINESYNC_BIN=path/to/kinesync scripts/bench-warehouse.sh
#
# The server is the machine's PostgreSQL (as the tests start it: a new cluster in a temporary
# directory, on a free loopback port, stopped at the end). Timings vary on a shared machine:
# compare figures from one run.
set -euo pipefail

rows=${1:-1000000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -z "${KINESYNC_BIN:-}" ]; then
    cargo build -q --release -p kinesync-cli
fi
cargo build -q --release -p kinesync-fixtures --example gen_rows
kinesync="${KINESYNC_BIN:-$root/target/release/kinesync}"
gen_rows="$root/target/release/examples/gen_rows"
bin=${KINESYNC_POSTGRES_BIN:-$(dirname "$(readlink -f "$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)")")}

work=$(mktemp -d)
chmod 755 "$work"
password=bench-$RANDOM$RANDOM
coproc PG { python3 "$root/crates/testkit/src/postgres_launcher.py" "$bin" kinesync "$password" "$work/ca.pem"; }
trap 'exec {PG[1]}>&-; wait; rm -rf "$work"' EXIT
read -r _ port <&"${PG[0]}"
url="postgres://kinesync:$password@127.0.0.1:$port/postgres?sslmode=disable"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$url" "$@"; }

"$gen_rows" "$rows" "$work/model.ndjson"
chmod 644 "$work/model.ndjson"
echo "model: $rows rows, $(du -h "$work/model.ndjson" | cut -f1) of NDJSON; $(nproc) cores; PostgreSQL on 127.0.0.1:$port"
psql <<SQL
CREATE TABLE raw (j jsonb);
\copy raw FROM '$work/model.ndjson' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
CREATE TABLE users AS SELECT (j->>'id')::int8 AS id, j->>'first_name' AS first_name,
    j->>'last_name' AS last_name, j->>'email' AS email, (j->>'age')::int4 AS age,
    ARRAY(SELECT jsonb_array_elements_text(j->'tags')) AS tags, j->>'created_at' AS created_at,
    j->>'country' AS country, j->>'plan' AS plan, (j->>'score')::float8 AS score,
    (j->>'active')::bool AS active
  FROM raw;
ALTER TABLE users ADD PRIMARY KEY (id);
DROP TABLE raw;
VACUUM ANALYZE users;
SQL
echo "table: $(psql -A -t -c "SELECT pg_size_pretty(pg_total_relation_size('users'))")"

# One timed run: prints "seconds peak_kib bytes_from_postgres".
timed_sync() {
    RUST_LOG=info,kinesync=debug WAREHOUSE_URL="$url" /usr/bin/time -f "%e %M" -o "$work/time" "$kinesync" sync --config "$work/kinesync.toml" >"$work/out" 2>"$work/err" || {
        echo "kinesync sync failed:" >&2
        cat "$work/out" "$work/err" >&2
        exit 1
    }
    grep -q '^complete' "$work/out" || { cat "$work/out" >&2; exit 1; }
    echo "$(cat "$work/time") $(grep -o 'bytes=[0-9]*' "$work/err" | tail -1 | cut -d= -f2)"
}

config() {
    {
        printf '%s\n' "$1"
        printf 'primary_key = "id"\n\n[payload]\nmode = "template"\ntemplate_file = "%s"\n' "$root/fixtures/bench/reference.liquid"
        printf '\n[destination]\nstream = "bench"\nsimulated = { shards = 4, unlimited = true }\n'
        printf '\n[sync]\n%s\n' "$2"
    } >"$work/kinesync.toml"
}

report() {
    awk -v name="$1" -v rows="$rows" -v bs="$2" -v bk="$3" -v bb="$4" -v cs="$5" -v ck="$6" -v cb="$7" 'BEGIN {
        printf "%-26s backfill %8.0f rows/s (%6.2f s, peak %4.0f MiB", name, rows / bs, bs, bk / 1024
        if (bb != "") printf ", %.0f MiB read", bb / 1048576
        printf ")"
        if (cs != "") printf " | 1%% changed %6.2f s (peak %4.0f MiB, %.1f MiB read)", cs, ck / 1024, cb / 1048576
        printf "\n"
    }'
}

# The baseline: the same rows from the NDJSON file.
rm -rf "$work"/kinesync-state.db* "$work/kinesync-runs"
config "[source]
path = \"model.ndjson\"" ""
read -r file_s file_kib _ < <(timed_sync)
report "NDJSON file" "$file_s" "$file_kib" "" "" "" ""

for state in local warehouse; do
    rm -rf "$work"/kinesync-state.db* "$work/kinesync-runs"
    psql -c "DROP SCHEMA IF EXISTS kinesync CASCADE" 2>/dev/null
    psql -c "UPDATE users SET score = score - 1000 WHERE score >= 1000" >/dev/null
    if [ "$state" = local ]; then extra=""; else extra='state_schema = "kinesync"'; fi
    config "[source]
format = \"postgres\"
connection_env = \"WAREHOUSE_URL\"
table = \"users\"" "$extra"
    read -r backfill_s backfill_kib backfill_bytes < <(timed_sync)
    grep -q "added $rows" "$work/out" || { cat "$work/out" >&2; exit 1; }
    if [ "$state" = warehouse ]; then
        # A run with nothing changed logs the diff's statements: the second, as the 1% run,
        # diffs from the mark the first leaves (the backfill read the model whole). They are
        # timed alone, as psql runs them, after the UPDATE (best of three).
        timed_sync >/dev/null
        timed_sync >/dev/null
        grep -q "changed 0" "$work/out" || { cat "$work/out" >&2; exit 1; }
        grep -q "rows written since the last complete run" "$work/err" || { echo "the diff did not start from the last run's mark" >&2; exit 1; }
        # The statement spans lines, up to the next log line.
        awk '/the diff runs in the warehouse: / { sub(/.*the diff runs in the warehouse: /, ""); on = 1; print; next }
             on && /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T/ { on = 0 }
             on { print }' "$work/err" >"$work/diff.sql"
        [ -s "$work/diff.sql" ] || { echo "no diff statement logged" >&2; cat "$work/err" >&2; exit 1; }
    fi
    psql -c "UPDATE users SET score = score + 1000 WHERE id % 100 = 0" >/dev/null
    if [ "$state" = warehouse ]; then
        psql_s=$(for _ in 1 2 3; do
            # With the settings kinesync gives the diff's transaction; every statement the
            # diff ran, timed together.
            { printf 'SET TimeZone = %s;\nSET parallel_tuple_cost = 0.01;\n\\timing on\n' "'UTC'"; cat "$work/diff.sql"; } |
                psql -o /dev/null | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{ s += $1 } END { print s }' 
        done | sort -n | head -1)
    fi
    read -r changed_s changed_kib changed_bytes < <(timed_sync)
    grep -q "changed $(( rows / 100 ))" "$work/out" || { cat "$work/out" >&2; exit 1; }
    report "Postgres, $state state" "$backfill_s" "$backfill_kib" "$backfill_bytes" "$changed_s" "$changed_kib" "$changed_bytes"
    if [ "$state" = local ]; then local_changed_s=$changed_s; fi
done
awk -v ms="$psql_s" -v s="$changed_s" 'BEGIN {
    printf "the diff statement alone in psql: %.2f s; the 1%% run with the state in the warehouse took %.2fx that\n", ms / 1000, s * 1000 / ms
}' 
awk -v l="$local_changed_s" -v w="$changed_s" 'BEGIN {
    printf "the 1%% run with the state in the warehouse: %.2fx as fast as with the local state\n", l / w
}'
awk -v f="$file_s" 'BEGIN { printf "(compare each backfill with the NDJSON file: rows/s of Postgres over rows/s of the file)\n" }'
