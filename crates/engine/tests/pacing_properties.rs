//! Pacing's invariants over many streams and models, on tokio's paused clock: whatever the
//! shard count (1 to 64), a split or a merge of shards mid-run (uneven hash ranges from then on), the
//! number of partition keys (one per row, or a few shared by many rows) and the stream's own
//! limits (the service's, or lower: another producer's share),
//! every record is acknowledged in one run, each partition key's records land in model order,
//! and a stream whose limits are the ceiling kinesync paces to is barely throttled (at most one
//! attempt in a thousand).

use std::collections::BTreeMap;
use std::sync::Arc;

use kinesync_engine::{Engine, KeySpec, Limits, Outcome, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync_state::MemoryStore;
use kinesync_transport::{
    InMemorySink, LimitSink, ShardLimits, StoredRecord, StreamConfig, StreamName, TokioClock,
};
use proptest::prelude::*;

mod common;

use common::SplitsMidway;

fn stream() -> StreamName {
    StreamName::new("pacing").unwrap()
}

/// Rows `1..=rows`, each in group `id % groups`, sent with the group as partition key.
fn model(rows: u32, groups: u32) -> (RecordBuilder, Vec<Row>) {
    let schema = Schema::new(["id", "group"], "id").unwrap();
    let payload = Payload::compile(
        &PayloadSpec::template(r#"{"id": {{ row.id }}, "group": "{{ row.group }}"}"#),
        schema.clone(),
    )
    .unwrap();
    let keys = KeySpec::new(&schema, Some("group"), None).unwrap();
    let rows = (1..=rows)
        .map(|id| {
            Row::new(vec![
                Value::Int(i64::from(id)),
                Value::from(format!("g{}", id % groups)),
            ])
        })
        .collect();
    (RecordBuilder::new(payload, keys), rows)
}

/// The ids the stream holds per group, in the order each shard took them.
fn ids_by_group(records: &[StoredRecord]) -> BTreeMap<String, Vec<i64>> {
    let mut sorted: Vec<&StoredRecord> = records.iter().collect();
    sorted.sort_by(|a, b| {
        (
            a.shard_id.as_str(),
            a.sequence_number.len(),
            &a.sequence_number,
        )
            .cmp(&(
                b.shard_id.as_str(),
                b.sequence_number.len(),
                &b.sequence_number,
            ))
    });
    let mut groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for record in sorted {
        let message: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
        groups
            .entry(message["group"].as_str().unwrap().to_owned())
            .or_default()
            .push(message["id"].as_i64().unwrap());
    }
    groups
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_record_lands_in_key_order_and_a_stream_at_the_ceiling_barely_throttles(
        shards in prop_oneof![1u32..=4, 5u32..=64],
        rows in 200u32..4000,
        groups in prop_oneof![Just(u32::MAX), 1u32..50],
        stream_rate in prop_oneof![Just(1000.0), 200.0f64..1000.0],
        reshard in 0u8..3,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        // The stream's clock is the runtime's paused one.
        let _runtime = runtime.enter();
        let groups = groups.min(rows);
        let memory = Arc::new(InMemorySink::new());
        memory.create_stream(&stream(), StreamConfig::with_shards(shards));
        let limited = LimitSink::with_limits(
            memory.clone(),
            Arc::new(TokioClock::default()),
            ShardLimits { records_per_second: stream_rate, ..ShardLimits::default() },
        );
        // A third of the way in, the first shard is split, or merged with the second (when
        // there is one): uneven ranges and new shard ids from then on.
        let merge = reshard == 2 && shards > 1;
        let resharded = reshard == 1 || merge;
        let limited = Arc::new(SplitsMidway {
            memory: memory.clone(),
            limited,
            acknowledged: std::sync::atomic::AtomicU64::new(0),
            after: if resharded { u64::from(rows / 3) } else { u64::MAX },
            merge,
        });
        let (records, model) = model(rows, groups);
        let mut engine = Engine::builder()
            .records(records)
            .sink(limited, stream())
            .state(MemoryStore::new())
            .limits(Limits { seed: Some(5), ..Limits::default() })
            .build()
            .unwrap();
        let report = runtime.block_on(engine.run_rows(model)).unwrap();
        prop_assert_eq!(&report.outcome, &Outcome::Complete, "{:?}", report);
        prop_assert_eq!(report.records.acknowledged, u64::from(rows));
        if stream_rate == 1000.0 && !resharded {
            // Paced to the stream's own limits, it is barely throttled: a call spawned at one
            // moment can run a paused-clock tick later (the runtime advances time while the
            // run waits on its blocking pool), landing a record of the tick before.
            let attempts: u64 = report.shards.iter().map(|s| s.attempts).sum();
            prop_assert!(
                report.throttled_records * 1000 <= attempts,
                "throttled at the ceiling: {:?}",
                report.shards
            );
        }
        let stored = memory.records(&stream()).unwrap();
        prop_assert_eq!(stored.len(), rows as usize, "each record once");
        for (group, ids) in ids_by_group(&stored) {
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "group {} out of model order: {:?}", group, ids);
        }
    }
}
