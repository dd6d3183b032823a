//! What the engine's tests share: a small model, its template, an in-memory stream, and ways
//! to read back what a run sent.

#![allow(dead_code, unreachable_pub)] // each test file uses its own share of these

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kinesync_engine::{Engine, Events, Initial, Limits, RunReport};
use kinesync_engine::{KeySpec, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::MemoryStore;
use kinesync_transport::{
    InMemorySink, KinesisSink, LimitSink, PutRecord, RecordOutcome, StoredRecord, StreamConfig,
    StreamDescription, StreamName, TransportError,
};

const TEMPLATE: &str = r#"{"id": {{ row.id }}, "name": "{{ row.name }}", "event": "{{ event }}", "was": {% if previous %}"{{ previous.name }}"{% else %}null{% endif %}}"#;

pub fn schema() -> Arc<Schema> {
    Schema::new(["id", "name", "group"], "id").unwrap()
}

pub fn records(partition_key: Option<&str>) -> RecordBuilder {
    let schema = schema();
    let payload = Payload::compile(&PayloadSpec::template(TEMPLATE), schema.clone()).unwrap();
    RecordBuilder::new(payload, KeySpec::new(&schema, partition_key, None).unwrap())
}

pub fn row(id: i64, name: &str) -> Row {
    Row::new(vec![
        Value::Int(id),
        Value::from(name),
        Value::from(format!("g{}", id % 3)),
    ])
}

pub fn model(rows: &[(i64, &str)]) -> Vec<Row> {
    rows.iter().map(|(id, name)| row(*id, name)).collect()
}

pub fn stream() -> StreamName {
    StreamName::new("engine").unwrap()
}

pub fn memory_sink(shards: u32) -> Arc<InMemorySink> {
    let sink = Arc::new(InMemorySink::new());
    sink.create_stream(&stream(), StreamConfig::with_shards(shards));
    sink
}

pub fn fast_limits() -> Limits {
    Limits {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
        seed: Some(7),
        ..Limits::default()
    }
}

pub fn engine(sink: Arc<dyn KinesisSink>, events: Events, initial: Initial) -> Engine {
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

pub async fn run(engine: &mut Engine, rows: &[Row]) -> RunReport {
    engine
        .run(rows.iter().cloned().map(Ok::<_, String>))
        .await
        .unwrap()
}

pub fn messages(sink: &InMemorySink) -> Vec<serde_json::Value> {
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

pub fn events_of(sink: &InMemorySink) -> BTreeMap<i64, Vec<(String, String)>> {
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
pub fn sent_after(sink: &InMemorySink, skip: usize) -> Vec<(String, i64, String, Option<String>)> {
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

/// Keys whose last record the stream acknowledged (keys in doubt, whose records went out
/// without an answer read, are not counted).
pub fn acknowledged_keys(engine: &Engine) -> usize {
    let state = engine.state();
    let mut state = state.lock().unwrap();
    let keys = state.keys_after(None, usize::MAX).unwrap();
    state
        .seen(&keys)
        .unwrap()
        .into_iter()
        .filter(|seen| matches!(seen, Some(kinesync_state::Seen::Acknowledged(_))))
        .count()
}

/// The service's limits around an in-memory stream whose shard 0 is split (or merged with
/// shard 1) once `after` records were acknowledged: a reshard in the middle of a run.
#[derive(Debug)]
pub struct SplitsMidway {
    pub memory: Arc<InMemorySink>,
    pub limited: LimitSink<Arc<InMemorySink>>,
    pub acknowledged: std::sync::atomic::AtomicU64,
    pub after: u64,
    /// Merge shards 0 and 1 instead of splitting shard 0.
    pub merge: bool,
}

impl std::fmt::Display for SplitsMidway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("splits midway")
    }
}

#[async_trait::async_trait]
impl KinesisSink for SplitsMidway {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let outcomes = self.limited.put_records(stream, records).await?;
        let accepted = outcomes.iter().filter(|o| o.is_accepted()).count() as u64;
        let before = self
            .acknowledged
            .fetch_add(accepted, std::sync::atomic::Ordering::SeqCst);
        if before < self.after && before + accepted >= self.after {
            let resharded = if self.merge {
                self.memory
                    .merge_shards(stream, "shardId-000000000000", "shardId-000000000001")
            } else {
                self.memory.split_shard(stream, "shardId-000000000000")
            };
            assert!(resharded);
        }
        Ok(outcomes)
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError> {
        self.limited.describe_stream(stream).await
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        self.limited.list_streams().await
    }
}
