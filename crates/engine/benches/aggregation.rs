//! Aggregation, in real time, into streams that enforce the service's per-shard limits (1,000
//! records and 1 MiB per second, a token bucket of one second): the same rows sent packed and
//! unpacked, side by side in one run of the benchmark. Prints, per scenario, the rows per
//! second per shard after each shard's one-second burst (against the 1,000 records/s a shard
//! takes unpacked), the share of the shard's bytes that is, the share of Kinesis record
//! attempts throttled, and how records packed.
//!
//! - **reference rows**: the reference rows (reference template), keyed by id, into 4 shards;
//! - **one key**: the reference rows with one partition key for all, every call delayed by
//!   20 ms (a region's round trip): unpacked, one record per call.
//!
//! Each runs on the in-memory stream behind the test kit's `LimitSink` (**simulated**) and on
//! kinesalite behind the test kit's loopback endpoint with the same limits (**kinesalite**).
//!
//! `cargo bench -p kinesync-engine --bench aggregation` (or `just bench-aggregation`); a first
//! argument `simulated` or `kinesalite` runs only that target.

// The harness prints its results; that is its job.
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use kinesync_engine::{Aggregation, Engine, KeySpec, Outcome, RecordBuilder};
use kinesync_fixtures::BENCH_COLUMNS;
use kinesync_payload::{Payload, Schema, Value};
use kinesync_source::{Locator, RowSource, SourceError, SourceRow};
use kinesync_state::MemoryStore;
use kinesync_testkit::counting::CountingSink;
use kinesync_testkit::fake_kinesis::{FakeKinesis, HttpFault};
use kinesync_testkit::probe::{KinesisProbe, aws_sink};
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance::{StreamProbe, unique_stream};
use kinesync_transport::{
    InMemorySink, KinesisSink, LimitSink, StreamConfig, StreamName, TokioClock,
};
use tokio::time::Instant;

mod model;

/// The allocator the `kinesync` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MIB: f64 = 1024.0 * 1024.0;

/// The reference rows with a `tenant` column that is the same for every row.
struct OneTenant {
    schema: Arc<Schema>,
    rows: std::ops::Range<usize>,
}

impl Iterator for OneTenant {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.rows.next()?;
        let mut values = model::row(i, 0).into_values();
        values.push(Value::from("acme"));
        Some(Ok(SourceRow::new(
            i as u64 + 1,
            kinesync_payload::Row::new(values),
        )))
    }
}

impl RowSource for OneTenant {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> Locator {
        Locator::lines("generated")
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// The reference rows, keyed by id.
    Reference,
    /// The reference rows, one partition key for all.
    OneKey,
}

struct Scenario {
    name: &'static str,
    rows: Rows,
    count: usize,
    shards: u32,
    aggregate: bool,
    delay: Duration,
}

fn scenarios() -> Vec<Scenario> {
    let round_trip = Duration::from_millis(20);
    vec![
        Scenario {
            name: "reference rows, unpacked",
            rows: Rows::Reference,
            count: 60_000,
            shards: 4,
            aggregate: false,
            delay: Duration::ZERO,
        },
        Scenario {
            name: "reference rows, aggregated",
            rows: Rows::Reference,
            count: 200_000,
            shards: 4,
            aggregate: true,
            delay: Duration::ZERO,
        },
        Scenario {
            name: "one key, 20 ms a call, unpacked",
            rows: Rows::OneKey,
            count: 500,
            shards: 4,
            aggregate: false,
            delay: round_trip,
        },
        Scenario {
            name: "one key, 20 ms a call, aggregated",
            rows: Rows::OneKey,
            count: 5_000,
            shards: 4,
            aggregate: true,
            delay: round_trip,
        },
        Scenario {
            name: "one key, 20 ms a call, aggregated",
            rows: Rows::OneKey,
            count: 50_000,
            shards: 4,
            aggregate: true,
            delay: round_trip,
        },
    ]
}

/// Runs one scenario through `sink` and prints its line. `shards_used`: the shards its keys
/// reach.
async fn run(scenario: &Scenario, target: &str, sink: Arc<dyn KinesisSink>, stream: StreamName) {
    let mut columns: Vec<&str> = BENCH_COLUMNS.to_vec();
    let (source, key, shards_used): (Box<dyn RowSource>, Option<&str>, f64) = match scenario.rows {
        Rows::Reference => {
            let schema = Schema::new(BENCH_COLUMNS, "id").unwrap();
            (
                model::generated(&schema, scenario.count, 0),
                None,
                f64::from(scenario.shards),
            )
        }
        Rows::OneKey => {
            columns.push("tenant");
            let schema = Schema::new(columns.clone(), "id").unwrap();
            (
                Box::new(OneTenant {
                    schema,
                    rows: 0..scenario.count,
                }),
                Some("tenant"),
                1.0,
            )
        }
    };
    let schema = source.schema().clone();
    let records = RecordBuilder::new(
        Payload::compile(&model::spec("template"), schema.clone()).unwrap(),
        KeySpec::new(&schema, key, None).unwrap(),
    );
    let counted = Arc::new(CountingSink::new(sink).with_delay(scenario.delay));
    let mut builder = Engine::builder()
        .records(records)
        .sink(counted.clone(), stream)
        .state(MemoryStore::new());
    if scenario.aggregate {
        builder = builder.aggregate(Aggregation::default());
    }
    let mut engine = builder.build().unwrap();
    let start = Instant::now();
    let report = engine.run_source(source).await.unwrap();
    let took = start.elapsed().as_secs_f64();
    let count = scenario.count as f64;
    let bytes_per_row = report.bytes_sent as f64 / count;
    // What the shards take at once: a second's records, or a second's bytes, whichever is
    // fewer rows.
    let per_record = if scenario.aggregate {
        bytes_per_row
    } else {
        bytes_per_row.max(MIB / 1000.0)
    };
    let burst_rows = (shards_used * MIB / per_record).min(count);
    let rows_per_shard = (count - burst_rows) / took / shards_used;
    let bytes_share =
        (report.bytes_sent as f64 - burst_rows * bytes_per_row).max(0.0) / took / shards_used / MIB;
    let attempts = counted.attempts() as f64;
    let packing = report.packing.as_ref().map_or_else(
        || "unpacked".to_owned(),
        |p| format!("{:.1} rows per Kinesis record", p.ratio()),
    );
    println!(
        "{target:<10} {:<36} {:>7} rows | {took:>6.2} s | {rows_per_shard:>6.0} rows/s/shard after the burst = {:>4.2}x the record limit, {:>5.1}% of the bytes | {:>5.2}% of {attempts:.0} attempts throttled | {} calls | {packing} | {}",
        scenario.name,
        scenario.count,
        rows_per_shard / 1000.0,
        bytes_share * 100.0,
        100.0 * report.throttled_records as f64 / attempts.max(1.0),
        report.calls,
        if matches!(report.outcome, Outcome::Complete) {
            "all acknowledged".to_owned()
        } else {
            format!("{:?}, {} pending", report.outcome, report.records.pending)
        },
    );
}

#[tokio::main]
async fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |target: &str| only.as_deref().is_none_or(|o| o == target);
    if wanted("simulated") {
        for scenario in scenarios() {
            let memory = Arc::new(InMemorySink::new());
            let stream = StreamName::new("aggregation").unwrap();
            memory.create_stream(
                &stream,
                StreamConfig {
                    keep_records: false,
                    ..StreamConfig::with_shards(scenario.shards)
                },
            );
            let limited: Arc<dyn KinesisSink> =
                Arc::new(LimitSink::new(memory, Arc::new(TokioClock::default())));
            run(&scenario, "simulated", limited, stream).await;
        }
    }
    if wanted("kinesalite") {
        let server = kinesalite();
        let probe = KinesisProbe::new(&server.endpoint).await;
        for scenario in scenarios() {
            let stream = unique_stream("aggregation");
            probe.create_stream(&stream, scenario.shards).await;
            let limited: Arc<dyn KinesisSink> = Arc::new(LimitSink::new(
                aws_sink(&server.endpoint).await,
                Arc::new(TokioClock::default()),
            ));
            let endpoint = FakeKinesis::start(limited).await;
            if !scenario.delay.is_zero() {
                endpoint.fault_every("PutRecords", HttpFault::Delay(scenario.delay));
            }
            let sink: Arc<dyn KinesisSink> = Arc::new(aws_sink(&endpoint.endpoint).await);
            let scenario = Scenario {
                // The endpoint delays the calls instead.
                delay: Duration::ZERO,
                ..scenario
            };
            run(&scenario, "kinesalite", sink, stream).await;
        }
    }
}
