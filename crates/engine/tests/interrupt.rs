//! A run asked to stop reads no further row and starts no new call; the calls in flight
//! finish and are committed, and the next run sends exactly the rest.

use std::sync::Arc;

use async_trait::async_trait;
use kinesync_engine::{Engine, Interrupt, KeySpec, Limits, Outcome, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::MemoryStore;
use kinesync_transport::{
    InMemorySink, KinesisSink, PutRecord, RecordOutcome, StreamConfig, StreamDescription,
    StreamName, TransportError,
};

/// A stream whose first call is where someone presses Ctrl-C.
#[derive(Debug)]
struct InterruptsOnFirstCall {
    inner: Arc<InMemorySink>,
    interrupt: Interrupt,
}

impl std::fmt::Display for InterruptsOnFirstCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("in-memory stream, interrupted at its first call")
    }
}

#[async_trait]
impl KinesisSink for InterruptsOnFirstCall {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        self.interrupt.interrupt();
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

#[tokio::test]
async fn an_interrupted_run_commits_its_calls_in_flight_and_the_next_sends_the_rest() {
    let stream = StreamName::new("interrupted").unwrap();
    let inner = Arc::new(InMemorySink::new());
    inner.create_stream(&stream, StreamConfig::with_shards(1));
    let interrupt = Interrupt::new();
    let sink = Arc::new(InterruptsOnFirstCall {
        inner,
        interrupt: interrupt.clone(),
    });
    let schema = Schema::new(["id"], "id").unwrap();
    let payload = Payload::compile(&PayloadSpec::Row, schema.clone()).unwrap();
    let mut engine = Engine::builder()
        .records(RecordBuilder::new(
            payload,
            KeySpec::new(&schema, None, None).unwrap(),
        ))
        .sink(sink.clone(), stream.clone())
        .state(MemoryStore::new())
        .interrupt(interrupt.clone())
        .limits(Limits {
            chunk_rows: 10,
            max_batch_records: 10,
            max_backlog: 10,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let rows = || (1..=1000).map(|id| Ok::<_, String>(Row::new(vec![Value::Int(id)])));

    let first = engine.run(rows()).await.unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted, "{first:?}");
    let acknowledged = first.records.acknowledged;
    assert!(acknowledged >= 10, "the call in flight finished: {first:?}");
    assert!(first.rows_read < 1000, "it stopped reading: {first:?}");
    assert_eq!(first.events.removed, 0);
    // Every record built is accounted for: acknowledged, or pending for the next run.
    assert_eq!(
        first.records.acknowledged + first.records.pending,
        first.records.to_send,
        "{first:?}"
    );
    let landed = sink.inner.records(&stream).unwrap().len() as u64;
    assert_eq!(
        landed, acknowledged,
        "no call started after the interrupt went unanswered"
    );

    interrupt.reset();
    let second = engine.run(rows()).await.unwrap();
    assert_eq!(
        second.outcome,
        Outcome::Interrupted,
        "the sink interrupts again"
    );
    interrupt.reset();
    // A sink that no longer interrupts: swap by building a plain engine over the same state.
    let state = engine.state();
    let mut rest = Engine::builder()
        .records(RecordBuilder::new(
            Payload::compile(&PayloadSpec::Row, schema.clone()).unwrap(),
            KeySpec::new(&schema, None, None).unwrap(),
        ))
        .sink(sink.inner.clone(), stream.clone())
        .state_shared(state)
        .build()
        .unwrap();
    let done = rest.run(rows()).await.unwrap();
    assert_eq!(done.outcome, Outcome::Complete);
    let sent_before = first.records.acknowledged + second.records.acknowledged;
    assert_eq!(done.events.added, 1000 - sent_before);
    assert_eq!(
        sink.inner.records(&stream).unwrap().len() as u64,
        1000,
        "every row once: nothing acknowledged went out again"
    );
}
