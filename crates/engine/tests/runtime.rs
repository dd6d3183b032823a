//! How the engine sits on tokio: its blocking work (state store, build threads) is off the
//! async loop, it says so when there is no runtime, and a caller keeps a handle to its store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesync_engine::{Engine, Error, KeySpec, Limits, Outcome, RecordBuilder, SharedState};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::{Change, MemoryStore, Seen, StateError, StateStore};
use kinesync_transport::{
    InMemorySink, KinesisSink, PutRecord, RecordOutcome, StreamConfig, StreamDescription,
    StreamName, TransportError,
};
use tokio::sync::watch;

fn stream() -> StreamName {
    StreamName::new("runtime").unwrap()
}

fn records() -> RecordBuilder {
    let schema = Schema::new(["id", "name"], "id").unwrap();
    let payload = Payload::compile(&PayloadSpec::Row, schema.clone()).unwrap();
    RecordBuilder::new(payload, KeySpec::new(&schema, None, None).unwrap())
}

fn rows(n: i64) -> Vec<Result<Row, String>> {
    (1..=n)
        .map(|id| {
            Ok(Row::new(vec![
                Value::Int(id),
                Value::from(format!("row {id}")),
            ]))
        })
        .collect()
}

/// A sink that answers its first call at once, and every other call only once the state store
/// has begun to commit; it then says it has answered.
#[derive(Debug)]
struct Answering {
    inner: InMemorySink,
    calls: AtomicUsize,
    committing: watch::Receiver<bool>,
    answered: SyncSender<()>,
}

impl std::fmt::Display for Answering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answering in-memory stream")
    }
}

#[async_trait]
impl KinesisSink for Answering {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
            let mut committing = self.committing.clone();
            committing.wait_for(|started| *started).await.ok();
        }
        let outcome = self.inner.put_records(stream, records).await;
        self.answered.try_send(()).ok();
        outcome
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

/// A store whose first commit of an answer does not return until the sink has answered a call that was
/// waiting for that commit to begin: it can only return if calls go on while the store works.
struct WaitsForACall {
    inner: MemoryStore,
    committing: watch::Sender<bool>,
    answered: Option<Receiver<()>>,
}

impl StateStore for WaitsForACall {
    fn has_baseline(&self) -> Result<bool, StateError> {
        self.inner.has_baseline()
    }
    fn set_baseline(&mut self) -> Result<(), StateError> {
        self.inner.set_baseline()
    }
    fn seen(&mut self, keys: &[String]) -> Result<Vec<Option<Seen>>, StateError> {
        self.inner.seen(keys)
    }
    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.inner.rows(keys)
    }
    fn keys_after(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StateError> {
        self.inner.keys_after(after, limit)
    }
    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StateError> {
        // Keys marked in doubt before their calls go out are not an answer's commit.
        let answer = changes.iter().any(|c| !matches!(c, Change::InDoubt { .. }));
        if let Some(answered) = self.answered.take_if(|_| answer) {
            // The first call's answer is being committed; the others wait for this moment.
            while answered.try_recv().is_ok() {}
            self.committing.send_replace(true);
            answered
                .recv_timeout(Duration::from_secs(10))
                .expect("no call was answered while the state store was committing: the run's loop blocked its calls");
        }
        self.inner.commit(changes)
    }
    fn key_count(&self) -> Result<usize, StateError> {
        self.inner.key_count()
    }
    fn meta(&mut self, name: &str) -> Result<Option<String>, StateError> {
        self.inner.meta(name)
    }
    fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StateError> {
        self.inner.set_meta(name, value)
    }
}

// One thread: the loop and the calls share it, so only work handed off the loop lets a call
// be answered while the store commits.
#[tokio::test(flavor = "current_thread")]
async fn calls_are_answered_while_the_state_store_commits() {
    answered_while_committing().await;
}

// Many threads, as the `kinesync` binary runs: the store works in place, and the runtime moves
// the calls to another thread meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_answered_while_the_state_store_commits_on_many_threads() {
    answered_while_committing().await;
}

async fn answered_while_committing() {
    let inner = InMemorySink::new();
    inner.create_stream(&stream(), StreamConfig::with_shards(2));
    // Room for every answer, so the sink never waits for the store.
    let (answered, answers) = sync_channel(1000);
    let (committing, committing_seen) = watch::channel(false);
    let sink = Arc::new(Answering {
        inner,
        calls: AtomicUsize::new(0),
        committing: committing_seen,
        answered,
    });
    let store = WaitsForACall {
        inner: MemoryStore::new(),
        committing,
        answered: Some(answers),
    };
    let mut engine = Engine::builder()
        .records(records())
        .sink(sink.clone(), stream())
        .state(store)
        .limits(Limits {
            max_batch_records: 10,
            max_in_flight: Some(4),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let report = engine.run(rows(200)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.records.acknowledged, 200);
    assert_eq!(sink.inner.records(&stream()).unwrap().len(), 200);
}

#[test]
fn a_run_outside_tokio_says_it_needs_tokio() {
    let sink = Arc::new(InMemorySink::new());
    sink.create_stream(&stream(), StreamConfig::with_shards(1));
    let mut engine = Engine::builder()
        .records(records())
        .sink(sink, stream())
        .state(MemoryStore::new())
        .build()
        .unwrap();
    // Another executor's way of polling: once, with a waker that does nothing.
    let mut run = std::pin::pin!(engine.run(rows(3)));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match run.as_mut().poll(&mut context) {
        std::task::Poll::Ready(Err(error @ Error::NoRuntime)) => {
            assert!(
                error.to_string().contains("needs a tokio runtime"),
                "{error}"
            );
        }
        other => panic!("expected Error::NoRuntime, got {other:?}"),
    }
}

#[test]
fn a_runtime_without_timers_is_refused_before_any_work() {
    let sink = Arc::new(InMemorySink::new());
    sink.create_stream(&stream(), StreamConfig::with_shards(1));
    let mut engine = Engine::builder()
        .records(records())
        .sink(sink.clone(), stream())
        .state(MemoryStore::new())
        .build()
        .unwrap();
    // A runtime built without `enable_time()` (or `enable_all()`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = runtime.block_on(engine.run(rows(3)));
    match result {
        Err(error @ Error::NoTimers) => {
            assert!(error.to_string().contains("enable_time()"), "{error}");
        }
        other => panic!("expected Error::NoTimers, got {other:?}"),
    }
    assert_eq!(
        sink.records(&stream()).unwrap().len(),
        0,
        "nothing was sent"
    );
}

#[tokio::test]
async fn the_caller_keeps_a_handle_to_its_own_store() {
    let sink = Arc::new(InMemorySink::new());
    sink.create_stream(&stream(), StreamConfig::with_shards(1));
    let store = Arc::new(Mutex::new(MemoryStore::new()));
    let shared: SharedState = store.clone();
    let mut engine = Engine::builder()
        .records(records())
        .sink(sink, stream())
        .state_shared(shared)
        .build()
        .unwrap();
    engine.run(rows(3)).await.unwrap();
    let keys: Vec<String> = store.lock().unwrap().snapshot().keys().cloned().collect();
    assert_eq!(keys, ["1", "2", "3"]);
}

#[test]
fn a_missing_part_names_the_builder_method() {
    let error = Engine::builder().records(records()).build().unwrap_err();
    assert!(matches!(error, Error::MissingPart { method: "sink", .. }));
    assert_eq!(
        error.to_string(),
        "the engine needs a sink and a stream: call EngineBuilder::sink before build()"
    );
}
