//! The debugger log: every call the destination makes, observed by the sink, one typed line
//! each; messages only when asked.

use std::sync::{Arc, Mutex};

use kinesync::call_log::{CallLog, LoggedCall};
use kinesync::engine::{Engine, Limits, Outcome};
use kinesync::payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync::state::MemoryStore;
use kinesync::transport::{
    ErrorKind, Fault, FaultySink, InMemorySink, KinesisSink, ObservedSink, RecordFailure,
    StreamConfig, StreamName,
};
use kinesync::{KeySpec, RecordBuilder};

/// A writer whose bytes the test reads back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn calls(&self) -> (String, Vec<LoggedCall>) {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        let calls = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (text, calls)
    }
}

fn stream() -> StreamName {
    StreamName::new("logged").unwrap()
}

fn memory_sink() -> Arc<InMemorySink> {
    let sink = Arc::new(InMemorySink::new());
    sink.create_stream(&stream(), StreamConfig::with_shards(1));
    sink
}

fn engine(sink: Arc<dyn KinesisSink>) -> Engine {
    let schema = Schema::new(["id", "name"], "id").unwrap();
    let payload = Payload::compile(&PayloadSpec::Row, schema.clone()).unwrap();
    Engine::builder()
        .records(RecordBuilder::new(
            payload,
            KeySpec::new(&schema, None, None).unwrap(),
        ))
        .sink(sink, stream())
        .state(MemoryStore::new())
        .limits(Limits {
            backoff_base: std::time::Duration::from_millis(1),
            backoff_cap: std::time::Duration::from_millis(5),
            seed: Some(7),
            ..Limits::default()
        })
        .build()
        .unwrap()
}

fn rows(names: &[&str]) -> Vec<Result<Row, String>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Ok(Row::new(vec![Value::Int(i as i64 + 1), Value::from(*name)])))
        .collect()
}

#[tokio::test]
async fn every_call_has_a_line_without_payloads() {
    let faulty = FaultySink::scripted(
        memory_sink(),
        [
            Fault::FailRecords(vec![(0, RecordFailure::Throttled)]),
            Fault::CallError(ErrorKind::Transient),
        ],
    );
    let out = Shared::default();
    let log = Arc::new(CallLog::to_writer(out.clone()));
    let mut engine = engine(Arc::new(ObservedSink::new(faulty, log)));
    let report = engine.run(rows(&["secret-name", "b"])).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);

    let (text, calls) = out.calls();
    let operations: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
    // The stream is described first, then one line per PutRecords attempt.
    assert_eq!(
        operations,
        [
            "DescribeStreamSummary",
            "PutRecords",
            "PutRecords",
            "PutRecords"
        ]
    );
    assert_eq!(calls.len() as u64, report.calls + 1);
    assert_eq!(calls[1].records, 2);
    assert_eq!(
        calls[1]
            .record_errors
            .get("ProvisionedThroughputExceededException"),
        Some(&1)
    );
    assert_eq!(calls[2].status, "transient");
    assert!(calls[2].message.is_some());
    assert_eq!(calls[3].status, "ok");
    assert!(
        calls
            .iter()
            .all(|c| c.stream.as_deref() == Some("logged") && c.time.ends_with('Z'))
    );
    assert!(
        !text.contains("secret-name"),
        "payloads stay out of the log by default"
    );
}

#[tokio::test]
async fn payloads_come_along_when_asked() {
    let out = Shared::default();
    let log = Arc::new(CallLog::to_writer(out.clone()).with_payloads(true));
    let mut engine = engine(Arc::new(ObservedSink::new(memory_sink(), log)));
    engine.run(rows(&["secret-name"])).await.unwrap();
    let (_, calls) = out.calls();
    let put = calls
        .iter()
        .find(|c| c.operation == "PutRecords")
        .expect("a PutRecords line");
    assert!(
        put.payloads.as_ref().unwrap()[0].contains("secret-name"),
        "{put:?}"
    );
    let describe = &calls[0];
    assert_eq!(describe.payloads, None, "only PutRecords carries messages");
}
