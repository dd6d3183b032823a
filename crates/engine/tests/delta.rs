//! A model diffed where it lives ([`Engine::run_delta`]) against the same model read whole
//! ([`Engine::run`]): over random models, random edits between runs and random records left in
//! doubt (as a killed run leaves them), the delta, computed here from the store as a warehouse's
//! join computes it, sends the same records, counts the same events and leaves the same
//! state as the whole read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kinesync_engine::{Engine, KeySpec, Outcome, RecordBuilder, RunReport};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_source::{DeltaItem, DeltaSource, Locator, SourceError, SourceRow};
use kinesync_state::{Change, Doubt, MemoryStore, StateStore, StoredRow, Unanswered};
use kinesync_transport::{InMemorySink, StreamConfig, StreamName};
use proptest::prelude::*;

type Model = BTreeMap<i64, u64>;

fn schema() -> Arc<Schema> {
    Schema::new(["id", "v"], "id").unwrap()
}

/// The row of `id`, with the fingerprint its source gives it (a warehouse computes its own).
fn source_row(id: i64, v: u64) -> SourceRow {
    let row = Row::new(vec![Value::Int(id), Value::Int(v as i64)]);
    SourceRow::new(0, row).with_fingerprint(fingerprint(id, v))
}

fn fingerprint(id: i64, v: u64) -> u128 {
    ((id as u128) << 64 | u128::from(v)) + 1
}

/// The rows a warehouse's join gives for `model` against `stored`: rows whose key is absent,
/// in doubt, or stored with another fingerprint; then the stored keys the model lacks.
fn delta(model: &Model, stored: &BTreeMap<String, StoredRow>) -> Vec<DeltaItem> {
    let mut items = Vec::new();
    for (&id, &v) in model {
        let needs_sending = match stored.get(&id.to_string()) {
            None => true,
            Some(row) => row.doubt.is_some() || row.fingerprint != fingerprint(id, v),
        };
        if needs_sending {
            items.push(DeltaItem::Row(source_row(id, v)));
        }
    }
    for key in stored.keys() {
        if !key.parse().is_ok_and(|id: i64| model.contains_key(&id)) {
            items.push(DeltaItem::Removed(key.clone()));
        }
    }
    items
}

struct Delta {
    items: std::vec::IntoIter<DeltaItem>,
    schema: Arc<Schema>,
    /// The mark the diff leaves, if the run completes.
    watermark: Option<String>,
    /// An unreadable row after the items.
    then_unreadable: bool,
}

impl Iterator for Delta {
    type Item = Result<DeltaItem, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.items.next() {
            Some(item) => Some(Ok(item)),
            None if std::mem::take(&mut self.then_unreadable) => Some(Err(SourceError::Postgres {
                location: "warehouse".into(),
                message: "a row that cannot be read".into(),
            })),
            None => None,
        }
    }
}

impl DeltaSource for Delta {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> Locator {
        Locator::query_rows("warehouse")
    }

    fn watermark(&self) -> Option<String> {
        self.watermark.clone()
    }
}

impl Delta {
    fn of(items: Vec<DeltaItem>) -> Self {
        Self {
            items: items.into_iter(),
            schema: schema(),
            watermark: None,
            then_unreadable: false,
        }
    }
}

fn engine(sink: &Arc<InMemorySink>, stream: &StreamName, state: Arc<Mutex<MemoryStore>>) -> Engine {
    builder(sink, stream, state).build().unwrap()
}

/// An engine's builder: the test's records into `stream`, remembering in `state`.
fn builder(
    sink: &Arc<InMemorySink>,
    stream: &StreamName,
    state: Arc<Mutex<MemoryStore>>,
) -> kinesync_engine::EngineBuilder {
    let schema = schema();
    let payload = Payload::compile(
        &PayloadSpec::template(
            r#"{"id": {{ row.id }}, "v": {{ row.v }}, "event": "{{ event }}", "was": {{ previous.v }}}"#,
        ),
        schema.clone(),
    )
    .unwrap();
    Engine::builder()
        .records(RecordBuilder::new(
            payload,
            KeySpec::new(&schema, None, None).unwrap(),
        ))
        .sink(sink.clone(), stream.clone())
        .state_shared(state)
}

/// One run into a stream of its own: the report, and the records sorted.
async fn run(
    state: Arc<Mutex<MemoryStore>>,
    model: &Model,
    diffed: bool,
) -> (RunReport, Vec<String>) {
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("delta").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(2));
    let mut engine = engine(&sink, &stream, state.clone());
    let report = if diffed {
        let items = delta(model, state.lock().unwrap().snapshot());
        engine.run_delta(Box::new(Delta::of(items))).await
    } else {
        engine
            .run_rows(model.iter().map(|(&id, &v)| source_row(id, v)))
            .await
    }
    .unwrap();
    let mut records: Vec<String> = sink
        .records(&stream)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    records.sort();
    (report, records)
}

/// Marks for records a killed run may have sent: each stored key picked is left in doubt for
/// an addition, a change (of another version) or a removal.
fn marks(stored: &BTreeMap<String, StoredRow>, picks: &[(usize, u8)]) -> Vec<Change> {
    let keys: Vec<&String> = stored.keys().collect();
    let mut marks = Vec::new();
    for &(pick, kind) in picks {
        let Some(key) = keys.get(pick % keys.len().max(1)) else {
            continue;
        };
        let row = &stored[*key];
        let (event, sent) = match kind % 3 {
            0 => (
                Unanswered::Added,
                Some((row.fingerprint ^ 7, row.row.clone())),
            ),
            1 => (
                Unanswered::Changed,
                Some((row.fingerprint ^ 9, row.row.clone())),
            ),
            _ => (Unanswered::Removed, None),
        };
        marks.push(Change::InDoubt {
            key: (*key).clone(),
            doubt: Doubt {
                event,
                record_id: 0,
            },
            sent,
        });
    }
    marks
}

fn model_strategy() -> impl Strategy<Value = Model> {
    prop::collection::btree_map(0i64..60, 0u64..4, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_delta_run_sends_and_commits_what_a_whole_run_does(
        models in prop::collection::vec(model_strategy(), 2..5),
        picks in prop::collection::vec(prop::collection::vec((0usize..100, 0u8..3), 0..4), 5),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let whole = Arc::new(Mutex::new(MemoryStore::new()));
            let diffed = Arc::new(Mutex::new(MemoryStore::new()));
            // The first run reads the model whole on both sides (no baseline yet).
            run(whole.clone(), &models[0], false).await;
            run(diffed.clone(), &models[0], false).await;
            for (round, model) in models.iter().enumerate().skip(1) {
                let marks = marks(whole.lock().unwrap().snapshot(), &picks[round]);
                whole.lock().unwrap().commit(marks.clone()).unwrap();
                diffed.lock().unwrap().commit(marks).unwrap();
                let (full, full_records) = run(whole.clone(), model, false).await;
                let (delta, delta_records) = run(diffed.clone(), model, true).await;
                let settled = matches!(full.outcome, Outcome::Complete | Outcome::RemovalsHeld { .. });
                prop_assert!(settled, "{:?}", full.outcome);
                prop_assert_eq!(&delta.outcome, &full.outcome);
                prop_assert_eq!(&delta_records, &full_records, "round {}", round);
                prop_assert_eq!(&delta.events, &full.events, "round {}", round);
                prop_assert!(delta.diffed_at_source);
                let (whole_state, diffed_state) = (
                    whole.lock().unwrap().snapshot().clone(),
                    diffed.lock().unwrap().snapshot().clone(),
                );
                prop_assert_eq!(whole_state, diffed_state);
            }
            Ok(())
        })?;
    }
}

/// Removed keys alone, the run asked to stop as the first is read: the read ends with no row
/// (so no chunk ever checks), and still no removal goes out.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_asked_while_the_diff_is_awaited_sends_no_removal() {
    let state = Arc::new(Mutex::new(MemoryStore::new()));
    let model: Model = (0..10).map(|id| (id, 1)).collect();
    run(state.clone(), &model, false).await;

    struct Stopping {
        items: std::vec::IntoIter<DeltaItem>,
        interrupt: kinesync_engine::Interrupt,
    }
    impl Iterator for Stopping {
        type Item = Result<DeltaItem, SourceError>;
        fn next(&mut self) -> Option<Self::Item> {
            self.interrupt.interrupt();
            self.items.next().map(Ok)
        }
    }
    impl DeltaSource for Stopping {
        fn schema(&self) -> &Arc<Schema> {
            static SCHEMA: std::sync::OnceLock<Arc<Schema>> = std::sync::OnceLock::new();
            SCHEMA.get_or_init(schema)
        }
        fn locator(&self) -> Locator {
            Locator::query_rows("warehouse")
        }
    }
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("delta").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(1));
    let interrupt = kinesync_engine::Interrupt::new();
    let mut engine = builder(&sink, &stream, state.clone())
        .interrupt(interrupt.clone())
        .limits(kinesync_engine::Limits {
            max_removed_share: 1.0,
            ..Default::default()
        })
        .build()
        .unwrap();
    let gone = vec![
        DeltaItem::Removed("3".into()),
        DeltaItem::Removed("4".into()),
    ];
    let report = engine
        .run_delta(Box::new(Stopping {
            items: gone.into_iter(),
            interrupt,
        }))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Interrupted);
    assert!(
        sink.records(&stream).unwrap().is_empty(),
        "no removal went out"
    );
    assert_eq!(state.lock().unwrap().key_count().unwrap(), 10);

    // And an engine built to resync refuses a delta: a resync needs every row.
    let mut resync = builder(&sink, &stream, state).resync(true).build().unwrap();
    let error = resync
        .run_delta(Box::new(Delta::of(Vec::new())))
        .await
        .unwrap_err();
    assert!(
        matches!(error, kinesync_engine::Error::ResyncNeedsWholeModel),
        "{error}"
    );
}

/// The mark a diff leaves ([`DeltaSource::watermark`]) describes the state as the last run
/// left it: kept only when a diffed run completes, forgotten as any other run starts (a dry
/// run changes nothing, and keeps it).
#[tokio::test(flavor = "multi_thread")]
async fn a_diffs_mark_is_kept_only_by_a_complete_run_and_forgotten_by_any_other() {
    let state = Arc::new(Mutex::new(MemoryStore::new()));
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("delta").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(1));
    let mark = |state: &Arc<Mutex<MemoryStore>>| {
        kinesync_engine::diff_watermark(&mut *state.lock().unwrap()).unwrap()
    };
    let diffed = |model: &Model, watermark: &str, then_unreadable: bool| Delta {
        watermark: Some(watermark.to_owned()),
        then_unreadable,
        ..Delta::of(delta(model, state.lock().unwrap().snapshot()))
    };
    let model: Model = (0..5).map(|id| (id, 1)).collect();

    let complete = diffed(&model, "first", false);
    let report = engine(&sink, &stream, state.clone())
        .run_delta(Box::new(complete))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(mark(&state).as_deref(), Some("first"));

    // A dry run neither forgets nor replaces it.
    let dry = diffed(&model, "dry", false);
    let report = builder(&sink, &stream, state.clone())
        .dry_run(true)
        .build()
        .unwrap()
        .run_delta(Box::new(dry))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::DryRun);
    assert_eq!(mark(&state).as_deref(), Some("first"));

    // A run with a row it could not read does not complete: no mark is left.
    let mut changed = model.clone();
    changed.insert(9, 1);
    let partial = diffed(&changed, "partial", true);
    let report = engine(&sink, &stream, state.clone())
        .run_delta(Box::new(partial))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Partial);
    assert_eq!(mark(&state), None);

    // A complete run leaves its own; a run reading the whole model forgets it.
    let complete = diffed(&changed, "second", false);
    engine(&sink, &stream, state.clone())
        .run_delta(Box::new(complete))
        .await
        .unwrap();
    assert_eq!(mark(&state).as_deref(), Some("second"));
    let report = engine(&sink, &stream, state.clone())
        .run_rows(changed.iter().map(|(&id, &v)| source_row(id, v)))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(mark(&state), None);
}
