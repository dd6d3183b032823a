//! The sync engine against `InMemorySink`: what each run sends, what it commits, and what it
//! leaves for the next run.

use std::sync::Arc;

use kinesync_engine::{Engine, Events, Initial, Limits, Outcome};
use kinesync_state::{MemoryStore, SqliteStore};
use kinesync_transport::InMemorySink;

mod common;

use common::*;

#[tokio::test]
async fn a_first_run_backfills_and_a_second_sends_exactly_the_changes() {
    let sink = memory_sink(4);
    let mut engine = engine(sink.clone(), Events::all(), Initial::Backfill);
    let first = run(
        &mut engine,
        &model(&[(1, "Ada"), (2, "Grace"), (3, "Alan"), (4, "Edsger")]),
    )
    .await;
    assert_eq!(first.outcome, Outcome::Complete);
    assert_eq!(
        (
            first.events.added,
            first.records.to_send,
            first.records.acknowledged,
            first.records.pending
        ),
        (4, 4, 4, 0)
    );
    assert_eq!(sink.records(&stream()).unwrap().len(), 4);
    assert_eq!(engine.state().lock().unwrap().key_count().unwrap(), 4);

    // 2 changes its name, 3 is deleted, 5 is new, 1 and 4 are as they were.
    let second = run(
        &mut engine,
        &model(&[
            (1, "Ada"),
            (2, "Grace Hopper"),
            (4, "Edsger"),
            (5, "Barbara"),
        ]),
    )
    .await;
    assert_eq!(second.outcome, Outcome::Complete);
    assert_eq!(
        (
            second.events.added,
            second.events.changed,
            second.events.removed,
            second.events.unchanged
        ),
        (1, 1, 1, 2)
    );
    assert_eq!(second.records.acknowledged, 3);
    let sent: Vec<serde_json::Value> = messages(&sink)
        .into_iter()
        .filter(|m| m["event"] != "added" || m["id"] == 5)
        .collect();
    let changed = sent.iter().find(|m| m["event"] == "changed").unwrap();
    assert_eq!(
        (
            changed["id"].as_i64(),
            changed["name"].as_str(),
            changed["was"].as_str()
        ),
        (Some(2), Some("Grace Hopper"), Some("Grace")),
        "changed rows carry previous"
    );
    let removed = sent.iter().find(|m| m["event"] == "removed").unwrap();
    assert_eq!(
        (removed["id"].as_i64(), removed["name"].as_str()),
        (Some(3), Some("Alan")),
        "removed rows are their last sent version"
    );
    assert_eq!(
        engine.state().lock().unwrap().key_count().unwrap(),
        4,
        "the state is the model"
    );

    let third = run(
        &mut engine,
        &model(&[
            (1, "Ada"),
            (2, "Grace Hopper"),
            (4, "Edsger"),
            (5, "Barbara"),
        ]),
    )
    .await;
    assert_eq!(
        (third.records.to_send, third.events.unchanged, third.calls),
        (0, 4, 0),
        "nothing changed, nothing sent"
    );
}

#[tokio::test]
async fn each_trigger_sends_only_its_events() {
    for names in [
        &["added"][..],
        &["changed"],
        &["removed"],
        &["added", "changed"],
        &["added", "removed"],
        &["changed", "removed"],
    ] {
        let events = Events::from_names(names).unwrap();
        let sink = memory_sink(2);
        let mut engine = engine(sink.clone(), events, Initial::Backfill);
        run(&mut engine, &model(&[(1, "a"), (2, "b"), (3, "c")])).await;
        let report = run(&mut engine, &model(&[(1, "a2"), (2, "b"), (4, "d")])).await;
        let sent: Vec<String> = messages(&sink)
            .iter()
            .skip(usize::from(events.added) * 3)
            .map(|m| m["event"].as_str().unwrap().to_owned())
            .collect();
        let mut expected = Vec::new();
        if events.changed {
            expected.push("changed");
        }
        if events.added {
            expected.push("added");
        }
        if events.removed {
            expected.push("removed");
        }
        let mut got: Vec<&str> = sent.iter().map(String::as_str).collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "{names:?}");
        assert_eq!(
            report.events.not_triggered,
            3 - expected.len() as u64,
            "{names:?}"
        );
    }
}

#[tokio::test]
async fn skip_records_the_baseline_and_only_later_changes_flow() {
    let sink = memory_sink(2);
    let mut engine = engine(sink.clone(), Events::all(), Initial::Skip);
    let first = run(&mut engine, &model(&[(1, "a"), (2, "b")])).await;
    assert_eq!(first.outcome, Outcome::Baseline);
    assert_eq!(first.calls, 0);
    assert!(sink.records(&stream()).unwrap().is_empty());
    let second = run(&mut engine, &model(&[(1, "a"), (2, "b2"), (3, "c")])).await;
    assert_eq!(
        (
            second.events.changed,
            second.events.added,
            second.events.unchanged
        ),
        (1, 1, 1)
    );
    assert_eq!(events_of(&sink).len(), 2);
}

#[tokio::test]
async fn a_baseline_stopped_part_way_is_finished_without_sending_what_left_the_model() {
    let sink = memory_sink(1);
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(MemoryStore::new())
        .initial(Initial::Skip)
        .limits(Limits {
            chunk_rows: 1,
            ..fast_limits()
        })
        .build()
        .unwrap();
    // A key read twice stops the first run after two rows were recorded.
    let first = run(&mut engine, &model(&[(1, "a"), (2, "b"), (2, "b")])).await;
    assert!(matches!(first.outcome, Outcome::Failed { .. }), "{first:?}");
    // Row 1 is gone by the next run, which is still the baseline: nothing is sent.
    let second = run(&mut engine, &model(&[(2, "b"), (3, "c")])).await;
    assert_eq!(second.outcome, Outcome::Baseline, "{second:?}");
    assert_eq!((second.calls, second.events.removed), (0, 0));
    assert!(sink.records(&stream()).unwrap().is_empty());
    assert_eq!(engine.state().lock().unwrap().key_count().unwrap(), 2);
}

#[tokio::test]
async fn removals_past_the_share_are_held_and_none_is_sent() {
    let sink = memory_sink(1);
    let mut engine = engine(sink.clone(), Events::all(), Initial::Backfill);
    let rows = model(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")]);
    run(&mut engine, &rows).await;
    let sent = sink.records(&stream()).unwrap().len();
    // Three of four gone, past the default half: held, and the added row still goes out.
    let held = run(&mut engine, &model(&[(4, "d"), (5, "e")])).await;
    assert_eq!(
        held.outcome,
        Outcome::RemovalsHeld {
            removals: 3,
            state_rows: 4,
            allowed: 2
        }
    );
    assert_eq!((held.events.added, held.events.removed), (1, 0));
    assert_eq!(sink.records(&stream()).unwrap().len(), sent + 1);
    assert_eq!(engine.state().lock().unwrap().key_count().unwrap(), 5);
    // Exactly half (two of four) is allowed.
    let mut engine = engine_with(sink.clone(), 0.5);
    run(&mut engine, &rows).await;
    let half = run(&mut engine, &model(&[(3, "c"), (4, "d")])).await;
    assert_eq!((half.outcome, half.events.removed), (Outcome::Complete, 2));
}

fn engine_with(sink: Arc<InMemorySink>, max_removed_share: f64) -> Engine {
    Engine::builder()
        .records(records(None))
        .sink(sink, stream())
        .state(MemoryStore::new())
        .limits(Limits {
            max_removed_share,
            ..fast_limits()
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_sqlite_store_carries_state_between_engines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let sink = memory_sink(2);
    let build = |sink: Arc<InMemorySink>| {
        Engine::builder()
            .records(records(None))
            .sink(sink, stream())
            .state(SqliteStore::open(&path).unwrap())
            .build()
            .unwrap()
    };
    let mut first = build(sink.clone());
    run(&mut first, &model(&[(1, "a"), (2, "b")])).await;
    drop(first);
    let mut second = build(sink.clone());
    let report = run(&mut second, &model(&[(1, "a"), (2, "b2")])).await;
    assert_eq!((report.events.unchanged, report.events.changed), (1, 1));
}

#[tokio::test]
async fn a_duplicate_past_the_keys_held_in_memory_is_found_at_the_end() {
    let sink = memory_sink(1);
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink, stream())
        .state(MemoryStore::new())
        .limits(Limits {
            keys_in_memory: 2,
            chunk_rows: 2,
            ..fast_limits()
        })
        .build()
        .unwrap();
    run(&mut engine, &model(&[(1, "a"), (2, "b"), (3, "c")])).await;
    // Key 1 again, far enough in for the keys to have been spilled to disk.
    let report = run(
        &mut engine,
        &model(&[
            (1, "a"),
            (4, "d"),
            (5, "e"),
            (6, "f"),
            (7, "g"),
            (1, "again"),
        ]),
    )
    .await;
    let Outcome::Failed { error } = &report.outcome else {
        panic!("{report:?}")
    };
    assert!(
        error.contains(
            "primary key 1 (column \"id\") appears more than once in the model (rows 1 and 6)"
        ),
        "{error}"
    );
    assert_eq!(
        report.events.removed, 0,
        "keys 2 and 3 are not removed on a model that cannot be trusted"
    );
}

#[tokio::test]
async fn progress_counters_end_at_the_reports_counts() {
    let progress = Arc::new(kinesync_engine::Progress::new());
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(memory_sink(2), stream())
        .state(MemoryStore::new())
        .limits(fast_limits())
        .progress(progress.clone())
        .build()
        .unwrap();
    for rows in [
        model(&[(1, "a"), (2, "b"), (3, "c")]),
        // One changed, two removed: removals count as records too.
        model(&[(1, "a2")]),
    ] {
        let report = run(&mut engine, &rows).await;
        let now = progress.snapshot();
        assert_eq!(
            (now.rows_read, now.to_send, now.acknowledged, now.calls),
            (
                report.rows_read,
                report.records.to_send,
                report.records.acknowledged,
                report.calls
            ),
            "{report:?}"
        );
    }
}

/// A resync sends every row again: rows as last sent as `changed`, with themselves as
/// `previous`; new rows as added; gone rows as removed. Sent once: the next run is quiet.
#[tokio::test]
async fn a_resync_sends_every_row_again_with_its_previous_version() {
    let sink = memory_sink(1);
    let state = Arc::new(std::sync::Mutex::new(MemoryStore::new()));
    let build = |resync: bool| {
        Engine::builder()
            .records(records(None))
            .sink(sink.clone(), stream())
            .state_shared(state.clone())
            .limits(fast_limits())
            .resync(resync)
            .build()
            .unwrap()
    };
    run(&mut build(false), &model(&[(1, "a"), (2, "b"), (3, "c")])).await;
    let before = messages(&sink).len();
    let report = run(&mut build(true), &model(&[(1, "a"), (2, "b2"), (4, "d")])).await;
    assert_eq!(report.outcome, Outcome::Complete);
    assert!(report.resync);
    let mut sent = sent_after(&sink, before);
    sent.sort();
    let owned = |s: &str| s.to_owned();
    assert_eq!(
        sent,
        [
            (owned("added"), 4, owned("d"), None),
            (owned("changed"), 1, owned("a"), Some(owned("a"))),
            (owned("changed"), 2, owned("b2"), Some(owned("b"))),
            (owned("removed"), 3, owned("c"), None),
        ]
    );
    let after = run(&mut build(false), &model(&[(1, "a"), (2, "b2"), (4, "d")])).await;
    assert_eq!((after.events.unchanged, after.records.to_send), (3, 0));
}

#[tokio::test]
async fn unsigned_64_bit_ids_are_sent_exactly_and_keyed_by_their_digits() {
    let schema = kinesync_payload::Schema::new(["id", "hash"], "id").unwrap();
    let payload =
        kinesync_payload::Payload::compile(&kinesync_payload::PayloadSpec::Row, schema.clone())
            .unwrap();
    let records = kinesync_engine::RecordBuilder::new(
        payload,
        kinesync_engine::KeySpec::new(&schema, None, Some("hash")).unwrap(),
    );
    let memory = memory_sink(2);
    // The SQLite store: rows kept as JSON text, read back for the next run's diff.
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::builder()
        .records(records)
        .sink(memory.clone(), stream())
        .state(SqliteStore::open(dir.path().join("state.db")).unwrap())
        .build()
        .unwrap();
    let rows = || {
        vec![kinesync_payload::Row::new(vec![
            kinesync_payload::Value::UInt(u64::MAX),
            kinesync_payload::Value::UInt(1 << 63),
        ])]
    };
    let report = run(&mut engine, &rows()).await;
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    let stored = memory.records(&stream()).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        std::str::from_utf8(&stored[0].data).unwrap(),
        r#"{"id":18446744073709551615,"hash":9223372036854775808}"#
    );
    assert_eq!(stored[0].partition_key.as_str(), "18446744073709551615");
    assert_eq!(
        stored[0].explicit_hash_key.map(|k| k.get()),
        Some(1u128 << 63)
    );
    // The state keeps it exactly: the next run finds nothing changed.
    let again = run(&mut engine, &rows()).await;
    assert_eq!(again.events.unchanged, 1, "{}", again.summary());
    assert_eq!(again.records.to_send, 0);
}

#[tokio::test]
async fn integers_beyond_64_bits_are_sent_and_removed_digit_for_digit() {
    let schema = kinesync_payload::Schema::new(["id", "amount"], "id").unwrap();
    let payload = kinesync_payload::Payload::compile(
        &kinesync_payload::PayloadSpec::template(
            r#"{"id": {{ row.id }}, "amount": {{ row.amount }}, "event": "{{ event }}"}"#,
        ),
        schema.clone(),
    )
    .unwrap();
    let records = kinesync_engine::RecordBuilder::new(
        payload,
        kinesync_engine::KeySpec::new(&schema, None, None).unwrap(),
    );
    let memory = memory_sink(2);
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::builder()
        .records(records)
        .sink(memory.clone(), stream())
        .state(SqliteStore::open(dir.path().join("state.db")).unwrap())
        .limits(Limits {
            max_removed_share: 1.0,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let id = "123456789012345678901234567890";
    let amount = "-98765432109876543210987654321";
    let rows = vec![kinesync_payload::Row::new(vec![
        kinesync_payload::Value::Decimal(id.into()),
        kinesync_payload::Value::Decimal(amount.into()),
    ])];
    let report = run(&mut engine, &rows).await;
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    // Removed: the message is built from the row the state kept.
    let report = run(&mut engine, &[]).await;
    assert_eq!(report.events.removed, 1, "{}", report.summary());
    let mut stored = memory.records(&stream()).unwrap();
    stored.sort_by(|a, b| a.sequence_number.cmp(&b.sequence_number));
    let texts: Vec<String> = stored
        .iter()
        .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            format!(r#"{{"id":{id},"amount":{amount},"event":"added"}}"#),
            format!(r#"{{"id":{id},"amount":{amount},"event":"removed"}}"#),
        ]
    );
    assert_eq!(stored[0].partition_key.as_str(), id);
}
