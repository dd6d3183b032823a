//! Pacing, in real time: backfills of the reference rows (reference template) into streams
//! that enforce the service's per-shard limits (1,000 records and 1 MiB per second, a token
//! bucket of one second, throttling each record over it), with the default settings. Prints,
//! per scenario, the share of the capacity used (the least time the limits allow, after each
//! shard's one-second burst, over the time taken) and the share of record attempts throttled.
//!
//! - **simulated**: the in-memory stream behind the test kit's `LimitSink`, as
//!   `simulated = { shards = N }` is;
//! - **kinesalite**: kinesalite (started on first use) behind the test kit's loopback Kinesis
//!   endpoint, which puts the same limits in front of it, through the AWS SDK.
//!
//! `cargo bench -p kinesync-engine --bench pacing` (or `just bench-pacing`).

// The harness prints its results; that is its job.
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kinesync_engine::{Engine, KeySpec, Outcome, RecordBuilder};
use kinesync_fixtures::BENCH_COLUMNS;
use kinesync_keys::{HashKey, PartitionKey, ShardMap};
use kinesync_payload::{Payload, Schema};
use kinesync_source::RowSource;
use kinesync_state::MemoryStore;
use kinesync_testkit::fake_kinesis::FakeKinesis;
use kinesync_testkit::probe::{KinesisProbe, aws_sink};
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance::{StreamProbe, unique_stream};
use kinesync_transport::{
    InMemorySink, KinesisSink, LimitSink, PutRecord, RecordOutcome, StreamConfig,
    StreamDescription, StreamName, TokioClock, TransportError,
};
use tokio::time::Instant;

mod model;

/// The allocator the `kinesync` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts record attempts on their way to the stream.
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn KinesisSink>,
    attempts: AtomicU64,
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl KinesisSink for Counted {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        self.attempts
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let out = self.inner.put_records(stream, records).await;
        if std::env::var_os("PACING_TRACE").is_some() {
            let failed = out.as_ref().map_or(records.len(), |o| {
                o.iter().filter(|o| !o.is_accepted()).count()
            });
            println!(
                "{:?} {} {}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
                records.len(),
                failed
            );
        }
        out
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError> {
        self.inner.describe_stream(stream).await
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        self.inner.list_streams().await
    }
}

/// Which rows a scenario sends.
#[derive(Clone, Copy)]
enum Rows {
    /// The first N reference rows.
    First(usize),
    /// N reference rows whose partition key (the id) is on the first of the stream's shards.
    OnFirstShard(usize),
}

struct Scenario {
    name: &'static str,
    rows: Rows,
    shards: u32,
    /// Another producer writes this many records per second to every shard meanwhile.
    other_producer: u32,
    /// Shard 0 is split once this many records have landed (simulated streams only).
    split_after: Option<u64>,
}

fn source(schema: &Arc<Schema>, rows: Rows, shards: u32) -> (Box<dyn RowSource>, usize) {
    match rows {
        Rows::First(n) => (model::generated(schema, n, 0), n),
        Rows::OnFirstShard(n) => {
            let map = ShardMap::even(shards).unwrap();
            let indices: Vec<usize> = (0..)
                .filter(|i: &usize| {
                    let id = kinesync_fixtures::bench_row(*i).id;
                    let key = PartitionKey::new(id.to_string()).unwrap();
                    map.index_for(HashKey::for_record(&key, None)) == 0
                })
                .take(n)
                .collect();
            (model::only(schema, indices, 0), n)
        }
    }
}

/// A record for each shard of `shards`, for the other producer.
fn one_record_per_shard(shards: u32) -> Vec<PutRecord> {
    let map = ShardMap::even(shards).unwrap();
    (0..shards as usize)
        .map(|shard| {
            let key = (0..)
                .map(|n| PartitionKey::new(format!("other-{n}")).unwrap())
                .find(|key| map.index_for(HashKey::for_record(key, None)) == shard)
                .unwrap();
            PutRecord::new(key, br#"{"other":true}"#.to_vec())
        })
        .collect()
}

/// Runs one scenario against `limited` (the stream behind the limits, which the other
/// producer writes to) through `sink` (how kinesync reaches it), and prints its line.
async fn run(
    scenario: &Scenario,
    target: &str,
    sink: Arc<dyn KinesisSink>,
    limited: Arc<dyn KinesisSink>,
    stream: StreamName,
) {
    let schema = Schema::new(BENCH_COLUMNS, "id").unwrap();
    let records = RecordBuilder::new(
        Payload::compile(&model::spec("template"), schema.clone()).unwrap(),
        KeySpec::new(&schema, None, None).unwrap(),
    );
    let counted = Arc::new(Counted {
        inner: sink,
        attempts: AtomicU64::new(0),
    });
    let mut engine = Engine::builder()
        .records(records)
        .sink(counted.clone(), stream.clone())
        .state(MemoryStore::new())
        .build()
        .unwrap();
    let other = (scenario.other_producer > 0).then(|| {
        let batch: Vec<PutRecord> = one_record_per_shard(scenario.shards)
            .into_iter()
            .flat_map(|r| std::iter::repeat_n(r, scenario.other_producer as usize / 100))
            .collect();
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let _ignored = limited.put_records(&stream, &batch).await;
            }
        })
    });
    let (rows, count) = source(&schema, scenario.rows, scenario.shards);
    let shards_used = match scenario.rows {
        Rows::First(_) => scenario.shards,
        Rows::OnFirstShard(_) => 1,
    };
    let per_shard = 1000.0 - f64::from(scenario.other_producer);
    let capacity = f64::from(shards_used) * per_shard;
    let least = (count as f64 - capacity).max(0.0) / capacity;
    let start = Instant::now();
    let report = engine.run_source(rows).await.unwrap();
    let took = start.elapsed().as_secs_f64();
    if let Some(other) = other {
        other.abort();
    }
    let attempts = counted.attempts.load(Ordering::Relaxed) as f64;
    let complete = matches!(report.outcome, Outcome::Complete);
    println!(
        "{target:<10} {:<34} {count:>7} rows {:>2} shards | {took:>6.1} s (least {least:>5.1}) = {:>5.1}% of capacity | {:>5.2}% of {attempts:.0} attempts throttled | {} calls | {}",
        scenario.name,
        scenario.shards,
        100.0 * least / took,
        100.0 * report.throttled_records as f64 / attempts.max(1.0),
        report.calls,
        if complete {
            "all acknowledged".to_owned()
        } else {
            format!("{:?}, {} pending", report.outcome, report.records.pending)
        },
    );
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "backfill",
            rows: Rows::First(40_000),
            shards: 4,
            other_producer: 0,
            split_after: None,
        },
        Scenario {
            name: "backfill",
            rows: Rows::First(200_000),
            shards: 4,
            other_producer: 0,
            split_after: None,
        },
        Scenario {
            name: "backfill",
            rows: Rows::First(200_000),
            shards: 16,
            other_producer: 0,
            split_after: None,
        },
        Scenario {
            name: "hot shard (every key on shard 0)",
            rows: Rows::OnFirstShard(20_000),
            shards: 4,
            other_producer: 0,
            split_after: None,
        },
        Scenario {
            name: "another producer takes 500/s/shard",
            rows: Rows::First(40_000),
            shards: 4,
            other_producer: 500,
            split_after: None,
        },
        Scenario {
            name: "shard 0 split after 10,000 records",
            rows: Rows::First(40_000),
            shards: 4,
            other_producer: 0,
            split_after: Some(10_000),
        },
    ]
}

#[tokio::main]
async fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |target: &str| only.as_deref().is_none_or(|o| o == target);
    if wanted("simulated") {
        let traced = std::env::var_os("PACING_TRACE").is_some();
        for scenario in scenarios()
            .into_iter()
            .take(if traced { 1 } else { usize::MAX })
        {
            let memory = Arc::new(InMemorySink::new());
            let stream = StreamName::new("pacing").unwrap();
            memory.create_stream(
                &stream,
                StreamConfig {
                    keep_records: false,
                    ..StreamConfig::with_shards(scenario.shards)
                },
            );
            let limited: Arc<dyn KinesisSink> = Arc::new(LimitSink::new(
                memory.clone(),
                Arc::new(TokioClock::default()),
            ));
            // The split, when the scenario has one: shard 0 of the stream underneath, once
            // enough records landed.
            let splitter = scenario.split_after.map(|after| {
                let (memory, stream) = (memory.clone(), stream.clone());
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_millis(20));
                    loop {
                        every.tick().await;
                        let landed: u64 = memory
                            .shard_counts(&stream)
                            .map_or(0, |counts| counts.iter().map(|(_, n)| n).sum());
                        if landed >= after {
                            memory.split_shard(&stream, "shardId-000000000000");
                            return;
                        }
                    }
                })
            });
            run(&scenario, "simulated", limited.clone(), limited, stream).await;
            if let Some(splitter) = splitter {
                splitter.abort();
            }
        }
    }
    if wanted("kinesalite") {
        let server = kinesalite();
        let probe = KinesisProbe::new(&server.endpoint).await;
        // What kinesalite itself takes, unpaced and without limits, and through the loopback
        // endpoint (one more HTTP hop, without its limits): the ceiling of what any scenario
        // below can reach.
        for through_endpoint in [false, true] {
            let stream = unique_stream("pacing");
            probe.create_stream(&stream, 16).await;
            let direct: Arc<dyn KinesisSink> = Arc::new(aws_sink(&server.endpoint).await);
            let sink: Arc<dyn KinesisSink> = if through_endpoint {
                let endpoint = FakeKinesis::start(direct).await;
                Arc::new(aws_sink(&endpoint.endpoint).await)
            } else {
                direct
            };
            let schema = Schema::new(BENCH_COLUMNS, "id").unwrap();
            let mut engine = Engine::builder()
                .records(RecordBuilder::new(
                    Payload::compile(&model::spec("template"), schema.clone()).unwrap(),
                    KeySpec::new(&schema, None, None).unwrap(),
                ))
                .sink(sink, stream)
                .state(MemoryStore::new())
                .limits(kinesync_engine::Limits {
                    shard_records_per_second: f64::INFINITY,
                    ..kinesync_engine::Limits::default()
                })
                .build()
                .unwrap();
            let start = Instant::now();
            let report = engine
                .run_source(model::generated(&schema, 100_000, 0))
                .await
                .unwrap();
            println!(
                "kinesalite {}, unpaced, no limits: 100000 rows into 16 shards at {:.0} records/s ({:?})",
                if through_endpoint {
                    "through the loopback endpoint"
                } else {
                    "alone"
                },
                100_000.0 / start.elapsed().as_secs_f64(),
                report.outcome
            );
        }
        for scenario in scenarios().into_iter().filter(|s| {
            s.split_after.is_none()
                && (matches!(s.rows, Rows::First(n) if n <= 40_000 )
                    || matches!(s.rows, Rows::OnFirstShard(_))
                    || s.shards == 16)
        }) {
            let stream = unique_stream("pacing");
            probe.create_stream(&stream, scenario.shards).await;
            let limited: Arc<dyn KinesisSink> = Arc::new(LimitSink::new(
                aws_sink(&server.endpoint).await,
                Arc::new(TokioClock::default()),
            ));
            let endpoint = FakeKinesis::start(limited.clone()).await;
            let sink: Arc<dyn KinesisSink> = Arc::new(aws_sink(&endpoint.endpoint).await);
            run(&scenario, "kinesalite", sink, limited, stream).await;
        }
    }
}
