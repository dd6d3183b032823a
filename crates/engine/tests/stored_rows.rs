//! Rows the state store kept in other shapes (an older kinesync's JSON objects, other column
//! lists) are still matched, and read back by column name for `previous` and removed rows.

use kinesync_engine::{Engine, Outcome, last_sent_rows};
use kinesync_engine::{KeySpec, RecordBuilder};
use kinesync_payload::{Payload, PayloadSpec, Row, RowEncoder, Schema, Value};
use kinesync_state::{Change, MemoryStore, SqliteStore, StateStore};

mod common;

use common::*;

#[tokio::test]
async fn rows_stored_as_json_objects_by_an_older_kinesync_are_still_matched_and_read() {
    // A store as state schema version 1 left it: each row as a JSON object, fingerprinted
    // by the XXH3-128 of that object.
    let first = model(&[(1, "Ada"), (2, "Grace"), (3, "Alan")]);
    let encoder = RowEncoder::new(&schema());
    let mut store = MemoryStore::new();
    let as_objects = first
        .iter()
        .map(|row| {
            let mut object = Vec::new();
            encoder.encode(row, &mut object);
            Change::Upsert {
                key: row.get(0).to_json_string(),
                fingerprint: xxhash_rust::xxh3::xxh3_128(&object),
                row: object,
            }
        })
        .collect();
    store.commit(as_objects).unwrap();
    store.set_baseline().unwrap();
    assert_eq!(
        store.rows(&["1".to_owned()]).unwrap(),
        vec![Some(br#"{"id":1,"name":"Ada","group":"g1"}"#.to_vec())]
    );
    let sink = memory_sink(1);
    let mut engine = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(store)
        .limits(fast_limits())
        .build()
        .unwrap();

    let report = run(&mut engine, &model(&[(1, "Ada"), (2, "Grace Hopper")])).await;
    assert_eq!(
        (
            report.events.unchanged,
            report.events.changed,
            report.events.removed
        ),
        (1, 1, 1),
        "an unchanged row stored the old way is unchanged: {report:?}"
    );
    assert_eq!(
        sent_after(&sink, 0),
        vec![
            (
                "changed".into(),
                2,
                "Grace Hopper".into(),
                Some("Grace".into())
            ),
            ("removed".into(), 3, "Alan".into(), None),
        ],
        "previous and removed rows read from JSON objects"
    );
    let keys: Vec<String> = (1..=3).map(|id: i64| id.to_string()).collect();
    let now = last_sent_rows(&mut *engine.state().lock().unwrap(), &schema(), &keys).unwrap();
    assert_eq!(
        now,
        vec![Some(row(1, "Ada")), Some(row(2, "Grace Hopper")), None]
    );
}

#[tokio::test]
async fn rows_stored_under_other_columns_are_read_by_column_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let sink = memory_sink(1);
    let mut before = Engine::builder()
        .records(records(None))
        .sink(sink.clone(), stream())
        .state(SqliteStore::open(&path).unwrap())
        .limits(fast_limits())
        .build()
        .unwrap();
    run(
        &mut before,
        &model(&[(1, "Ada"), (2, "Grace"), (3, "Alan")]),
    )
    .await;
    drop(before);

    // The model loses `group`, gains `nick`, and its columns move.
    let renamed = Schema::new(["nick", "id", "name"], "id").unwrap();
    let payload = Payload::compile(
        &PayloadSpec::template(
            r#"{"id": {{ row.id }}, "name": "{{ row.name }}", "event": "{{ event }}", "was": {% if previous %}"{{ previous.name }}/{{ previous.nick }}"{% else %}null{% endif %}}"#,
        ),
        renamed.clone(),
    )
    .unwrap();
    let mut after = Engine::builder()
        .records(RecordBuilder::new(
            payload,
            KeySpec::new(&renamed, None, None).unwrap(),
        ))
        .sink(sink.clone(), stream())
        .state(SqliteStore::open(&path).unwrap())
        .limits(fast_limits())
        .build()
        .unwrap();
    let row = |id: i64, nick: &str, name: &str| {
        Row::new(vec![Value::from(nick), Value::Int(id), Value::from(name)])
    };
    let report = after
        .run([
            Ok::<_, String>(row(1, "ada", "Ada")),
            Ok(row(2, "", "Grace")),
        ])
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(
        sent_after(&sink, 3),
        vec![
            ("changed".into(), 1, "Ada".into(), Some("Ada/".into())),
            ("changed".into(), 2, "Grace".into(), Some("Grace/".into())),
            ("removed".into(), 3, "Alan".into(), None),
        ],
        "a column the stored row lacks is null; one the model lost is left out"
    );
    let keys = vec!["1".to_owned(), "3".to_owned()];
    assert_eq!(
        last_sent_rows(&mut *after.state().lock().unwrap(), &renamed, &keys).unwrap(),
        vec![Some(row(1, "ada", "Ada")), None]
    );
    assert_eq!(
        after
            .state()
            .lock()
            .unwrap()
            .meta("row_columns")
            .unwrap()
            .as_deref(),
        Some(r#"[["id","name","group"],["nick","id","name"]]"#),
        "each column list is kept once"
    );
}
