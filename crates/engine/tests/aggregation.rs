//! Aggregation, on tokio's paused clock, into the in-memory stream behind the service's
//! per-shard limits (1,000 records and 1 MiB per second per shard). Everything sent is read
//! back with the test kit's reader of the format, written from its description: every user
//! record comes back once, with its key, on the shard its key maps to, in model order per key;
//! packed, the reference rows fill the shards' bytes instead of their records; one partition key
//! fills its shard; a reshard in the middle of a run sends again exactly the records an
//! aggregate put on the wrong shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kinesync_engine::{
    Aggregation, Engine, KeySpec, Limits, Outcome, Progress, RecordBuilder, RunReport,
};
use kinesync_fixtures::BENCH_COLUMNS;
use kinesync_keys::{HashKey, PartitionKey, ShardMap, ShardRange};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::MemoryStore;
use kinesync_testkit::counting::CountingSink;
use kinesync_testkit::deaggregate::deaggregate;
use kinesync_transport::{
    FaultySink, InMemorySink, KinesisSink, LimitSink, RandomFaults, TokioClock,
};
use tokio::time::Instant;

mod common;
#[path = "../benches/model/mod.rs"]
mod model;

use common::{SplitsMidway, memory_sink, stream};

const MIB: f64 = 1024.0 * 1024.0;

/// The service's limits around an in-memory stream of `shards` shards.
fn limited(memory: &Arc<InMemorySink>) -> Arc<dyn KinesisSink> {
    Arc::new(LimitSink::new(
        memory.clone(),
        Arc::new(TokioClock::default()),
    ))
}

fn aggregating(records: RecordBuilder, sink: Arc<dyn KinesisSink>, max_bytes: usize) -> Engine {
    Engine::builder()
        .records(records)
        .sink(sink, stream())
        .state(MemoryStore::new())
        .aggregate(Aggregation::with_max_bytes(max_bytes))
        .limits(Limits {
            seed: Some(5),
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(200),
            ..Limits::default()
        })
        .build()
        .unwrap()
}

/// Rows of tenants: `{id, tenant, name}`, keyed by tenant.
fn tenant_records() -> RecordBuilder {
    let schema = Schema::new(["id", "tenant", "name"], "id").unwrap();
    let template = r#"{"id": {{ row.id }}, "tenant": "{{ row.tenant }}", "name": "{{ row.name }}", "event": "{{ event }}"}"#;
    let payload = Payload::compile(&PayloadSpec::template(template), schema.clone()).unwrap();
    RecordBuilder::new(
        payload,
        KeySpec::new(&schema, Some("tenant"), None).unwrap(),
    )
}

/// `count` rows spread over `tenants` tenants, with names of `name_len` characters.
fn tenant_rows(count: i64, tenants: i64, name_len: usize) -> Vec<Row> {
    (1..=count)
        .map(|id| {
            Row::new(vec![
                Value::Int(id),
                Value::from(format!("tenant-{}", id % tenants)),
                Value::from("n".repeat(name_len)),
            ])
        })
        .collect()
}

async fn run(engine: &mut Engine, rows: &[Row]) -> RunReport {
    engine
        .run(rows.iter().cloned().map(Ok::<_, String>))
        .await
        .unwrap()
}

/// One user record as read back: where its Kinesis record is, and what it carried.
#[derive(Debug, Clone)]
struct ReadBack {
    shard_id: String,
    partition_key: String,
    id: i64,
}

/// Every user record in the stream, deaggregated, in stream order per shard.
fn read_back(memory: &InMemorySink) -> Vec<ReadBack> {
    let mut stored = memory.records(&stream()).unwrap();
    stored
        .sort_by(|a, b| (&a.shard_id, &a.sequence_number).cmp(&(&b.shard_id, &b.sequence_number)));
    let mut out = Vec::new();
    for record in stored {
        let users = deaggregate(&record.data).unwrap().unwrap_or_else(|| {
            vec![kinesync_testkit::deaggregate::UserRecord {
                partition_key: record.partition_key.as_str().to_owned(),
                explicit_hash_key: None,
                data: record.data.to_vec(),
            }]
        });
        for user in users {
            let message: serde_json::Value = serde_json::from_slice(&user.data).unwrap();
            out.push(ReadBack {
                shard_id: record.shard_id.clone(),
                partition_key: user.partition_key,
                id: message["id"].as_i64().unwrap(),
            });
        }
    }
    out
}

/// Whether `copy` is on a shard whose hash range holds its partition key's hash: where a
/// consumer reads it (the KCL drops a user record found on another shard).
fn placed(copy: &ReadBack, ranges: &[ShardRange]) -> bool {
    let hash = HashKey::of_partition_key(&PartitionKey::new(copy.partition_key.clone()).unwrap());
    ranges
        .iter()
        .any(|range| range.id() == copy.shard_id && range.contains(hash))
}

/// Per partition key, the ids of its placed copies, in the order a consumer reads them
/// (a parent shard before its children: their ids sort that way here).
fn ids_by_key(copies: &[ReadBack], ranges: &[ShardRange]) -> BTreeMap<String, Vec<i64>> {
    let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for copy in copies.iter().filter(|c| placed(c, ranges)) {
        by_key
            .entry(copy.partition_key.clone())
            .or_default()
            .push(copy.id);
    }
    by_key
}

/// Each key's ids are its rows' ids in model order, each once.
fn assert_model_order(by_key: &BTreeMap<String, Vec<i64>>, rows: i64, tenants: i64) {
    let mut total = 0;
    for (key, ids) in by_key {
        let tenant: i64 = key.trim_start_matches("tenant-").parse().unwrap();
        let want: Vec<i64> = (1..=rows).filter(|id| id % tenants == tenant).collect();
        assert_eq!(ids, &want, "{key}: its records, once each, in model order");
        total += ids.len() as i64;
    }
    assert_eq!(total, rows);
}

#[tokio::test(start_paused = true)]
async fn every_record_comes_back_once_on_its_shard_in_model_order_through_faults() {
    let memory = memory_sink(4);
    let faults = RandomFaults {
        record_throttle: 0.1,
        record_internal_failure: 0.05,
        call_error: 0.05,
        lost_answer: 0.0,
        max_delay: Duration::from_millis(20),
    };
    let sink = Arc::new(FaultySink::random(limited(&memory), 3, faults));
    // Small aggregates: many per shard, several per call, and keys spread over many.
    let mut engine = aggregating(tenant_records(), sink, 4096);
    let rows = tenant_rows(6_000, 37, 40);
    let report = run(&mut engine, &rows).await;
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    let packing = report
        .packing
        .clone()
        .expect("the report says how records packed");
    assert_eq!(packing.user_records, 6_000);
    assert!(
        packing.ratio() > 20.0,
        "{} records per Kinesis record",
        packing.ratio()
    );
    assert!(report.retries > 0, "the faults were met");
    let copies = read_back(&memory);
    let ranges = ShardMap::even(4).unwrap().shards().to_vec();
    assert!(
        copies.iter().all(|c| placed(c, &ranges)),
        "every user record on the shard its key maps to"
    );
    assert_model_order(&ids_by_key(&copies, &ranges), 6_000, 37);
}

#[tokio::test(start_paused = true)]
async fn the_reference_rows_fill_the_shards_bytes_not_their_records() {
    let memory = memory_sink(4);
    let counted = Arc::new(CountingSink::new(limited(&memory)));
    let schema = Schema::new(BENCH_COLUMNS, "id").unwrap();
    let records = RecordBuilder::new(
        Payload::compile(&model::spec("template"), schema.clone()).unwrap(),
        KeySpec::new(&schema, None, None).unwrap(),
    );
    let progress = Arc::new(Progress::new());
    let mut engine = Engine::builder()
        .records(records)
        .sink(counted.clone(), stream())
        .state(MemoryStore::new())
        .aggregate(Aggregation::default())
        .progress(progress.clone())
        .build()
        .unwrap();
    let count = 60_000;
    let start = Instant::now();
    let report = engine
        .run_source(model::generated(&schema, count, 0))
        .await
        .unwrap();
    let took = start.elapsed().as_secs_f64();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(report.records.acknowledged, count as u64);
    // What the limits allow after each shard's burst of one second: the rows a second's
    // bytes hold, then the rest at 1 MiB/s a shard.
    let bytes_per_row = report.bytes_sent as f64 / count as f64;
    let burst_rows = 4.0 * MIB / bytes_per_row;
    let per_shard = (count as f64 - burst_rows) / took / 4.0;
    let attempts = counted.attempts() as f64;
    let throttled = report.throttled_records as f64 / attempts;
    eprintln!(
        "{count} reference rows in {took:.2} s: {per_shard:.0} rows/s per shard after the burst, {bytes_per_row:.0} bytes a row, {} Kinesis records, {:.2}% throttled",
        report.packing.as_ref().unwrap().kinesis_records,
        throttled * 100.0
    );
    assert!(
        per_shard >= 3_500.0,
        "{per_shard:.0} rows/s per shard: 3.5 times the 1,000 records/s limit is 3,500"
    );
    assert!(throttled < 0.01, "{:.2}% throttled", throttled * 100.0);
    // The progress line's capacity is in rows: as many as the shards' bytes hold.
    let capacity = progress.snapshot().capacity_per_second as f64;
    let by_bytes = 4.0 * MIB / bytes_per_row;
    assert!(
        (capacity / by_bytes - 1.0).abs() < 0.05,
        "capacity {capacity} rows/s, the bytes hold {by_bytes:.0}"
    );
    // Every row is back, each on its key's shard.
    let copies = read_back(&memory);
    assert_eq!(copies.len(), count);
    let ranges = ShardMap::even(4).unwrap().shards().to_vec();
    assert!(copies.iter().all(|c| placed(c, &ranges)));
}

#[tokio::test(start_paused = true)]
async fn one_partition_key_fills_its_shard_in_model_order() {
    for count in [5_000, 50_000] {
        let memory = memory_sink(4);
        // A region's round trip on every call: with one record of the key per call, this
        // would be 50 records a second.
        let counted =
            Arc::new(CountingSink::new(limited(&memory)).with_delay(Duration::from_millis(20)));
        let mut engine = aggregating(tenant_records(), counted.clone(), 51_200);
        let rows = tenant_rows(count, 1, 200);
        let start = Instant::now();
        let report = run(&mut engine, &rows).await;
        let took = start.elapsed().as_secs_f64();
        assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
        // The rate against the shard's 1 MiB/s, plain, and after its burst of one second
        // (the stricter measure, for a run long enough that the burst is a small part).
        let plain = report.bytes_sent as f64 / took / MIB;
        let after_burst = (report.bytes_sent as f64 - MIB) / took / MIB;
        eprintln!(
            "{count} rows of one key in {took:.2} s: {:.1}% of the shard's bytes ({:.1}% after the burst), {} calls",
            plain * 100.0,
            after_burst * 100.0,
            report.calls
        );
        assert!(
            plain >= 0.90,
            "{count} rows: {:.1}% of the shard's 1 MiB/s",
            plain * 100.0
        );
        if report.bytes_sent as f64 > 10.0 * MIB {
            assert!(
                after_burst >= 0.90,
                "{count} rows: {:.1}% of the shard's 1 MiB/s after the burst",
                after_burst * 100.0
            );
        }
        let copies = read_back(&memory);
        let ids: Vec<i64> = copies.iter().map(|c| c.id).collect();
        assert_eq!(ids, (1..=count).collect::<Vec<_>>(), "in model order, once");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reshard_midway_sends_again_only_what_landed_on_the_wrong_shard() {
    let memory = memory_sink(4);
    let before = ShardMap::even(4).unwrap().shards().to_vec();
    let sink = Arc::new(SplitsMidway {
        memory: memory.clone(),
        limited: LimitSink::new(memory.clone(), Arc::new(TokioClock::default())),
        acknowledged: AtomicU64::new(0),
        after: 40,
        merge: false,
    });
    let mut engine = aggregating(tenant_records(), sink, 8192);
    // Many tenants with few rows each: aggregates mix keys of both halves of the split shard.
    let rows = tenant_rows(20_000, 1_999, 60);
    let report = run(&mut engine, &rows).await;
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    let after = memory.describe_stream(&stream()).await.unwrap().shards;
    assert_eq!(after.len(), 5, "shard 0 was split");
    let mut ranges = before;
    ranges.extend(after.shards().iter().cloned());
    let copies = read_back(&memory);
    let misplaced = copies.iter().filter(|c| !placed(c, &ranges)).count();
    eprintln!(
        "{misplaced} user records landed on the wrong shard and were sent again; {} copies in all",
        copies.len()
    );
    assert!(
        misplaced > 0,
        "aggregates in flight at the split landed on a child shard"
    );
    assert_eq!(
        copies.len(),
        20_000 + misplaced,
        "only the misplaced were sent again"
    );
    assert_model_order(&ids_by_key(&copies, &ranges), 20_000, 1_999);
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_says_how_records_would_pack() {
    let memory = memory_sink(2);
    let mut engine = Engine::builder()
        .records(tenant_records())
        .sink(memory.clone(), stream())
        .state(MemoryStore::new())
        .aggregate(Aggregation::default())
        .dry_run(true)
        .build()
        .unwrap();
    let report = run(&mut engine, &tenant_rows(10_000, 10, 200)).await;
    let packing = report.packing.clone().unwrap();
    assert_eq!(packing.user_records, 10_000);
    assert!(
        packing.ratio() > 100.0,
        "{:.1} records per Kinesis record",
        packing.ratio()
    );
    let estimate = report.estimate.clone().unwrap();
    // Some 30 aggregates per shard, well within a second's records; over a MiB of bytes on
    // the busiest shard: bytes set the time.
    assert!(estimate.least_seconds > 0.1, "{estimate:?}");
    let summary = report.summary();
    assert!(
        summary.contains("would be packed 10000 records into"),
        "{summary}"
    );
    assert!(memory.records(&stream()).unwrap().is_empty());
}

#[test]
fn an_aggregate_size_out_of_range_is_refused_by_name() {
    let memory = memory_sink(1);
    let error = Engine::builder()
        .records(tenant_records())
        .sink(memory, stream())
        .state(MemoryStore::new())
        .aggregate(Aggregation::with_max_bytes(100))
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "aggregate_max_bytes must be 1024..=10485760, not 100"
    );
}

#[tokio::test(start_paused = true)]
async fn unpacked_one_key_goes_a_record_per_round_trip_not_per_call_interval() {
    // The contrast: without aggregation a key has one record out at a time. Each call then
    // goes as soon as the last is acknowledged (waiting would not fill it), so one key moves a
    // record per round trip.
    let memory = memory_sink(4);
    let counted =
        Arc::new(CountingSink::new(limited(&memory)).with_delay(Duration::from_millis(20)));
    let mut engine = Engine::builder()
        .records(tenant_records())
        .sink(counted.clone(), stream())
        .state(MemoryStore::new())
        .build()
        .unwrap();
    let rows = tenant_rows(200, 1, 10);
    let start = Instant::now();
    let report = run(&mut engine, &rows).await;
    let took = start.elapsed();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.calls, 200);
    assert!(
        took < Duration::from_millis(200 * 25),
        "200 records of one key took {took:?}: more than a round trip each"
    );
    let ids: Vec<i64> = read_back(&memory).iter().map(|c| c.id).collect();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>());
}
