//! Properties of the sync engine over random models, random edits between runs, and random
//! faults (per-record throttles and internal failures, call errors, shard limits, lost answers,
//! crashes), with records sent alone or packed into aggregates, and partition keys that are the
//! primary key or shared by many rows: once the runs settle, every change was delivered, in
//! per-key order, nothing acknowledged was sent again (except where an answer was lost), and
//! the state is the model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kinesync_engine::{Aggregation, Engine, EngineBuilder, Limits, Outcome, last_sent_rows};
use kinesync_engine::{KeySpec, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::{MemoryStore, SqliteStore, StateStore};
use kinesync_transport::{
    FaultySink, InMemorySink, KinesisSink, LimitSink, PutRecord, RandomFaults, RecordOutcome,
    ShardLimits, StreamConfig, StreamDescription, StreamName, TokioClock, TransportError,
};
use proptest::prelude::*;

type Model = BTreeMap<i64, u64>;

fn schema() -> Arc<Schema> {
    Schema::new(["id", "v", "group"], "id").unwrap()
}

/// How records go out: alone or aggregated, keyed by their primary key or by a group that
/// many rows share.
#[derive(Debug, Clone, Copy)]
struct Shape {
    aggregate: bool,
    shared_keys: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (any::<bool>(), any::<bool>()).prop_map(|(aggregate, shared_keys)| Shape {
        aggregate,
        shared_keys,
    })
}

fn builder(shape: Shape) -> EngineBuilder {
    let builder = Engine::builder().records(records(shape));
    if shape.aggregate {
        // Small aggregates, so that a run makes many and a call carries several.
        builder.aggregate(Aggregation::with_max_bytes(1024))
    } else {
        builder
    }
}

fn records(shape: Shape) -> RecordBuilder {
    let schema = schema();
    let payload = Payload::compile(
        &PayloadSpec::template(r#"{"id": {{ row.id }}, "v": {{ row.v }}, "event": "{{ event }}"}"#),
        schema.clone(),
    )
    .unwrap();
    let key = shape.shared_keys.then_some("group");
    RecordBuilder::new(payload, KeySpec::new(&schema, key, None).unwrap())
}

fn rows(model: &Model) -> Vec<Result<Row, String>> {
    model
        .iter()
        .map(|(id, v)| {
            Ok(Row::new(vec![
                Value::Int(*id),
                Value::Int(*v as i64),
                Value::from(format!("g{}", id % 4)),
            ]))
        })
        .collect()
}

fn stream() -> StreamName {
    StreamName::new("props").unwrap()
}

/// Per primary key, the (event, version) messages in the order the stream holds them.
fn delivered(memory: &InMemorySink) -> BTreeMap<i64, Vec<(String, u64)>> {
    let mut out: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
    let data = memory
        .records(&stream())
        .unwrap()
        .into_iter()
        .flat_map(
            |r| match kinesync_testkit::deaggregate::deaggregate(&r.data).unwrap() {
                Some(users) => users.into_iter().map(|u| u.data).collect(),
                None => vec![r.data.to_vec()],
            },
        );
    for data in data {
        let m: serde_json::Value = serde_json::from_slice(&data).unwrap();
        out.entry(m["id"].as_i64().unwrap()).or_default().push((
            m["event"].as_str().unwrap().to_owned(),
            m["v"].as_u64().unwrap(),
        ));
    }
    out
}

fn state_matches(store: &mut dyn StateStore, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        store.key_count().unwrap(),
        model.len(),
        "the state holds exactly the model's keys"
    );
    let keys: Vec<String> = model.keys().map(|k| k.to_string()).collect();
    let rows = last_sent_rows(store, &schema(), &keys).unwrap();
    for ((id, v), row) in model.iter().zip(rows) {
        let row = row.expect("every model key is in the state");
        prop_assert_eq!(
            row.get(1),
            &Value::Int(*v as i64),
            "key {} holds the model's version",
            id
        );
    }
    Ok(())
}

/// A model step: versions come from one counter, so every edit is newer than all before it.
fn edit(model: &Model, counter: &mut u64, ops: &[(u8, u8)]) -> Model {
    let mut next = model.clone();
    for &(op, id) in ops {
        let id = i64::from(id % 24);
        match op % 3 {
            0 => {
                *counter += 1;
                next.insert(id, *counter);
            }
            1 => {
                next.remove(&id);
            }
            _ => {}
        }
    }
    next
}

fn limits(seed: u64) -> Limits {
    Limits {
        max_attempts: 6,
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(200),
        max_batch_records: 7,
        max_in_flight: Some(3),
        chunk_rows: 5,
        max_backlog: 9,
        // Spill the run's keys to disk every few rows, so the merge is what finds removals.
        keys_in_memory: 4,
        // One to three builder threads, so chunks are built out of step with their order.
        build_threads: 1 + (seed % 3) as usize,
        seed: Some(seed),
        // Any edit of the model is the truth here; the guard against sudden mass removals has
        // tests of its own.
        max_removed_share: 1.0,
        ..Limits::default()
    }
}

/// Checks the delivery of a sequence of models: each version of each key sent, removals sent,
/// per-key order, and (without lost answers) exactly once.
fn check_delivery(
    history: &[Model],
    delivered: &BTreeMap<i64, Vec<(String, u64)>>,
    exactly_once: bool,
) -> Result<(), TestCaseError> {
    let mut expected: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
    let mut previous = Model::new();
    for model in history {
        for (id, v) in model {
            match previous.get(id) {
                None => expected.entry(*id).or_default().push(("added".into(), *v)),
                Some(old) if old != v => expected
                    .entry(*id)
                    .or_default()
                    .push(("changed".into(), *v)),
                Some(_) => {}
            }
        }
        for (id, v) in &previous {
            if !model.contains_key(id) {
                expected
                    .entry(*id)
                    .or_default()
                    .push(("removed".into(), *v));
            }
        }
        previous = model.clone();
    }
    for (id, want) in &expected {
        let got = delivered.get(id).cloned().unwrap_or_default();
        if exactly_once {
            prop_assert_eq!(&got, want, "key {}", id);
        } else {
            // At least once, in order: collapsing repeats gives exactly the expected sequence.
            let mut collapsed = got.clone();
            collapsed.dedup();
            prop_assert_eq!(&collapsed, want, "key {} (delivered {:?})", id, got);
        }
    }
    prop_assert!(
        delivered.keys().all(|k| expected.contains_key(k)),
        "nothing unexpected was sent"
    );
    Ok(())
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn runs_settle_with_every_change_delivered_in_order(
        steps in prop::collection::vec(prop::collection::vec((any::<u8>(), any::<u8>()), 0..30), 1..5),
        seed in any::<u64>(),
        lost_answers in any::<bool>(),
        shape in shape(),
    ) {
        paused_runtime().block_on(async {
            let memory = Arc::new(InMemorySink::new());
            memory.create_stream(&stream(), StreamConfig::with_shards(3));
            let rates = RandomFaults {
                record_throttle: 0.2,
                record_internal_failure: 0.1,
                call_error: 0.1,
                lost_answer: if lost_answers { 0.1 } else { 0.0 },
                max_delay: Duration::from_millis(30),
            };
            let limited = LimitSink::with_limits(memory.clone(), Arc::new(TokioClock::default()), ShardLimits { records_per_second: 15.0, bytes_per_second: 1e9 });
            let sink = Arc::new(FaultySink::random(limited, seed, rates));
            let mut engine = builder(shape).sink(sink, stream()).state(MemoryStore::new()).limits(limits(seed)).build().unwrap();

            let mut counter = 0;
            let mut model = Model::new();
            let mut history = Vec::new();
            for ops in &steps {
                model = edit(&model, &mut counter, ops);
                history.push(model.clone());
                // Run until a run ends with nothing pending: what one run leaves, the next sends.
                let mut settled = false;
                for _ in 0..30 {
                    let report = engine.run(rows(&model)).await.unwrap();
                    prop_assert!(!matches!(report.outcome, Outcome::Failed { .. }), "{:?}", report.outcome);
                    if report.outcome == Outcome::Complete {
                        settled = true;
                        break;
                    }
                }
                prop_assert!(settled, "the runs settle");
                state_matches(&mut *engine.state().lock().unwrap(), &model)?;
            }
            check_delivery(&history, &delivered(&memory), !lost_answers)
        })?;
    }
}

/// Lets `calls` calls through, then crashes: the next call never answers (before or after its
/// records land, as `after_landing` says).
#[derive(Debug)]
struct Crash {
    inner: Arc<InMemorySink>,
    calls: std::sync::atomic::AtomicUsize,
    crash_at: usize,
    after_landing: bool,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("crashing sink")
    }
}

#[async_trait::async_trait]
impl KinesisSink for Crash {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n >= self.crash_at {
            if self.after_landing {
                let _landed = self.inner.put_records(stream, records).await;
            }
            std::future::pending::<()>().await;
        }
        self.inner.put_records(stream, records).await
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A run killed at any point (its future dropped mid-call) loses nothing: the next run,
    /// on the same state file, sends what was not acknowledged; duplicates are bounded by what
    /// was in flight at the kill.
    #[test]
    fn a_run_killed_anywhere_loses_nothing(
        first in prop::collection::vec((any::<u8>(), any::<u8>()), 5..40),
        second in prop::collection::vec((any::<u8>(), any::<u8>()), 0..30),
        crash_at in 0usize..12,
        after_landing in any::<bool>(),
        crash_second in any::<bool>(),
        shape in shape(),
    ) {
        paused_runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let memory = Arc::new(InMemorySink::new());
            memory.create_stream(&stream(), StreamConfig::with_shards(2));
            let engine = |sink: Arc<dyn KinesisSink>| {
                builder(shape).sink(sink, stream()).state(SqliteStore::open(&path).unwrap()).limits(limits(1)).build().unwrap()
            };
            let mut counter = 0;
            let first = edit(&Model::new(), &mut counter, &first);
            let second = edit(&first, &mut counter, &second);
            let mut history = vec![first.clone()];
            let crashing = |model: &Model| {
                let sink = Arc::new(Crash { inner: memory.clone(), calls: Default::default(), crash_at, after_landing });
                let mut e = engine(sink);
                let rows = rows(model);
                // With time paused, the timeout fires as soon as the run waits on the hung call.
                async move { tokio::time::timeout(Duration::from_secs(3600), e.run(rows)).await.is_err() }
            };
            let calm = |model: &Model| {
                let mut e = engine(memory.clone());
                let rows = rows(model);
                async move { e.run(rows).await.unwrap() }
            };
            if crash_second {
                calm(&first).await;
                history.push(second.clone());
                // (When the run needs fewer calls than the crash point, it simply finishes.)
                let _killed = crashing(&second).await;
                prop_assert_eq!(calm(&second).await.outcome, Outcome::Complete);
            } else {
                let _killed = crashing(&first).await;
                prop_assert_eq!(calm(&first).await.outcome, Outcome::Complete);
            }
            let mut store = SqliteStore::open(&path).unwrap();
            state_matches(&mut store, history.last().unwrap())?;
            let delivered = delivered(&memory);
            check_delivery(&history, &delivered, false)?;
            let duplicates: usize = delivered.values().map(|v| v.len() - { let mut d = v.clone(); d.dedup(); d.len() }).sum();
            // Unaggregated, a call carries at most 7 records and 3 are in flight; aggregated,
            // a call carries what 7 aggregates of 1 KiB hold: each record is 30 bytes or more.
            let per_call = if shape.aggregate { 7 * 1024 / 30 } else { 7 };
            prop_assert!(duplicates <= 3 * per_call, "duplicates ({}) bounded by what was in flight", duplicates);
            Ok(())
        })?;
    }
}
