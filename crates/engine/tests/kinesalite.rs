//! A real sync over the real SDK path: 10,000 rows into kinesalite (started by the test) over
//! 4 shards, read back with GetRecords; then an incremental run.

use std::collections::BTreeMap;
use std::sync::Arc;

use kinesync_engine::{Engine, Limits, Outcome};
use kinesync_engine::{KeySpec, RecordBuilder};
use kinesync_keys::{HashKey, ShardMap};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::MemoryStore;
use kinesync_testkit::probe::{KinesisProbe, aws_sink};
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance::{StreamProbe, unique_stream};

fn rows(model: &BTreeMap<i64, String>) -> Vec<Result<Row, String>> {
    model
        .iter()
        .map(|(id, name)| Ok(Row::new(vec![Value::Int(*id), Value::from(name.as_str())])))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_rows_land_on_their_shards_then_only_changes_follow() {
    let server = kinesalite();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = unique_stream("engine");
    probe.create_stream(&stream, 4).await;

    let schema = Schema::new(["id", "name"], "id").unwrap();
    let payload = Payload::compile(
        &PayloadSpec::template(
            r#"{"id": {{ row.id }}, "name": "{{ row.name }}", "event": "{{ event }}"}"#,
        ),
        schema.clone(),
    )
    .unwrap();
    let records = RecordBuilder::new(payload, KeySpec::new(&schema, None, None).unwrap());
    let sink = Arc::new(aws_sink(&server.endpoint).await);
    let mut engine = Engine::builder()
        .records(records)
        .sink(sink, stream.clone())
        .state(MemoryStore::new())
        // kinesalite still enforces the old 5 MiB request limit.
        .limits(Limits {
            max_batch_bytes: 5 * 1024 * 1024,
            ..Limits::default()
        })
        .build()
        .unwrap();

    let mut model: BTreeMap<i64, String> =
        (1..=10_000).map(|i| (i, format!("user \"{i}\""))).collect();
    let report = engine.run(rows(&model)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(report.records.acknowledged, 10_000);
    assert!(report.calls >= 20, "500 records a call at most");

    let stored = probe.read_back(&stream).await;
    assert_eq!(stored.len(), 10_000, "every message read back");
    let shards = ShardMap::even(4).unwrap();
    let mut seen = BTreeMap::new();
    for record in &stored {
        let message: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
        let id = message["id"].as_i64().unwrap();
        assert_eq!(
            record.partition_key.as_str(),
            id.to_string(),
            "the partition key is the primary key"
        );
        assert_eq!(message["name"], model[&id], "the message is the row");
        assert_eq!(message["event"], "added");
        assert_eq!(
            record.shard_id,
            shards
                .shard_for(HashKey::of_partition_key(&record.partition_key))
                .id(),
            "the MD5 picks the shard"
        );
        *seen.entry(id).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1) && seen.len() == 10_000);

    // 100 changed, 50 removed, 20 added.
    for id in 1..=100 {
        model.insert(id, format!("renamed {id}"));
    }
    for id in 9_951..=10_000 {
        model.remove(&id);
    }
    for id in 20_001..=20_020 {
        model.insert(id, format!("new {id}"));
    }
    let report = engine.run(rows(&model)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(
        (
            report.events.changed,
            report.events.removed,
            report.events.added
        ),
        (100, 50, 20)
    );
    assert_eq!(report.records.acknowledged, 170);
    let stored = probe.read_back(&stream).await;
    assert_eq!(stored.len(), 10_170);
    let mut events = BTreeMap::new();
    for record in &stored[..] {
        let message: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
        *events
            .entry(message["event"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(events.get("changed"), Some(&100));
    assert_eq!(events.get("removed"), Some(&50));
    assert_eq!(events.get("added"), Some(&10_020));
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_larger_than_kinesalite_takes_are_made_smaller_and_every_row_lands() {
    let server = kinesalite();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = unique_stream("capped");
    probe.create_stream(&stream, 2).await;
    let schema = Schema::new(["id", "name"], "id").unwrap();
    let payload = Payload::compile(
        &PayloadSpec::template(r#"{"id": {{ row.id }}, "name": "{{ row.name }}"}"#),
        schema.clone(),
    )
    .unwrap();
    let records = RecordBuilder::new(payload, KeySpec::new(&schema, None, None).unwrap());
    let mut engine = Engine::builder()
        .records(records)
        .sink(Arc::new(aws_sink(&server.endpoint).await), stream.clone())
        .state(MemoryStore::new())
        // Unpaced, with the API's limits: the first call is near 10 MiB, which kinesalite
        // refuses whole.
        .limits(Limits {
            shard_records_per_second: f64::INFINITY,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let name = "n".repeat(250_000);
    let model: BTreeMap<i64, String> = (1..=40).map(|i| (i, name.clone())).collect();
    let report = engine.run(rows(&model)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(report.records.acknowledged, 40);
    assert_eq!(report.notes.len(), 1, "{}", report.summary());
    assert!(report.notes[0].contains("HTTP 413"), "{}", report.notes[0]);
    assert_eq!(probe.read_back(&stream).await.len(), 40);
}
