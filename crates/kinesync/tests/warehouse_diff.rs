//! The diff in the warehouse against the diff in kinesync, on a real PostgreSQL (the test
//! kit's server): the same model, changed the same random ways round after round, synced by
//! one engine that reads it whole (state in memory) and one whose state is in the warehouse
//! and whose diff runs there. Each round both send the same records, count the same events,
//! and the warehouse's side reads only the rows that may need sending. Keys are text with
//! quotes, backslashes, control characters and non-ASCII letters: a key the server and
//! kinesync wrote differently would show up as a false addition and removal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kinesync::engine::{Engine, Outcome, RunReport, SharedState};
use kinesync::payload::{Payload, PayloadSpec};
use kinesync::source::{
    Connection, DeltaSource, DiffPlace, PostgresDelta, PostgresSource, PostgresSpec, RowSource,
};
use kinesync::state::{MemoryStore, PostgresStore, Seen, StateStore};
use kinesync::transport::{InMemorySink, StreamConfig, StreamName};
use kinesync::{KeySpec, RecordBuilder};
use kinesync_testkit::postgres::postgres;

const TEMPLATE: &str =
    r#"{"event": "{{ event }}", "row": {{ row | json }}, "previous": {{ previous | json }}}"#;

/// Keys that JSON escapes (the state keeps each key as its JSON text), made by SQL.
const TRICKY_KEYS: [&str; 8] = [
    "'quote\"d'",
    "'back\\slash'",
    "'tab' || chr(9) || 'bed'",
    "'line' || chr(10) || 'break'",
    "'ctl' || chr(1)",
    "'del' || chr(127)",
    "'ünïcødé ключ'",
    "'rocket 🚀 /slash'",
];

/// A small deterministic generator: the same rounds every run.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn engine(
    sink: &Arc<InMemorySink>,
    stream: &StreamName,
    state: SharedState,
    schema: &Arc<kinesync::payload::Schema>,
) -> Engine {
    let payload = Payload::compile(&PayloadSpec::template(TEMPLATE), schema.clone()).unwrap();
    let keys = KeySpec::new(schema, Some("id"), None).unwrap();
    Engine::builder()
        .records(RecordBuilder::new(payload, keys))
        .sink(sink.clone(), stream.clone())
        .state_shared(state)
        .build()
        .unwrap()
}

/// This round's records, sorted (the two diffs read the rows in different orders).
fn records(sink: &InMemorySink, stream: &StreamName) -> Vec<String> {
    let mut records: Vec<String> = sink
        .records(stream)
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.partition_key, String::from_utf8_lossy(&r.data)))
        .collect();
    records.sort();
    records
}

/// One run of one side, into a stream of its own.
async fn run(state: SharedState, open: impl FnOnce() -> Model) -> (RunReport, Vec<String>) {
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("model").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(2));
    let model = open();
    let schema = match &model {
        Model::Whole(source) => source.schema().clone(),
        Model::Diffed(source) => source.schema().clone(),
    };
    let mut engine = engine(&sink, &stream, state, &schema);
    let report = match model {
        Model::Whole(source) => engine.run_source(Box::new(source)).await,
        Model::Diffed(source) => engine.run_delta(Box::new(source)).await,
    }
    .unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    (report, records(&sink, &stream))
}

enum Model {
    Whole(PostgresSource),
    Diffed(PostgresDelta),
}

fn counts(report: &RunReport) -> (u64, u64, u64, u64) {
    let e = &report.events;
    (e.added, e.changed, e.removed, e.unchanged)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_diff_in_the_warehouse_sends_what_the_diff_in_kinesync_sends() {
    let pg = postgres();
    let db = pg.new_database("warehouse_diff");
    let url = pg.url(&db);
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE model (id text PRIMARY KEY, n int8, price numeric(40,2), doc jsonb,
                                 at timestamptz, tags text[]);
             INSERT INTO model SELECT 'k' || g, g, g * 1.25, jsonb_build_object('g', g),
                 '2026-11-30T12:00:00Z'::timestamptz + g * interval '1 minute', ARRAY['t' || g % 3]
               FROM generate_series(1, 300) AS g;
             INSERT INTO model (id, n) SELECT k, 0 FROM unnest(ARRAY[{}]) AS k;",
            TRICKY_KEYS.join(", ")
        ),
    );
    // A query may end with a comment.
    let spec = PostgresSpec::new(
        Connection::new(url.clone()),
        "SELECT * FROM model -- every row",
        "id",
    );
    let mut table_spec = spec.clone();
    table_spec.table = Some("\"model\"".to_owned());

    let whole_store = Arc::new(Mutex::new(MemoryStore::new()));
    let whole_state: SharedState = whole_store.clone();
    let (client, place) = Connection::new(url.clone()).connect().unwrap();
    let store = Arc::new(Mutex::new(
        PostgresStore::open(client, place, "kinesync", "diff").unwrap(),
    ));
    let rows_table = store.lock().unwrap().rows_table().to_owned();
    let warehouse_state: SharedState = store.clone();

    // The backfill: the warehouse's side has no baseline yet, so it reads the model whole.
    let (whole, whole_records) = run(whole_state.clone(), || {
        Model::Whole(PostgresSource::open(&spec).unwrap())
    })
    .await;
    let (first, first_records) = run(warehouse_state.clone(), || {
        Model::Whole(PostgresSource::open(&table_spec).unwrap())
    })
    .await;
    assert_eq!((whole.events.added, first.events.added), (308, 308));
    assert_eq!(first_records, whole_records);
    assert!(store.lock().unwrap().has_baseline().unwrap());

    let mut random = Random(0x5eed_1234_abcd_9876);
    let mut next_id = 1000;
    for round in 0..12 {
        // Random changes: updates (some back to what was sent), deletes, inserts; rounds 0
        // and 1 change nothing.
        let mut sql = String::new();
        for _ in 0..(if round < 2 { 0 } else { 1 + random.below(6) }) {
            let key = format!("'k{}'", 1 + random.below(300));
            match random.below(6) {
                0 => sql.push_str(&format!("UPDATE model SET n = n + 1 WHERE id = {key};")),
                1 => sql.push_str(&format!("UPDATE model SET n = n - 1 WHERE id = {key};")),
                2 => sql.push_str(&format!(
                    "UPDATE model SET doc = doc || '{{\"r\": {round}}}', price = price + 0.01 WHERE id = {key};"
                )),
                3 => sql.push_str(&format!("DELETE FROM model WHERE id = {key};")),
                4 => {
                    let tricky = TRICKY_KEYS[random.below(TRICKY_KEYS.len() as u64) as usize];
                    sql.push_str(&format!(
                        "UPDATE model SET tags = ARRAY['r{round}'] WHERE id = {tricky};"
                    ));
                }
                _ => {
                    next_id += 1;
                    sql.push_str(&format!(
                        "INSERT INTO model (id, n, doc) VALUES ('new {next_id} \"q\"', {next_id}, '[1, 2.50]');"
                    ));
                }
            }
        }
        if !sql.is_empty() {
            pg.psql(&db, &sql);
        }
        let (whole, whole_records) = run(whole_state.clone(), || {
            Model::Whole(PostgresSource::open(&spec).unwrap())
        })
        .await;
        // The table (unique key: two joins) twice, then the query over it (one full join).
        // The second table round reads only the rows written since the first (its mark); the
        // query cannot (a mark holds for a table), and the first table round after it finds
        // none (the query's run forgot it).
        let is_table = round % 3 != 2;
        let diff_spec = if is_table { &table_spec } else { &spec };
        let since = kinesync::engine::diff_watermark(&mut *store.lock().unwrap()).unwrap();
        assert_eq!(since.is_some(), round % 3 != 0, "round {round}: {since:?}");
        let (diffed, diffed_records) =
            run(warehouse_state.clone(), || match PostgresDelta::open_since(
                diff_spec,
                &rows_table,
                since.as_deref(),
            )
            .unwrap()
            {
                DiffPlace::Warehouse(delta) => {
                    let expected = is_table && since.is_some();
                    assert_eq!(delta.since_last_complete_run(), expected, "round {round}");
                    Model::Diffed(delta)
                }
                DiffPlace::Kinesync { why, .. } => panic!("not diffed in the warehouse: {why}"),
            })
            .await;
        let left = kinesync::engine::diff_watermark(&mut *store.lock().unwrap()).unwrap();
        assert_eq!(
            left.is_some(),
            is_table,
            "round {round}: a complete run of a table leaves a mark"
        );
        assert_eq!(diffed_records, whole_records, "round {round}: {sql}");
        assert_eq!(counts(&diffed), counts(&whole), "round {round}: {sql}");
        assert!(diffed.diffed_at_source && !whole.diffed_at_source);
        // Only the rows that may need sending came; the whole side read every row.
        assert_eq!(
            diffed.rows_read,
            diffed.events.added + diffed.events.changed,
            "round {round}"
        );
        assert_eq!(
            whole.rows_read,
            whole.events.added + whole.events.changed + whole.events.unchanged
        );
        if round < 2 {
            assert_eq!(diffed.rows_read, 0, "nothing changed, nothing came");
            assert!(diffed_records.is_empty());
        }
    }
    // Both states hold the same keys, fingerprints and rows, none in doubt.
    let mut warehouse = BTreeMap::new();
    let mut after = None;
    loop {
        let mut store = store.lock().unwrap();
        let page = store.keys_after(after.as_deref(), 100).unwrap();
        let Some(last) = page.last().cloned() else {
            break;
        };
        let rows = store.rows(&page).unwrap();
        let seen = store.seen(&page).unwrap();
        for ((key, row), seen) in page.into_iter().zip(rows).zip(seen) {
            warehouse.insert(key, (seen.unwrap(), row.unwrap()));
        }
        after = Some(last);
    }
    let whole: BTreeMap<String, (Seen, Vec<u8>)> = whole_store
        .lock()
        .unwrap()
        .snapshot()
        .iter()
        .map(|(key, stored)| (key.clone(), (stored.seen(), stored.row.clone())))
        .collect();
    assert_eq!(warehouse, whole);
    assert!(
        whole
            .values()
            .all(|(seen, _)| matches!(seen, Seen::Acknowledged(_)))
    );
}

#[test]
fn keys_read_twice_or_of_types_the_join_cannot_match_are_never_diffed_wrong() {
    let pg = postgres();
    let db = pg.new_database("warehouse_diff_checks");
    let url = pg.url(&db);
    pg.psql(
        &db,
        "CREATE TABLE model (id int8 PRIMARY KEY, amount numeric(38,0));
         INSERT INTO model SELECT g, g FROM generate_series(1, 50) AS g;",
    );
    let (client, place) = Connection::new(url.clone()).connect().unwrap();
    let store = PostgresStore::open(client, place, "kinesync", "checks").unwrap();
    let rows_table = store.rows_table().to_owned();

    // A query whose key repeats: found in the same snapshot, before anything is read.
    let twice = PostgresSpec::new(
        Connection::new(url.clone()),
        "SELECT * FROM model UNION ALL SELECT * FROM model WHERE id = 7",
        "id",
    );
    let error = PostgresDelta::open(&twice, &rows_table)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("primary key 7") && error.contains("more than once"),
        "{error}"
    );

    // A table with a unique index on its key needs no count; one without is counted.
    pg.psql(
        &db,
        "CREATE TABLE loose AS SELECT * FROM model; INSERT INTO loose VALUES (3, 3);",
    );
    let mut loose = PostgresSpec::new(Connection::new(url.clone()), "SELECT * FROM loose", "id");
    loose.table = Some("\"loose\"".to_owned());
    let error = PostgresDelta::open(&loose, &rows_table)
        .unwrap_err()
        .to_string();
    assert!(error.contains("primary key 3"), "{error}");

    // A unique index that guarantees nothing is not trusted: one left invalid by a
    // concurrent build that met the duplicate, or one that child tables escape.
    pg.psql(&db, "CREATE TABLE invalid AS SELECT * FROM loose");
    let failed = std::panic::catch_unwind(|| {
        pg.psql(
            &db,
            "CREATE UNIQUE INDEX CONCURRENTLY invalid_id ON invalid (id)",
        )
    });
    assert!(
        failed.is_err(),
        "the index cannot be built over the duplicate"
    );
    pg.psql(
        &db,
        "CREATE TABLE parent (id int8 PRIMARY KEY, amount numeric(38,0));
         INSERT INTO parent VALUES (1, 1);
         CREATE TABLE child () INHERITS (parent);
         INSERT INTO child VALUES (1, 2);",
    );
    for table in ["invalid", "parent"] {
        let mut spec = PostgresSpec::new(
            Connection::new(url.clone()),
            format!("SELECT * FROM {table}"),
            "id",
        );
        spec.table = Some(format!("\"{table}\""));
        let error = PostgresDelta::open(&spec, &rows_table)
            .unwrap_err()
            .to_string();
        assert!(error.contains("more than once"), "{table}: {error}");
    }

    // A column named as the statement's own: the model is read whole, saying so.
    let named = PostgresSpec::new(
        Connection::new(url.clone()),
        "SELECT id, amount AS \"kinesync key\" FROM model",
        "id",
    );
    match PostgresDelta::open(&named, &rows_table).unwrap() {
        DiffPlace::Kinesync { why, .. } => assert!(why.contains("kinesync key"), "{why}"),
        DiffPlace::Warehouse(_) => panic!("a column named as the statement's own was joined"),
    }

    // A numeric key: the server's JSON of it is not always kinesync's, so the model is read
    // whole, and the reason says which cast to write.
    let numeric = PostgresSpec::new(
        Connection::new(url.clone()),
        "SELECT amount, id FROM model",
        "amount",
    );
    match PostgresDelta::open(&numeric, &rows_table).unwrap() {
        DiffPlace::Kinesync { mut source, why } => {
            assert!(why.contains("numeric") && why.contains("::text"), "{why}");
            assert_eq!(source.by_ref().count(), 50);
        }
        DiffPlace::Warehouse(_) => panic!("a numeric key was joined"),
    }
}
