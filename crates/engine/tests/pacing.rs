//! Pacing, on tokio's paused clock: the engine syncs into the in-memory stream behind the
//! service's per-shard limits (the test kit's `LimitSink`: 1,000 records and 1 MiB per second
//! per shard, a token bucket of one second, throttling each record over it as the service
//! does). A backfill fills the stream's capacity and barely meets a throttle; a hot shard is
//! filled alone; a second producer's share is found and left to it; a dead endpoint is backed
//! off as a whole and ends the run with a clear error.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kinesync_engine::{Engine, Limits, Outcome, RunReport};
use kinesync_keys::{HashKey, PartitionKey, ShardMap};
use kinesync_payload::Row;
use kinesync_state::MemoryStore;
use kinesync_transport::{
    ErrorKind, Fault, FaultySink, InMemorySink, KinesisSink, LimitSink, PutRecord, ShardLimits,
    TokioClock,
};
use tokio::time::Instant;

mod common;

use common::*;
use kinesync_testkit::counting::CountingSink;

/// A stream of `shards` shards behind limits of `records_per_second` per shard.
fn limited(
    shards: u32,
    records_per_second: f64,
) -> Arc<CountingSink<LimitSink<Arc<InMemorySink>>>> {
    Arc::new(CountingSink::new(LimitSink::with_limits(
        memory_sink(shards),
        Arc::new(TokioClock::default()),
        ShardLimits {
            records_per_second,
            ..ShardLimits::default()
        },
    )))
}

fn engine(sink: Arc<dyn KinesisSink>) -> Engine {
    Engine::builder()
        .records(records(None))
        .sink(sink, stream())
        .state(MemoryStore::new())
        .limits(Limits {
            seed: Some(11),
            ..Limits::default()
        })
        .build()
        .unwrap()
}

/// What a paced run reached: the share of the least time the limits allow (after each
/// shard's one-second burst), and the share of record attempts throttled.
struct Reached {
    capacity: f64,
    throttled: f64,
    report: RunReport,
}

async fn sync(
    engine: &mut Engine,
    sink: &CountingSink<impl KinesisSink>,
    rows: &[Row],
    shards_used: u32,
    records_per_second: f64,
) -> Reached {
    let start = Instant::now();
    let report = run(engine, rows).await;
    let elapsed = start.elapsed().as_secs_f64();
    let capacity_per_second = f64::from(shards_used) * records_per_second;
    let least = (rows.len() as f64 - capacity_per_second).max(0.0) / capacity_per_second;
    let attempts = sink.attempts() as f64;
    eprintln!(
        "{} rows in {elapsed:.2} s (least {least:.2} s), {} calls, {} attempts, {} throttled",
        rows.len(),
        sink.calls(),
        attempts,
        report.throttled_records
    );
    Reached {
        capacity: least / elapsed,
        throttled: report.throttled_records as f64 / attempts,
        report,
    }
}

fn rows(ids: impl IntoIterator<Item = i64>) -> Vec<Row> {
    ids.into_iter().map(|id| row(id, "x")).collect()
}

#[tokio::test(start_paused = true)]
async fn a_backfill_fills_every_shard_and_is_barely_throttled() {
    for (count, shards) in [(40_000, 4), (200_000, 16)] {
        let sink = limited(shards, 1000.0);
        let mut engine = engine(sink.clone());
        let reached = sync(&mut engine, &sink, &rows(1..=count), shards, 1000.0).await;
        assert_eq!(
            reached.report.outcome,
            Outcome::Complete,
            "{:?}",
            reached.report
        );
        assert_eq!(reached.report.records.acknowledged, count as u64);
        assert!(
            reached.capacity >= 0.95,
            "{count} rows into {shards} shards: {:.1}% of capacity",
            reached.capacity * 100.0
        );
        assert!(
            reached.throttled < 0.01,
            "{count} rows into {shards} shards: {:.2}% of attempts throttled",
            reached.throttled * 100.0
        );
    }
}

/// Ids whose partition key hashes to the first of four shards.
fn ids_on_first_shard(count: usize) -> Vec<i64> {
    let map = ShardMap::even(4).unwrap();
    (1..)
        .filter(|id: &i64| {
            let key = PartitionKey::new(id.to_string()).unwrap();
            map.index_for(HashKey::for_record(&key, None)) == 0
        })
        .take(count)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_hot_shard_is_filled_alone() {
    let sink = limited(4, 1000.0);
    let mut engine = engine(sink.clone());
    let reached = sync(
        &mut engine,
        &sink,
        &rows(ids_on_first_shard(10_000)),
        1,
        1000.0,
    )
    .await;
    assert_eq!(reached.report.outcome, Outcome::Complete);
    assert!(reached.capacity >= 0.95, "{:.1}%", reached.capacity * 100.0);
    assert!(
        reached.throttled < 0.01,
        "{:.2}%",
        reached.throttled * 100.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_producer_s_share_is_found_and_left_to_it() {
    // Another producer writes 500 records/s to every shard of the same stream for the whole
    // run: half of what each shard takes is left to this one, which starts at the service's
    // 1,000.
    let sink = limited(4, 1000.0);
    let other = sink.clone();
    let map = ShardMap::even(4).unwrap();
    let keys: Vec<PutRecord> = (0..4)
        .map(|shard| {
            let key = (0..)
                .map(|n| PartitionKey::new(format!("other-{n}")).unwrap())
                .find(|key| map.index_for(HashKey::for_record(key, None)) == shard)
                .unwrap();
            PutRecord::new(key, b"{}".to_vec())
        })
        .collect();
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            // Five records per shard every 10 ms, straight to the limited stream.
            let batch: Vec<PutRecord> = keys
                .iter()
                .flat_map(|r| std::iter::repeat_n(r.clone(), 5))
                .collect();
            other.inner.put_records(&stream(), &batch).await.unwrap();
        }
    });
    let mut engine = engine(sink.clone());
    let reached = sync(&mut engine, &sink, &rows(1..=40_000), 4, 500.0).await;
    producer.abort();
    assert_eq!(reached.report.outcome, Outcome::Complete);
    assert!(reached.capacity >= 0.90, "{:.1}%", reached.capacity * 100.0);
    assert!(
        reached.throttled < 0.05,
        "{:.2}%",
        reached.throttled * 100.0
    );
}

/// Every call fails whole, as a dead endpoint's do.
#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_is_backed_off_as_a_whole_and_ends_the_run() {
    let faults = std::iter::repeat_n(Fault::CallError(ErrorKind::Transient), 10_000);
    let sink = Arc::new(CountingSink::new(FaultySink::scripted(
        memory_sink(4),
        faults,
    )));
    let mut engine = engine(sink.clone());
    let start = Instant::now();
    let report = run(&mut engine, &rows(1..=2_000)).await;
    let elapsed = start.elapsed();
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{report:?}")
    };
    assert!(
        error.contains("10 calls in a row failed whole") && error.contains("max_attempts"),
        "{error}"
    );
    assert_eq!(report.records.pending, 2_000);
    // One timer for the sender, growing to its cap of 5 s: the calls the first moment sent
    // (the 2,000 records, in full calls), then one at a time, each as full as the first.
    let calls = sink.calls();
    assert!(calls <= 13, "{calls} calls");
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    assert!(
        sink.smallest_call() >= 250,
        "calls were split into small ones: {}",
        sink.smallest_call()
    );
}

/// A stream that throttles every record for ever: nothing acknowledged for `retry_time` ends
/// the run.
#[tokio::test(start_paused = true)]
async fn a_stream_that_takes_nothing_ends_the_run_after_the_retry_time() {
    let faults = std::iter::repeat_n(
        Fault::FailRecords(
            (0..500)
                .map(|i| (i, kinesync_transport::RecordFailure::Throttled))
                .collect(),
        ),
        100_000,
    );
    let sink = Arc::new(CountingSink::new(FaultySink::scripted(
        memory_sink(1),
        faults,
    )));
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(MemoryStore::new())
        .limits(Limits {
            retry_time: Duration::from_secs(30),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let start = Instant::now();
    let report = run(&mut engine, &rows(1..=100)).await;
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{report:?}")
    };
    assert!(error.contains("acknowledged no record for 30 s"), "{error}");
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert_eq!(report.records.pending, 100);
}

/// A run that keeps getting records acknowledged keeps going, however long: the retry budget
/// is time without progress, not time since the start.
#[tokio::test(start_paused = true)]
async fn a_backfill_longer_than_the_retry_budget_finishes_in_one_run() {
    let sink = limited(1, 1000.0);
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(MemoryStore::new())
        .limits(Limits {
            retry_time: Duration::from_secs(5),
            seed: Some(3),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let start = Instant::now();
    let reached = sync(&mut engine, &sink, &rows(1..=20_000), 1, 1000.0).await;
    assert!(
        start.elapsed() >= Duration::from_secs(19),
        "four times the retry budget"
    );
    assert_eq!(reached.report.outcome, Outcome::Complete);
    assert_eq!(reached.report.records.acknowledged, 20_000);
}

#[tokio::test(start_paused = true)]
async fn a_shard_split_mid_run_is_followed_and_its_capacity_used() {
    let memory = memory_sink(4);
    let sink = Arc::new(CountingSink::new(SplitsMidway {
        memory: memory.clone(),
        limited: LimitSink::new(memory.clone(), Arc::new(TokioClock::default())),
        acknowledged: AtomicU64::new(0),
        after: 10_000,
        merge: false,
    }));
    let mut engine = engine(sink.clone());
    let start = Instant::now();
    let report = run(&mut engine, &rows(1..=40_000)).await;
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(report.outcome, Outcome::Complete, "{report:?}");
    assert_eq!(report.records.acknowledged, 40_000);
    // Every record once, none on a shard after it closed.
    let stored = memory.records(&stream()).unwrap();
    assert_eq!(stored.len(), 40_000);
    let counts = memory.shard_counts(&stream()).unwrap();
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(
        counts[4].1 > 1_000 && counts[5].1 > 1_000,
        "the new shards were used: {counts:?}"
    );
    // The report names the open shards.
    let ids: Vec<&str> = report.shards.iter().map(|s| s.shard.as_str()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    // The other three shards' quarters of the rows set the least time, 9 s: the split costs
    // none of it (no stall while the map is read again, no throttling of the new shards).
    let attempts = sink.attempts() as f64;
    eprintln!(
        "split: {elapsed:.2} s, {} throttled of {attempts}",
        report.throttled_records
    );
    assert!(elapsed < 9.3, "{elapsed:.2} s");
    assert!((report.throttled_records as f64) < 0.01 * attempts);
}
