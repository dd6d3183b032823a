//! Whole syncs into `InMemorySink`, on the default SQLite state store: a backfill of the
//! reference rows, then a run with 1% of them changed, with the reference template and with
//! `mapping`. Reports rows/s, the incremental run's time (medians of five runs, with their
//! range), the ratio to the payload engine's own render rate measured in the same process, and
//! peak memory (VmHWM) of each scenario, each in its own process so the peaks do not mix.
//!
//! `cargo bench -p kinesync-engine --bench sync` (1,000,000 rows), or
//! `cargo bench -p kinesync-engine --bench sync -- ROWS` for another size.

// The harness prints its results; that is its job.
#![allow(clippy::print_stdout, missing_docs)]

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use kinesync_engine::{Engine, Outcome};
use kinesync_engine::{KeySpec, RecordBuilder};
use kinesync_fixtures::BENCH_COLUMNS;
use kinesync_payload::{Payload, RenderInput, Row, Schema};
use kinesync_state::SqliteStore;

mod model;

use kinesync_transport::{InMemorySink, StreamConfig, StreamName};
use model::{generated, row, spec};

/// The allocator the `kinesync` binary uses, so that the figures are the ones users get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Times a backfill then a 1% run, each on a fresh state store and stream: seconds of each.
fn backfill_then_changes(mode: &str, schema: &Arc<Schema>, rows: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("bench").unwrap();
    // The simulated stream counts records without keeping them: its memory is not the
    // engine's.
    sink.create_stream(
        &stream,
        StreamConfig {
            keep_records: false,
            ..StreamConfig::with_shards(4)
        },
    );
    let records = RecordBuilder::new(
        Payload::compile(&spec(mode), schema.clone()).unwrap(),
        KeySpec::new(schema, None, None).unwrap(),
    );
    // The in-memory stream has no limits: unpaced, this measures the engine itself.
    let mut engine = Engine::builder()
        .records(records)
        .sink(sink.clone(), stream.clone())
        .state(SqliteStore::open(dir.path().join("state.db")).unwrap())
        .limits(kinesync_engine::Limits {
            shard_records_per_second: f64::INFINITY,
            ..kinesync_engine::Limits::default()
        })
        .build()
        .unwrap();
    // The runtime the `kinesync` binary runs on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let t = Instant::now();
    let report = runtime
        .block_on(engine.run_source(generated(schema, rows, 0)))
        .unwrap();
    let backfill = t.elapsed().as_secs_f64();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.records.acknowledged, rows as u64);

    let t = Instant::now();
    let report = runtime
        .block_on(engine.run_source(generated(schema, rows, 1)))
        .unwrap();
    let incremental = t.elapsed().as_secs_f64();
    assert_eq!(report.events.changed, rows.div_ceil(100) as u64);
    (backfill, incremental)
}

/// The middle value.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One scenario, in this process: prints one line of results.
///
/// The machines this runs on are shared and noisy, so the scenario runs five times, with
/// the payload engine's own render rate measured before each run and after the last (five
/// passes over 20,000 rows each). It reports the median backfill and 1% run, and their
/// ratio to the best render rate seen: a rate measured in a slow moment would flatter it.
fn scenario(mode: &str, rows: usize) {
    const REPEATS: usize = 5;
    let schema = Schema::new(BENCH_COLUMNS, "id").unwrap();
    let payload = Payload::compile(&spec(mode), schema.clone()).unwrap();
    let sample = rows.min(20_000);
    let mut out = Vec::with_capacity(512);
    let mut render_rate: f64 = 0.0;
    // The sample is made afresh each time, so that it is not held through the runs and
    // their peak memory.
    let mut measure_render = || {
        let sample_rows: Vec<Row> = (0..sample).map(|i| row(i, 0)).collect();
        for _ in 0..5 {
            let t = Instant::now();
            for r in &sample_rows {
                payload
                    .render_into(
                        RenderInput::new(r, kinesync_payload::Event::Added),
                        &mut out,
                    )
                    .unwrap();
            }
            render_rate = render_rate.max(sample as f64 / t.elapsed().as_secs_f64());
        }
    };
    let mut backfills = Vec::new();
    let mut incrementals = Vec::new();
    for _ in 0..REPEATS {
        measure_render();
        let (backfill, incremental) = backfill_then_changes(mode, &schema, rows);
        backfills.push(rows as f64 / backfill);
        incrementals.push(incremental);
    }
    measure_render();
    let backfill = median(backfills.clone());
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    };
    let (lo, hi) = spread(&backfills);
    let (ilo, ihi) = spread(&incrementals);
    println!(
        "{mode:<9} {rows:>9} rows | backfill {backfill:>8.0} rows/s ({:.2} s; {lo:.0}..{hi:.0}) = {:>4.0}% of render rate {render_rate:>8.0}/s | 1% changed: {:.2} s ({ilo:.2}..{ihi:.2}) | peak {:.0} MiB",
        rows as f64 / backfill,
        100.0 * backfill / render_rate,
        median(incrementals.clone()),
        peak_memory_mib(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [mode, rows, flag] = args.as_slice()
        && flag == "scenario"
    {
        scenario(mode, rows.parse().expect("a row count"));
        return;
    }
    let rows: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let exe = std::env::current_exe().unwrap();
    for mode in ["template", "mapping"] {
        for size in [rows / 4, rows] {
            let status = Command::new(&exe)
                .args([mode, &size.to_string(), "scenario"])
                .status()
                .unwrap();
            assert!(status.success(), "scenario {mode} {size} failed");
        }
    }
}
