//! Answers the engine cannot read, through the real SDK path: a loopback Kinesis endpoint
//! (the test kit's) in front of the in-memory stream, answering some calls with a garbled or
//! short body after the records landed, or with a 503 to the run's first call. The records of
//! such a call are in doubt: the run sends them again and goes on; it does not fail.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kinesync_engine::{Engine, KeySpec, Limits, Outcome, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::MemoryStore;
use kinesync_testkit::fake_kinesis::{FakeKinesis, HttpFault};
use kinesync_testkit::probe::aws_sink;
use kinesync_transport::{InMemorySink, StreamConfig, StreamName};

fn stream() -> StreamName {
    StreamName::new("answers").unwrap()
}

async fn engine_behind(faults: Vec<HttpFault>) -> (Engine, Arc<InMemorySink>) {
    let memory = Arc::new(InMemorySink::new());
    memory.create_stream(&stream(), StreamConfig::with_shards(1));
    let fake = FakeKinesis::start(memory.clone()).await;
    for fault in faults {
        fake.push_fault(fault);
    }
    let schema = Schema::new(["id", "name"], "id").unwrap();
    let payload = Payload::compile(&PayloadSpec::Row, schema.clone()).unwrap();
    let engine = Engine::builder()
        .records(RecordBuilder::new(
            payload,
            KeySpec::new(&schema, None, None).unwrap(),
        ))
        .sink(Arc::new(aws_sink(&fake.endpoint).await), stream())
        .state(MemoryStore::new())
        .limits(Limits {
            max_batch_records: 5,
            max_in_flight: Some(1),
            backoff_base: Duration::from_millis(1),
            backoff_cap: Duration::from_millis(10),
            seed: Some(3),
            ..Limits::default()
        })
        .build()
        .unwrap();
    (engine, memory)
}

fn rows(n: i64) -> Vec<Result<Row, String>> {
    (1..=n)
        .map(|id| {
            Ok(Row::new(vec![
                Value::Int(id),
                Value::from(format!("r{id}")),
            ]))
        })
        .collect()
}

/// The ids the stream holds (each at least once).
fn ids_in(memory: &InMemorySink) -> BTreeSet<i64> {
    memory
        .records(&stream())
        .unwrap()
        .iter()
        .map(|r| {
            let message: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
            message["id"].as_i64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbled_and_short_answers_leave_records_in_doubt_and_they_are_sent_again() {
    // DescribeStreamSummary and ListShards pass; the first PutRecords is answered with a body
    // that is not JSON, the second with one result fewer than its records.
    let passes = HttpFault::Delay(Duration::ZERO);
    let (mut engine, memory) = engine_behind(vec![
        passes.clone(),
        passes,
        HttpFault::Garble,
        HttpFault::ShortAnswer,
    ])
    .await;
    let report = engine.run(rows(10)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{report:?}");
    assert_eq!(
        (report.records.acknowledged, report.records.pending),
        (10, 0)
    );
    assert!(
        report.retries >= 10,
        "both calls' records went again: {report:?}"
    );
    assert_eq!(ids_in(&memory), (1..=10).collect());
    // The cost of not losing them: the records of the two calls landed twice.
    assert_eq!(memory.records(&stream()).unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_to_the_runs_first_call_is_retried() {
    let (mut engine, memory) =
        engine_behind(vec![HttpFault::Status(503, "ServiceUnavailable")]).await;
    let report = engine.run(rows(3)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{report:?}");
    assert_eq!(ids_in(&memory), (1..=3).collect());
}
