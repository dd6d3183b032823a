# Everyday recipes. `just --list` shows them; each is a plain cargo command you can run by hand.

# Run every test (the README's test command, the one CI runs).
test:
    cargo test --workspace

# Format, lint, test: what CI runs.
ci:
    bash .ci/run

# Sync the example model into a simulated stream (run it twice: the second sends nothing).
sync-example:
    cargo run -q -p kinesync-cli -- sync --config examples/users/kinesync.toml

# Preview the example model's records without sending anything.
preview-example:
    cargo run -q -p kinesync-cli -- preview --config examples/users/kinesync.toml

# Render rate of each payload mode over the reference rows (criterion).
bench-payload:
    cargo bench -p kinesync-payload --bench render

# All benchmarks.
bench: bench-payload bench-sync bench-pacing bench-aggregation bench-process bench-warehouse

# Review changed template snapshots (needs `cargo install cargo-insta`).
snapshots:
    cargo insta review

# Write the reference benchmark rows as NDJSON: `just gen-rows 1000000 rows.ndjson`.
gen-rows n out:
    cargo run -q --release -p kinesync-fixtures --example gen_rows -- {{n}} {{out}}

# Whole syncs into InMemorySink through the engine: backfill and 1% changed (1M rows).
bench-sync:
    cargo bench -p kinesync-engine --bench sync

# Pacing into streams that enforce the service's per-shard limits (simulated and kinesalite).
bench-pacing:
    cargo bench -p kinesync-engine --bench pacing

# Aggregated and unpacked side by side, into streams with the service's limits.
bench-aggregation:
    cargo bench -p kinesync-engine --bench aggregation

# The `kinesync sync` process end to end from a 1M-row NDJSON model: rows/s and peak memory.
bench-process:
    bash scripts/bench-process.sh

# The reference rows in a PostgreSQL table (the machine's server, started by the script): backfill
# and 1% changed, local state and state in the warehouse, beside the same rows from a file.
bench-warehouse rows="1000000":
    bash scripts/bench-warehouse.sh {{rows}}
