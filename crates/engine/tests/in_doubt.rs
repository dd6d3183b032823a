//! Records whose answers are never read. A record can land and its answer be lost (a kill
//! mid-call, a dropped connection, a garbled body): the run cannot know. Its key is marked in
//! doubt before it goes out, so that the next run settles it: the row still in the model is
//! sent again, a row gone from it gets its `removed`, with the version that may have landed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kinesync_engine::{
    Engine, Events, Initial, KeySpec, Limits, Outcome, RecordBuilder, SharedState,
};
use kinesync_payload::{Payload, PayloadSpec};
use kinesync_state::{MemoryStore, Seen};
use kinesync_transport::{
    ErrorKind, InMemorySink, KinesisSink, Operation, PutRecord, RecordOutcome, StreamDescription,
    StreamName, TransportError,
};

mod common;

use common::*;

/// Lands every record in the stream; while `lose` is set, the answer is lost on the way back
/// (the caller sees a timeout). While `check` is set, it first asserts that every record's key
/// is already in doubt in the state: what makes a kill at that moment lose nothing.
struct LosesAnswers {
    inner: Arc<InMemorySink>,
    lose: AtomicBool,
    check: Option<SharedState>,
}

impl std::fmt::Debug for LosesAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LosesAnswers")
    }
}

impl std::fmt::Display for LosesAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loses-answers")
    }
}

#[async_trait::async_trait]
impl KinesisSink for LosesAnswers {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        if let Some(state) = &self.check {
            let keys: Vec<String> = records
                .iter()
                .map(|r| r.partition_key.as_str().to_owned())
                .collect();
            let seen = state.lock().unwrap().seen(&keys).unwrap();
            for (key, seen) in keys.iter().zip(seen) {
                assert!(
                    matches!(seen, Some(Seen::InDoubt(_))),
                    "key {key} went out without being marked in doubt first: {seen:?}"
                );
            }
        }
        let outcomes = self.inner.put_records(stream, records).await?;
        if self.lose.load(Ordering::SeqCst) {
            return Err(TransportError::new(
                ErrorKind::Transient,
                Operation::PutRecords,
                "the answer was lost on the way back (a timeout)",
            ));
        }
        Ok(outcomes)
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

fn setup(check: bool) -> (Engine, Arc<LosesAnswers>, Arc<InMemorySink>) {
    setup_with(check, records(None))
}

fn setup_with(
    check: bool,
    records: RecordBuilder,
) -> (Engine, Arc<LosesAnswers>, Arc<InMemorySink>) {
    // One shard: `sent_after` counts records in the order they landed.
    let memory = memory_sink(1);
    let state: SharedState = Arc::new(std::sync::Mutex::new(MemoryStore::new()));
    let sink = Arc::new(LosesAnswers {
        inner: memory.clone(),
        lose: AtomicBool::new(false),
        check: check.then(|| state.clone()),
    });
    let engine = Engine::builder()
        .records(records)
        .sink(sink.clone(), stream())
        .state_shared(state)
        .events(Events::all())
        .initial(Initial::default())
        .limits(Limits {
            max_attempts: 2,
            max_batch_records: 7,
            ..fast_limits()
        })
        .build()
        .unwrap();
    (engine, sink, memory)
}

fn numbered(ids: impl IntoIterator<Item = i64>, name: &str) -> Vec<kinesync_payload::Row> {
    ids.into_iter().map(|id| row(id, name)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_whose_answers_were_lost_get_their_removal_when_they_leave_the_model() {
    let (mut engine, sink, memory) = setup(true);
    // The first run: every record lands, no answer comes back.
    sink.lose.store(true, Ordering::SeqCst);
    let first = run(&mut engine, &numbered(1..=20, "v1")).await;
    // Both calls (max_attempts) failed whole, as far as the run can tell: it stops.
    assert!(
        matches!(&first.outcome, Outcome::Failed { error } if error.contains("2 calls in a row failed")),
        "{first:?}"
    );
    assert_eq!(first.records.acknowledged, 0);
    assert_eq!(first.records.pending, 20);

    // Half the rows leave the model; the stream answers again.
    sink.lose.store(false, Ordering::SeqCst);
    let landed = messages(&memory).len();
    let second = run(&mut engine, &numbered(1..=10, "v1")).await;
    assert_eq!(second.outcome, Outcome::Complete, "{second:?}");
    assert_eq!(second.events.removed, 10);
    assert_eq!(second.events.added, 10);
    let mut sent = sent_after(&memory, landed);
    sent.sort();
    let mut expected: Vec<_> = (1..=10)
        .map(|id| ("added".to_owned(), id, "v1".to_owned(), None))
        .chain((11..=20).map(|id| ("removed".to_owned(), id, "v1".to_owned(), None)))
        .collect();
    expected.sort();
    assert_eq!(sent, expected);

    // Settled: a third run sends nothing.
    let before = messages(&memory).len();
    let third = run(&mut engine, &numbered(1..=10, "v1")).await;
    assert_eq!(third.outcome, Outcome::Complete);
    assert_eq!(messages(&memory).len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_in_doubt_is_sent_again_even_when_the_model_changes_back() {
    let (mut engine, sink, memory) = setup(true);
    run(&mut engine, &numbered(1..=5, "v1")).await;
    // v2 goes out and may have landed (it did); its answers are lost.
    sink.lose.store(true, Ordering::SeqCst);
    let second = run(&mut engine, &numbered(1..=5, "v2")).await;
    assert_eq!(second.records.acknowledged, 0);
    sink.lose.store(false, Ordering::SeqCst);
    // The model is back at v1, the version acknowledged: consumers may hold v2, so v1 is sent,
    // as changed, from the version that may have landed.
    let landed = messages(&memory).len();
    let third = run(&mut engine, &numbered(1..=5, "v1")).await;
    assert_eq!(third.outcome, Outcome::Complete);
    let mut sent = sent_after(&memory, landed);
    sent.sort();
    let expected: Vec<_> = (1..=5)
        .map(|id| {
            (
                "changed".to_owned(),
                id,
                "v1".to_owned(),
                Some("v2".to_owned()),
            )
        })
        .collect();
    assert_eq!(sent, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removal_in_doubt_is_undone_when_the_row_comes_back_unchanged() {
    let (mut engine, sink, memory) = setup(true);
    run(&mut engine, &numbered(1..=6, "v1")).await;
    // Rows 4..6 are removed, and the removals land without an answer.
    sink.lose.store(true, Ordering::SeqCst);
    let second = run(&mut engine, &numbered(1..=3, "v1")).await;
    assert_eq!(second.events.removed, 3);
    assert_eq!(second.records.acknowledged, 0);
    sink.lose.store(false, Ordering::SeqCst);
    // They come back as they were: consumers may have dropped them, so they are sent again.
    let landed = messages(&memory).len();
    let third = run(&mut engine, &numbered(1..=6, "v1")).await;
    assert_eq!(third.outcome, Outcome::Complete);
    let mut sent = sent_after(&memory, landed);
    sent.sort();
    let expected: Vec<_> = (4..=6)
        .map(|id| ("added".to_owned(), id, "v1".to_owned(), None))
        .collect();
    assert_eq!(sent, expected);
}

/// The record id of every message, by id, in the order the stream holds them (one shard).
fn ids_of(memory: &InMemorySink, skip: usize) -> Vec<(i64, String, String)> {
    messages(memory)
        .into_iter()
        .skip(skip)
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["event"].as_str().unwrap().to_owned(),
                m["rid"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resend_carries_the_same_record_id_and_the_next_change_a_greater_one() {
    let schema = schema();
    let template = r#"{"id": {{ row.id }}, "event": "{{ event }}", "rid": "{{ record.id }}"}"#;
    let payload = Payload::compile(&PayloadSpec::template(template), schema.clone()).unwrap();
    let records = RecordBuilder::new(payload, KeySpec::new(&schema, None, None).unwrap());
    let (mut engine, sink, memory) = setup_with(true, records);

    // Both attempts of rows 1..=4 land, no answer comes back.
    sink.lose.store(true, Ordering::SeqCst);
    run(&mut engine, &numbered(1..=4, "v1")).await;
    let first = ids_of(&memory, 0);
    assert_eq!(first.len(), 8);
    let id_of = |sent: &[(i64, String, String)], id: i64| {
        let ids: std::collections::BTreeSet<&String> =
            sent.iter().filter(|s| s.0 == id).map(|s| &s.2).collect();
        assert_eq!(
            ids.len(),
            1,
            "row {id}: one id for all its copies: {sent:?}"
        );
        ids.into_iter().next().unwrap().clone()
    };
    let v1: Vec<String> = (1..=4).map(|id| id_of(&first, id)).collect();
    assert!(
        v1.iter().all(|id| id.len() == 36 && &id[14..15] == "7"),
        "UUIDv7: {v1:?}"
    );

    // The next run sends them again, with the same ids.
    sink.lose.store(false, Ordering::SeqCst);
    let before = messages(&memory).len();
    run(&mut engine, &numbered(1..=4, "v1")).await;
    let again = ids_of(&memory, before);
    assert_eq!(
        (1..=4).map(|id| id_of(&again, id)).collect::<Vec<_>>(),
        v1,
        "a resend of the same event keeps its id"
    );

    // Rows 1 and 2 change, row 3 leaves: new ids, greater than the ones before (time-ordered).
    let before = messages(&memory).len();
    let mut next = numbered([1, 2], "v2");
    next.extend(numbered([4], "v1"));
    run(&mut engine, &next).await;
    let changes = ids_of(&memory, before);
    assert_eq!(changes.len(), 3, "{changes:?}");
    for id in [1, 2, 3] {
        let new = id_of(&changes, id);
        assert!(
            new > v1[id as usize - 1],
            "row {id}: {new} after {}",
            v1[id as usize - 1]
        );
    }

    // Row 4's removal lands without an answer; sent again, it keeps its id.
    sink.lose.store(true, Ordering::SeqCst);
    let before = messages(&memory).len();
    run(&mut engine, &numbered([1, 2], "v2")).await;
    let removal = id_of(&ids_of(&memory, before), 4);
    sink.lose.store(false, Ordering::SeqCst);
    let before = messages(&memory).len();
    run(&mut engine, &numbered([1, 2], "v2")).await;
    let resent = ids_of(&memory, before);
    assert_eq!(resent, [(4, "removed".to_owned(), removal)]);
}
