//! The engine when things fail: records that keep failing, a fatal call error, a stream that
//! stops the run, throttling, a model reader that dies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kinesync_engine::{Engine, Events, Initial, Limits, Outcome, last_sent_rows};
use kinesync_engine::{KeySpec, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::MemoryStore;
use kinesync_transport::{
    ErrorKind, Fault, FaultySink, InMemorySink, KinesisSink, Operation, PutRecord, RecordFailure,
    StreamConfig, StreamName, TransportError,
};

mod common;

use common::*;

/// Fails every record whose partition key is in its set; passes the rest to the stream.
#[derive(Debug)]
struct FailKeys {
    inner: Arc<InMemorySink>,
    keys: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Display for FailKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fail-keys")
    }
}

#[async_trait::async_trait]
impl KinesisSink for FailKeys {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[kinesync_transport::PutRecord],
    ) -> Result<Vec<kinesync_transport::RecordOutcome>, kinesync_transport::TransportError> {
        let keys = self.keys.lock().unwrap().clone();
        let mut out = Vec::new();
        for r in records {
            if keys.contains(r.partition_key.as_str()) {
                out.push(kinesync_transport::RecordOutcome::Failed {
                    failure: RecordFailure::InternalFailure,
                    message: "always".into(),
                });
            } else {
                out.extend(
                    self.inner
                        .put_records(stream, std::slice::from_ref(r))
                        .await?,
                );
            }
        }
        Ok(out)
    }
    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<kinesync_transport::StreamDescription, kinesync_transport::TransportError> {
        self.inner.describe_stream(stream).await
    }
    async fn list_streams(&self) -> Result<Vec<String>, kinesync_transport::TransportError> {
        self.inner.list_streams().await
    }
}

#[tokio::test(start_paused = true)]
async fn records_that_keep_failing_stay_pending_and_go_out_next_run() {
    let memory = memory_sink(2);
    let sink = Arc::new(FailKeys {
        inner: memory.clone(),
        keys: std::sync::Mutex::new(["2".to_owned()].into()),
    });
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(MemoryStore::new())
        .limits(Limits {
            max_attempts: 3,
            ..fast_limits()
        })
        .build()
        .unwrap();
    let rows = model(&[(1, "a"), (2, "b"), (3, "c")]);
    let first = run(&mut engine, &rows).await;
    assert_eq!(first.outcome, Outcome::Partial);
    assert_eq!(
        (
            first.records.acknowledged,
            first.records.pending,
            first.retries
        ),
        (2, 1, 2)
    );
    assert_eq!(
        acknowledged_keys(&engine),
        2,
        "only acknowledged rows are committed"
    );
    sink.keys.lock().unwrap().clear();
    let second = run(&mut engine, &rows).await;
    assert_eq!(second.outcome, Outcome::Complete);
    assert_eq!(
        (
            second.events.added,
            second.events.unchanged,
            second.records.acknowledged
        ),
        (1, 2, 1)
    );
    let per_id = events_of(&memory);
    assert!(
        per_id.values().all(|v| v.len() == 1),
        "nothing acknowledged was sent again: {per_id:?}"
    );
}

/// An engine whose stream takes one call, then denies access.
fn denied_after_one_call(limits: Limits) -> Engine {
    let faulty = Arc::new(FaultySink::scripted(
        memory_sink(1),
        [Fault::Pass, Fault::CallError(ErrorKind::AccessDenied)],
    ));
    Engine::builder()
        .records(records(None))
        .sink(faulty, stream())
        .state(MemoryStore::new())
        .limits(Limits {
            max_batch_records: 2,
            max_in_flight: Some(1),
            ..limits
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_fatal_call_error_ends_the_run_keeping_what_was_acknowledged() {
    let mut engine = denied_after_one_call(fast_limits());
    let rows = model(&[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]);
    let report = run(&mut engine, &rows).await;
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{report:?}")
    };
    assert!(
        error.contains("access_denied") && error.contains("kinesis:PutRecords"),
        "{error}"
    );
    assert_eq!(
        (report.records.acknowledged, report.records.pending),
        (2, 3)
    );
    assert_eq!(acknowledged_keys(&engine), 2);
    let next = run(&mut engine, &rows).await;
    assert_eq!(
        (next.outcome, next.events.added, next.events.removed),
        (Outcome::Complete, 3, 0),
        "no removals from a run that stopped early"
    );
}

#[tokio::test(start_paused = true)]
async fn a_first_run_stopped_part_way_is_followed_by_one_that_finds_removed_rows() {
    let mut engine = denied_after_one_call(fast_limits());
    let rows = model(&[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]);
    let first = run(&mut engine, &rows).await;
    assert!(matches!(first.outcome, Outcome::Failed { .. }), "{first:?}");
    assert_eq!(
        first.records.acknowledged, 2,
        "rows 1 and 2 reached the stream"
    );

    // Row 1 leaves the model before the next run, which is still a first run (no baseline).
    let next = run(&mut engine, &rows[1..]).await;
    assert_eq!(next.outcome, Outcome::Complete, "{next:?}");
    assert_eq!((next.events.added, next.events.removed), (3, 1));
    let state = engine.state();
    let mut state = state.lock().unwrap();
    assert_eq!(
        state.key_count().unwrap(),
        4,
        "the state holds the model, no more"
    );
    assert_eq!(
        last_sent_rows(&mut *state, &schema(), &["1".to_owned()]).unwrap(),
        [None]
    );
}

#[tokio::test]
async fn a_row_whose_width_is_not_the_schemas_is_an_error_naming_its_key() {
    let sink = memory_sink(1);
    let mut engine = engine(sink.clone(), Events::all(), Initial::Backfill);
    let rows = vec![
        row(1, "a"),
        Row::new(vec![Value::Int(2), Value::from("b")]),
        Row::new(vec![
            Value::Int(3),
            Value::from("c"),
            Value::from("g0"),
            Value::from("one too many"),
        ]),
    ];
    // Rows from memory cannot fail to be read: no `Ok` to wrap them in.
    let report = engine.run_rows(rows).await.unwrap();
    assert_eq!(report.outcome, Outcome::Partial, "{report:?}");
    assert_eq!(
        (report.records.acknowledged, report.unreadable_rows),
        (1, 2)
    );
    let messages: Vec<&str> = report
        .row_errors
        .first
        .iter()
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "row 2 has 2 values, and the model has 3 columns",
            "row 3 has 4 values, and the model has 3 columns"
        ]
    );
}

/// Rows read one at a time, so that chunks are still with the builder threads when the
/// stream stops the run: their records are counted as pending, none goes missing.
#[tokio::test(start_paused = true)]
async fn a_run_stopped_by_the_stream_counts_every_row_it_did_not_send() {
    for build_threads in [1, 3] {
        let mut engine = denied_after_one_call(Limits {
            chunk_rows: 1,
            max_backlog: 1,
            build_threads,
            ..fast_limits()
        });
        let rows: Vec<(i64, &str)> = (1..=40).map(|i| (i, "x")).collect();
        let report = run(&mut engine, &model(&rows)).await;
        assert!(
            matches!(report.outcome, Outcome::Failed { .. }),
            "{report:?}"
        );
        assert_eq!(report.records.acknowledged, 2, "{report:?}");
        assert_eq!(
            report.records.acknowledged + report.records.pending,
            report.events.added,
            "every row found is acknowledged or pending ({build_threads} builder threads): {report:?}"
        );
        assert_eq!(acknowledged_keys(&engine), 2);
    }
}

#[tokio::test]
async fn duplicate_primary_keys_are_a_run_error_naming_the_key() {
    let sink = memory_sink(1);
    let mut engine = engine(sink, Events::all(), Initial::Backfill);
    let report = run(&mut engine, &model(&[(1, "a"), (2, "b"), (1, "again")])).await;
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{report:?}")
    };
    assert!(
        error.contains(
            "primary key 1 (column \"id\") appears more than once in the model (rows 1 and 3)"
        ),
        "{error}"
    );
    // A model of three rows is not told about the keys held in memory for large ones.
    assert!(
        error.contains("The run stopped there") && !error.contains("262144"),
        "{error}"
    );
}

#[tokio::test]
async fn row_errors_are_reported_with_their_key_and_the_run_goes_on() {
    let schema = schema();
    let payload = Payload::compile(
        &PayloadSpec::template(r#"{"id": {{ row.id }}, "big": "{{ row.name }}"}"#),
        schema.clone(),
    )
    .unwrap();
    let records = RecordBuilder::new(payload, KeySpec::new(&schema, Some("group"), None).unwrap());
    let sink = Arc::new(InMemorySink::new());
    let mut config = StreamConfig::with_shards(1);
    config.max_record_bytes = 1024;
    sink.create_stream(&stream(), config);
    let mut engine = Engine::builder()
        .records(records)
        .sink(sink.clone(), stream())
        .state(MemoryStore::new())
        .build()
        .unwrap();
    let rows = vec![
        row(1, "ok"),
        Row::new(vec![Value::Int(2), Value::from("no key"), Value::from("")]),
        Row::new(vec![
            Value::Int(3),
            Value::from("x".repeat(2000)),
            Value::from("g"),
        ]),
        row(4, "fine"),
    ];
    let report = run(&mut engine, &rows).await;
    assert_eq!(report.outcome, Outcome::Partial);
    assert_eq!(report.records.acknowledged, 2);
    assert_eq!(report.row_errors.total, 2);
    assert_eq!(report.row_errors.by_kind.get("partition_key"), Some(&1));
    assert_eq!(
        report.row_errors.by_kind.get("record_too_large"),
        Some(&1),
        "a record that can never fit is a row error, not a stuck batch"
    );
    assert_eq!(report.row_errors.first[0].primary_key, "2");
    let again = run(&mut engine, &rows).await;
    assert_eq!(
        (again.events.added, again.row_errors.total),
        (2, 2),
        "rows in error stay pending and are tried again"
    );
}

#[tokio::test(start_paused = true)]
async fn records_sharing_a_partition_key_arrive_in_model_order_despite_throttling() {
    let memory = memory_sink(2);
    let rates = kinesync_transport::RandomFaults {
        record_throttle: 0.4,
        call_error: 0.1,
        ..Default::default()
    };
    let faulty = Arc::new(FaultySink::random(memory.clone(), 11, rates));
    let mut engine = Engine::builder()
        .records(records(Some("group")))
        .sink(faulty, stream())
        .state(MemoryStore::new())
        .limits(Limits {
            max_attempts: 50,
            ..fast_limits()
        })
        .build()
        .unwrap();
    let rows: Vec<Row> = (1..=60).map(|i| row(i, &format!("v{i}"))).collect();
    let report = run(&mut engine, &rows).await;
    assert_eq!(report.records.acknowledged, 60, "{report:?}");
    assert!(report.retries > 0 && report.throttled_records > 0);
    // Per group (the partition key), ids arrive in model order.
    let mut by_group: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in memory.records(&stream()).unwrap() {
        let m: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
        by_group
            .entry(r.partition_key.as_str().to_owned())
            .or_default()
            .push(m["id"].as_i64().unwrap());
    }
    for (group, ids) in by_group {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "group {group} out of order");
    }
}

/// A model source with a bug: it panics after `good` rows.
struct PanickingSource {
    schema: Arc<Schema>,
    rows: std::vec::IntoIter<Row>,
    good: usize,
}

impl Iterator for PanickingSource {
    type Item = Result<kinesync_source::SourceRow, kinesync_source::SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        assert!(self.good > 0, "a bug in the source");
        self.good -= 1;
        let row = self.rows.next()?;
        Some(Ok(kinesync_source::SourceRow::new(1, row)))
    }
}

impl kinesync_source::RowSource for PanickingSource {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> kinesync_source::Locator {
        kinesync_source::Locator::lines("bug.ndjson")
    }
}

#[tokio::test]
async fn a_reading_thread_that_dies_is_not_the_end_of_the_model() {
    let sink = memory_sink(1);
    let mut engine = engine(sink, Events::all(), Initial::Backfill);
    let first = run(&mut engine, &model(&[(1, "a"), (2, "b"), (3, "c")])).await;
    assert_eq!(first.outcome, Outcome::Complete);
    let report = engine
        .run_source(Box::new(PanickingSource {
            schema: schema(),
            rows: model(&[(1, "a"), (2, "b"), (3, "c")]).into_iter(),
            good: 1,
        }))
        .await
        .unwrap();
    assert_eq!(
        (report.events.removed, report.unreadable_rows),
        (0, 1),
        "rows never read are not removed: {report:?}"
    );
    assert_eq!(report.outcome, Outcome::Partial);
    assert!(
        report.row_errors.first[0]
            .message
            .contains("stopped before the end"),
        "{report:?}"
    );
}

/// What refuses a `PutRecords` call whole: its error, or `None` to let it through.
type PutHook = Box<dyn Fn(&[PutRecord]) -> Option<TransportError> + Send + Sync>;
/// What refuses a `DescribeStreamSummary`: its error, or `None`.
type DescribeHook = Box<dyn Fn() -> Option<TransportError> + Send + Sync>;

/// The in-memory stream behind hooks that can refuse a call whole, before it reaches the
/// stream: an endpoint's own rules, as the tests below need them.
struct Hooked {
    inner: Arc<InMemorySink>,
    put: PutHook,
    describe: DescribeHook,
}

impl Hooked {
    fn new(inner: Arc<InMemorySink>) -> Self {
        Self {
            inner,
            put: Box::new(|_| None),
            describe: Box::new(|| None),
        }
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl std::fmt::Display for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hooked")
    }
}

#[async_trait::async_trait]
impl KinesisSink for Hooked {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<kinesync_transport::RecordOutcome>, TransportError> {
        match (self.put)(records) {
            Some(error) => Err(error),
            None => self.inner.put_records(stream, records).await,
        }
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<kinesync_transport::StreamDescription, TransportError> {
        match (self.describe)() {
            Some(error) => Err(error),
            None => self.inner.describe_stream(stream).await,
        }
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        self.inner.list_streams().await
    }
}

#[tokio::test(start_paused = true)]
async fn calls_an_endpoint_refuses_as_too_large_are_split_and_the_run_goes_on() {
    // Requests capped below the API's 10 MiB (kinesalite takes 7): a larger call is refused
    // whole with HTTP 413.
    let memory = memory_sink(1);
    let refused = Arc::new(AtomicU64::new(0));
    let counted = refused.clone();
    let sink = Arc::new(Hooked {
        put: Box::new(move |records| {
            let bytes: usize = records.iter().map(PutRecord::size).sum();
            (bytes > 150_000).then(|| {
                counted.fetch_add(1, Ordering::SeqCst);
                TransportError::new(
                    ErrorKind::RequestTooLarge,
                    Operation::PutRecords,
                    "HTTP 413 Payload Too Large",
                )
            })
        }),
        ..Hooked::new(memory.clone())
    });
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(MemoryStore::new())
        .limits(Limits {
            // An unlimited stream: calls as large as the API allows.
            shard_records_per_second: f64::INFINITY,
            ..fast_limits()
        })
        .build()
        .unwrap();
    let name = "n".repeat(10_000);
    let rows: Vec<Row> = (1..=100).map(|id| row(id, &name)).collect();
    let report = run(&mut engine, &rows).await;
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(report.records.acknowledged, 100);
    assert_eq!(memory.records(&stream()).unwrap().len(), 100);
    let refused = refused.load(Ordering::SeqCst);
    // The call size halves until it fits (1 MB, 500 KB, 250 KB, then 125 KB goes): a few
    // refusals, one per call in flight at each size, never one per record.
    assert!(
        (1..=8).contains(&refused),
        "the call size halves until it fits: {refused} refusals"
    );
    assert_eq!(report.notes.len(), 1, "said once: {:?}", report.notes);
    assert!(
        report.summary().contains("refused a call of") && report.summary().contains("HTTP 413"),
        "{}",
        report.summary()
    );
}

/// Refuses, whole, any call holding a record whose message contains `"bad"`, as the service
/// answers a `ValidationException` for one record of a call.
fn refuses_bad(memory: Arc<InMemorySink>) -> Arc<Hooked> {
    Arc::new(Hooked {
        put: Box::new(|records| {
            let index = records
                .iter()
                .position(|r| String::from_utf8_lossy(&r.data).contains("\"bad\""))?;
            Some(
                TransportError::new(
                    ErrorKind::InvalidRequest,
                    Operation::PutRecords,
                    format!(
                        "1 validation error detected: Value at 'records.{}.member.data' failed to satisfy constraint",
                        index + 1
                    ),
                )
                .with_code("ValidationException"),
            )
        }),
        ..Hooked::new(memory)
    })
}

#[tokio::test(start_paused = true)]
async fn a_record_the_stream_refuses_is_its_rows_error_and_the_others_are_sent() {
    let memory = memory_sink(2);
    let mut engine = engine(
        refuses_bad(memory.clone()),
        Events::all(),
        Initial::Backfill,
    );
    let mut rows: Vec<Row> = (1..=40).map(|id| row(id, "fine")).collect();
    rows[16] = row(17, "bad");
    let report = run(&mut engine, &rows).await;
    assert_eq!(report.outcome, Outcome::Partial, "{}", report.summary());
    assert_eq!(report.records.acknowledged, 39);
    assert_eq!(report.row_errors.total, 1);
    let error = &report.row_errors.first[0];
    assert_eq!(
        (error.primary_key.as_str(), error.kind.as_str()),
        ("17", "refused_by_stream")
    );
    assert!(
        error.message.contains("records.1.member.data"),
        "{}",
        error.message
    );
    assert_eq!(memory.records(&stream()).unwrap().len(), 39);
    assert!(
        report.summary().contains("to find the one it refuses"),
        "{}",
        report.summary()
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_refuses_every_call_as_invalid_stops_the_run() {
    let memory = memory_sink(1);
    let mut engine = engine(
        refuses_bad(memory.clone()),
        Events::all(),
        Initial::Backfill,
    );
    let rows: Vec<Row> = (1..=100).map(|id| row(id, "bad")).collect();
    let report = run(&mut engine, &rows).await;
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{}", report.summary())
    };
    assert!(error.contains("validation error"), "{error}");
    assert!(
        report.row_errors.total <= 10,
        "not one call per record for ever: {}",
        report.row_errors.total
    );
    assert_eq!(report.records.acknowledged, 0);
}

/// A stream being created: `DescribeStreamSummary` says so `times` more times.
fn being_created(memory: Arc<InMemorySink>, times: u32) -> Arc<Hooked> {
    let left = AtomicU32::new(times);
    Arc::new(Hooked {
        describe: Box::new(move || {
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .ok()?;
            Some(TransportError::new(
                ErrorKind::StreamNotReady,
                Operation::DescribeStreamSummary,
                "the stream's status is CREATING",
            ))
        }),
        ..Hooked::new(memory)
    })
}

#[tokio::test(start_paused = true)]
async fn a_run_waits_for_a_stream_being_created_within_its_retry_time() {
    let memory = memory_sink(1);
    let sink = being_created(memory.clone(), 5);
    let mut waiting = engine(sink, Events::all(), Initial::Backfill);
    let started = tokio::time::Instant::now();
    let report = run(&mut waiting, &[row(1, "a")]).await;
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(10),
        "five waits of 2 s"
    );

    // One that stays CREATING past retry_seconds ends the run, saying so.
    let sink = being_created(memory_sink(1), u32::MAX);
    let mut stuck = engine(sink, Events::all(), Initial::Backfill);
    let error = stuck
        .run(vec![Ok::<_, String>(row(1, "a"))])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("CREATING") && error.contains("takes no records until it is ACTIVE"),
        "{error}"
    );
}
