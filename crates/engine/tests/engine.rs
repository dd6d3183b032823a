//! The sync engine against `InMemorySink` (and its decorators): what each run sends, what it
//! commits, and what it leaves for the next run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kinesync_engine::{Engine, Events, Initial, Limits, Outcome, RunReport, last_sent_rows};
use kinesync_engine::{KeySpec, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, RowEncoder, Schema, Value};
use kinesync_state::{Change, MemoryStore, SqliteStore, StateStore};
use kinesync_transport::{
    ErrorKind, Fault, FaultySink, InMemorySink, KinesisSink, RecordFailure, StoredRecord,
    StreamConfig, StreamName,
};

const TEMPLATE: &str = r#"{"id": {{ row.id }}, "name": "{{ row.name }}", "event": "{{ event }}", "was": {% if previous %}"{{ previous.name }}"{% else %}null{% endif %}}"#;

fn schema() -> Arc<Schema> {
    Schema::new(["id", "name", "group"], "id").unwrap()
}

fn records(partition_key: Option<&str>) -> RecordBuilder {
    let schema = schema();
    let payload = Payload::compile(&PayloadSpec::template(TEMPLATE), schema.clone()).unwrap();
    RecordBuilder::new(payload, KeySpec::new(&schema, partition_key, None).unwrap())
}

fn row(id: i64, name: &str) -> Row {
    Row::new(vec![
        Value::Int(id),
        Value::from(name),
        Value::from(format!("g{}", id % 3)),
    ])
}

fn model(rows: &[(i64, &str)]) -> Vec<Row> {
    rows.iter().map(|(id, name)| row(*id, name)).collect()
}

fn stream() -> StreamName {
    StreamName::new("engine").unwrap()
}

fn memory_sink(shards: u32) -> Arc<InMemorySink> {
    let sink = Arc::new(InMemorySink::new());
    sink.create_stream(&stream(), StreamConfig::with_shards(shards));
    sink
}

fn fast_limits() -> Limits {
    Limits {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
        seed: Some(7),
        ..Limits::default()
    }
}

fn engine(sink: Arc<dyn KinesisSink>, events: Events, initial: Initial) -> Engine {
    Engine::builder()
        .records(records(None))
        .sink(sink, stream())
        .state(MemoryStore::new())
        .events(events)
        .initial(initial)
        .limits(fast_limits())
        .build()
        .unwrap()
}

async fn run(engine: &mut Engine, rows: &[Row]) -> RunReport {
    engine
        .run(rows.iter().cloned().map(Ok::<_, String>))
        .await
        .unwrap()
}

fn messages(sink: &InMemorySink) -> Vec<serde_json::Value> {
    let mut stored: Vec<StoredRecord> = sink.records(&stream()).unwrap();
    stored.sort_by(|a, b| {
        a.sequence_number
            .cmp(&b.sequence_number)
            .then(a.shard_id.cmp(&b.shard_id))
    });
    stored
        .iter()
        .map(|r| serde_json::from_slice(&r.data).unwrap())
        .collect()
}

fn events_of(sink: &InMemorySink) -> BTreeMap<i64, Vec<(String, String)>> {
    let mut by_id: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    for m in messages(sink) {
        by_id.entry(m["id"].as_i64().unwrap()).or_default().push((
            m["event"].as_str().unwrap().to_owned(),
            m["name"].as_str().unwrap().to_owned(),
        ));
    }
    by_id
}

/// Sends of one run, after the `skip` messages before it: (event, id, name, was).
fn sent_after(sink: &InMemorySink, skip: usize) -> Vec<(String, i64, String, Option<String>)> {
    messages(sink)
        .into_iter()
        .skip(skip)
        .map(|m| {
            (
                m["event"].as_str().unwrap().to_owned(),
                m["id"].as_i64().unwrap(),
                m["name"].as_str().unwrap().to_owned(),
                m["was"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn rows_stored_as_json_objects_by_an_older_kinesync_are_still_matched_and_read() {
    // A store as state schema version 1 left it: each row as a JSON object, fingerprinted
    // by the XXH3-128 of that object.
    let first = model(&[(1, "Ada"), (2, "Grace"), (3, "Alan")]);
    let encoder = RowEncoder::new(&schema());
    let mut store = MemoryStore::new();
    let as_objects = first
        .iter()
        .map(|row| {
            let mut object = Vec::new();
            encoder.encode(row, &mut object);
            Change::Upsert {
                key: row.get(0).to_json_string(),
                fingerprint: xxhash_rust::xxh3::xxh3_128(&object),
                row: object,
            }
        })
        .collect();
    store.commit(as_objects).unwrap();
    store.set_baseline().unwrap();
    assert_eq!(
        store.rows(&["1".to_owned()]).unwrap(),
        vec![Some(br#"{"id":1,"name":"Ada","group":"g1"}"#.to_vec())]
    );
    let sink = memory_sink(1);
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(store)
        .limits(fast_limits())
        .build()
        .unwrap();

    let report = run(&mut engine, &model(&[(1, "Ada"), (2, "Grace Hopper")])).await;
    assert_eq!(
        (
            report.events.unchanged,
            report.events.changed,
            report.events.removed
        ),
        (1, 1, 1),
        "an unchanged row stored the old way is unchanged: {report:?}"
    );
    assert_eq!(
        sent_after(&sink, 0),
        vec![
            (
                "changed".into(),
                2,
                "Grace Hopper".into(),
                Some("Grace".into())
            ),
            ("removed".into(), 3, "Alan".into(), None),
        ],
        "previous and removed rows read from JSON objects"
    );
    let keys: Vec<String> = (1..=3).map(|id: i64| id.to_string()).collect();
    let now = last_sent_rows(&mut *engine.state().lock().unwrap(), &schema(), &keys).unwrap();
    assert_eq!(
        now,
        vec![Some(row(1, "Ada")), Some(row(2, "Grace Hopper")), None]
    );
}

#[tokio::test]
async fn rows_stored_under_other_columns_are_read_by_column_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let sink = memory_sink(1);
    let mut before = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(SqliteStore::open(&path).unwrap())
        .limits(fast_limits())
        .build()
        .unwrap();
    run(
        &mut before,
        &model(&[(1, "Ada"), (2, "Grace"), (3, "Alan")]),
    )
    .await;
    drop(before);

    // The model loses `group`, gains `nick`, and its columns move.
    let renamed = Schema::new(["nick", "id", "name"], "id").unwrap();
    let payload = Payload::compile(
        &PayloadSpec::template(
            r#"{"id": {{ row.id }}, "name": "{{ row.name }}", "event": "{{ event }}", "was": {% if previous %}"{{ previous.name }}/{{ previous.nick }}"{% else %}null{% endif %}}"#,
        ),
        renamed.clone(),
    )
    .unwrap();
    let mut after = Engine::builder()
        .records(RecordBuilder::new(
            payload,
            KeySpec::new(&renamed, None, None).unwrap(),
        ))
        .sink(sink.clone(), stream())
        .state(SqliteStore::open(&path).unwrap())
        .limits(fast_limits())
        .build()
        .unwrap();
    let row = |id: i64, nick: &str, name: &str| {
        Row::new(vec![Value::from(nick), Value::Int(id), Value::from(name)])
    };
    let report = after
        .run([
            Ok::<_, String>(row(1, "ada", "Ada")),
            Ok(row(2, "", "Grace")),
        ])
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(
        sent_after(&sink, 3),
        vec![
            ("changed".into(), 1, "Ada".into(), Some("Ada/".into())),
            ("changed".into(), 2, "Grace".into(), Some("Grace/".into())),
            ("removed".into(), 3, "Alan".into(), None),
        ],
        "a column the stored row lacks is null; one the model lost is left out"
    );
    let keys = vec!["1".to_owned(), "3".to_owned()];
    assert_eq!(
        last_sent_rows(&mut *after.state().lock().unwrap(), &renamed, &keys).unwrap(),
        vec![Some(row(1, "ada", "Ada")), None]
    );
    assert_eq!(
        after
            .state()
            .lock()
            .unwrap()
            .meta("row_columns")
            .unwrap()
            .as_deref(),
        Some(r#"[["id","name","group"],["nick","id","name"]]"#),
        "each column list is kept once"
    );
}

#[tokio::test]
async fn a_first_run_backfills_and_a_second_sends_exactly_the_changes() {
    let sink = memory_sink(4);
    let mut engine = engine(sink.clone(), Events::all(), Initial::Backfill);
    let first = run(
        &mut engine,
        &model(&[(1, "Ada"), (2, "Grace"), (3, "Alan"), (4, "Edsger")]),
    )
    .await;
    assert_eq!(first.outcome, Outcome::Complete);
    assert_eq!(
        (
            first.events.added,
            first.records.to_send,
            first.records.acknowledged,
            first.records.pending
        ),
        (4, 4, 4, 0)
    );
    assert_eq!(sink.records(&stream()).unwrap().len(), 4);
    assert_eq!(engine.state().lock().unwrap().key_count().unwrap(), 4);

    // 2 changes its name, 3 is deleted, 5 is new, 1 and 4 are as they were.
    let second = run(
        &mut engine,
        &model(&[
            (1, "Ada"),
            (2, "Grace Hopper"),
            (4, "Edsger"),
            (5, "Barbara"),
        ]),
    )
    .await;
    assert_eq!(second.outcome, Outcome::Complete);
    assert_eq!(
        (
            second.events.added,
            second.events.changed,
            second.events.removed,
            second.events.unchanged
        ),
        (1, 1, 1, 2)
    );
    assert_eq!(second.records.acknowledged, 3);
    let sent: Vec<serde_json::Value> = messages(&sink)
        .into_iter()
        .filter(|m| m["event"] != "added" || m["id"] == 5)
        .collect();
    let changed = sent.iter().find(|m| m["event"] == "changed").unwrap();
    assert_eq!(
        (
            changed["id"].as_i64(),
            changed["name"].as_str(),
            changed["was"].as_str()
        ),
        (Some(2), Some("Grace Hopper"), Some("Grace")),
        "changed rows carry previous"
    );
    let removed = sent.iter().find(|m| m["event"] == "removed").unwrap();
    assert_eq!(
        (removed["id"].as_i64(), removed["name"].as_str()),
        (Some(3), Some("Alan")),
        "removed rows are their last sent version"
    );
    assert_eq!(
        engine.state().lock().unwrap().key_count().unwrap(),
        4,
        "the state is the model"
    );

    let third = run(
        &mut engine,
        &model(&[
            (1, "Ada"),
            (2, "Grace Hopper"),
            (4, "Edsger"),
            (5, "Barbara"),
        ]),
    )
    .await;
    assert_eq!(
        (third.records.to_send, third.events.unchanged, third.calls),
        (0, 4, 0),
        "nothing changed, nothing sent"
    );
}

#[tokio::test]
async fn each_trigger_sends_only_its_events() {
    for names in [
        &["added"][..],
        &["changed"],
        &["removed"],
        &["added", "changed"],
        &["added", "removed"],
        &["changed", "removed"],
    ] {
        let events = Events::from_names(names).unwrap();
        let sink = memory_sink(2);
        let mut engine = engine(sink.clone(), events, Initial::Backfill);
        run(&mut engine, &model(&[(1, "a"), (2, "b"), (3, "c")])).await;
        let report = run(&mut engine, &model(&[(1, "a2"), (2, "b"), (4, "d")])).await;
        let sent: Vec<String> = messages(&sink)
            .iter()
            .skip(usize::from(events.added) * 3)
            .map(|m| m["event"].as_str().unwrap().to_owned())
            .collect();
        let mut expected = Vec::new();
        if events.changed {
            expected.push("changed");
        }
        if events.added {
            expected.push("added");
        }
        if events.removed {
            expected.push("removed");
        }
        let mut got: Vec<&str> = sent.iter().map(String::as_str).collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "{names:?}");
        assert_eq!(
            report.events.not_triggered,
            3 - expected.len() as u64,
            "{names:?}"
        );
    }
}

#[tokio::test]
async fn skip_records_the_baseline_and_only_later_changes_flow() {
    let sink = memory_sink(2);
    let mut engine = engine(sink.clone(), Events::all(), Initial::Skip);
    let first = run(&mut engine, &model(&[(1, "a"), (2, "b")])).await;
    assert_eq!(first.outcome, Outcome::Baseline);
    assert_eq!(first.calls, 0);
    assert!(sink.records(&stream()).unwrap().is_empty());
    let second = run(&mut engine, &model(&[(1, "a"), (2, "b2"), (3, "c")])).await;
    assert_eq!(
        (
            second.events.changed,
            second.events.added,
            second.events.unchanged
        ),
        (1, 1, 1)
    );
    assert_eq!(events_of(&sink).len(), 2);
}

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
        engine.state().lock().unwrap().key_count().unwrap(),
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
    assert_eq!(engine.state().lock().unwrap().key_count().unwrap(), 2);
    let next = run(&mut engine, &rows).await;
    assert_eq!(
        (next.outcome, next.events.added, next.events.removed),
        (Outcome::Complete, 3, 0),
        "no removals from a run that stopped early"
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
        assert_eq!(engine.state().lock().unwrap().key_count().unwrap(), 2);
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

#[tokio::test]
async fn the_sqlite_store_carries_state_between_engines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let sink = memory_sink(2);
    let build = |sink: Arc<InMemorySink>| {
        Engine::builder()
            .records(records(None))
            .sink(sink, stream())
            .state(SqliteStore::open(&path).unwrap())
            .build()
            .unwrap()
    };
    let mut first = build(sink.clone());
    run(&mut first, &model(&[(1, "a"), (2, "b")])).await;
    drop(first);
    let mut second = build(sink.clone());
    let report = run(&mut second, &model(&[(1, "a"), (2, "b2")])).await;
    assert_eq!((report.events.unchanged, report.events.changed), (1, 1));
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
        Some(Ok(kinesync_source::SourceRow { line: 1, row }))
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

#[tokio::test]
async fn a_duplicate_past_the_keys_held_in_memory_is_found_at_the_end() {
    let sink = memory_sink(1);
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink, stream())
        .state(MemoryStore::new())
        .limits(Limits {
            keys_in_memory: 2,
            chunk_rows: 2,
            ..fast_limits()
        })
        .build()
        .unwrap();
    run(&mut engine, &model(&[(1, "a"), (2, "b"), (3, "c")])).await;
    // Key 1 again, far enough in for the keys to have been spilled to disk.
    let report = run(
        &mut engine,
        &model(&[
            (1, "a"),
            (4, "d"),
            (5, "e"),
            (6, "f"),
            (7, "g"),
            (1, "again"),
        ]),
    )
    .await;
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{report:?}")
    };
    assert!(
        error.contains(
            "primary key 1 (column \"id\") appears more than once in the model (rows 1 and 6)"
        ),
        "{error}"
    );
    assert_eq!(
        report.events.removed, 0,
        "keys 2 and 3 are not removed on a model that cannot be trusted"
    );
}

#[tokio::test]
async fn progress_counters_end_at_the_reports_counts() {
    let progress = Arc::new(kinesync_engine::Progress::new());
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(memory_sink(2), stream())
        .state(MemoryStore::new())
        .limits(fast_limits())
        .progress(progress.clone())
        .build()
        .unwrap();
    for rows in [
        model(&[(1, "a"), (2, "b"), (3, "c")]),
        // One changed, two removed: removals count as records too.
        model(&[(1, "a2")]),
    ] {
        let report = run(&mut engine, &rows).await;
        let now = progress.snapshot();
        assert_eq!(
            (now.rows_read, now.to_send, now.acknowledged, now.calls),
            (
                report.rows_read,
                report.records.to_send,
                report.records.acknowledged,
                report.calls
            ),
            "{report:?}"
        );
    }
}
