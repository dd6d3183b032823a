//! A table's diff in the warehouse from the last complete run's mark, on a real PostgreSQL
//! (the test kit's server): only the rows written since are read, and the mark is not trusted
//! whenever the table could read differently without any row being written (another table
//! renamed into its place, a column added), nor after a run that did not complete. Each
//! case checks what reached the stream, which is what a user sees.

use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use kinesync::engine::{Engine, Interrupt, Outcome, RunReport, SharedState};
use kinesync::payload::{Payload, PayloadSpec};
use kinesync::source::{Connection, DeltaSource, DiffPlace, PostgresDelta, PostgresSpec};
use kinesync::state::PostgresStore;
use kinesync::transport::{InMemorySink, StreamConfig, StreamName};
use kinesync::{KeySpec, RecordBuilder};
use kinesync_testkit::postgres::postgres;

/// A sync of the table `model` keyed by `id`, its state in the warehouse.
struct Sync {
    spec: PostgresSpec,
    store: Arc<Mutex<PostgresStore>>,
    rows_table: String,
}

/// What one run did.
struct Ran {
    report: RunReport,
    /// `event key` of each record, sorted.
    records: Vec<String>,
    /// Whether the diff read only the rows written since the last complete run.
    since: bool,
}

impl Sync {
    fn new(url: &str, name: &str) -> Self {
        let mut spec = PostgresSpec::new(Connection::new(url), "SELECT * FROM model", "id");
        spec.table = Some("model".to_owned());
        let (client, place) = Connection::new(url).connect().unwrap();
        let store = PostgresStore::open(client, place, "kinesync", name).unwrap();
        let rows_table = store.rows_table().to_owned();
        Self {
            spec,
            store: Arc::new(Mutex::new(store)),
            rows_table,
        }
    }

    fn mark(&self) -> Option<String> {
        kinesync::engine::diff_watermark(&mut *self.store.lock().unwrap()).unwrap()
    }

    /// One run, diffed in the warehouse from the state's mark; `interrupted` runs one that is
    /// asked to stop before it reads a row.
    async fn run(&self, interrupted: bool) -> Ran {
        let since = self.mark();
        let delta = match PostgresDelta::open_since(&self.spec, &self.rows_table, since.as_deref())
            .unwrap()
        {
            DiffPlace::Warehouse(delta) => delta,
            DiffPlace::Kinesync { why, .. } => panic!("not diffed in the warehouse: {why}"),
        };
        let since = delta.since_last_complete_run();
        let schema = delta.schema().clone();
        let sink = Arc::new(InMemorySink::new());
        let stream = StreamName::new("model").unwrap();
        sink.create_stream(&stream, StreamConfig::with_shards(1));
        let payload = Payload::compile(
            &PayloadSpec::template(r#"{"event": "{{ event }}", "row": {{ row | json }}}"#),
            schema.clone(),
        )
        .unwrap();
        let interrupt = Interrupt::new();
        if interrupted {
            interrupt.interrupt();
        }
        let state: SharedState = self.store.clone();
        let mut engine = Engine::builder()
            .records(RecordBuilder::new(
                payload,
                KeySpec::new(&schema, Some("id"), None).unwrap(),
            ))
            .sink(sink.clone(), stream.clone())
            .state_shared(state)
            .interrupt(interrupt)
            .build()
            .unwrap();
        let report = engine.run_delta(Box::new(delta)).await.unwrap();
        let mut records: Vec<String> = sink
            .records(&stream)
            .unwrap()
            .iter()
            .map(|r| {
                let message: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
                format!("{} {}", message["event"].as_str().unwrap(), r.partition_key)
            })
            .collect();
        records.sort();
        Ran {
            report,
            records,
            since,
        }
    }
}

fn complete(ran: &Ran) {
    assert_eq!(
        ran.report.outcome,
        Outcome::Complete,
        "{}",
        ran.report.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_written_since_the_last_complete_run_are_read_and_nothing_else() {
    let pg = postgres();
    let db = pg.new_database("since_mark");
    let url = pg.url(&db);
    pg.psql(
        &db,
        "CREATE TABLE model (id int8 PRIMARY KEY, n int8, label text);
         INSERT INTO model SELECT g, g, 'row ' || g FROM generate_series(1, 50) AS g;",
    );
    let sync = Sync::new(&url, "since");
    let first = sync.run(false).await;
    complete(&first);
    assert!(!first.since && first.report.events.added == 50);
    assert!(sync.mark().is_some(), "a complete run keeps a mark");

    // Nothing written: nothing read, and the run completes from the mark.
    let quiet = sync.run(false).await;
    complete(&quiet);
    assert!(quiet.since);
    assert_eq!((quiet.report.rows_read, quiet.records.len()), (0, 0));

    // A change, a row written back to what was sent, a removal, an addition.
    pg.psql(
        &db,
        "UPDATE model SET n = -n WHERE id = 3; UPDATE model SET label = label WHERE id = 4;
         DELETE FROM model WHERE id = 5; INSERT INTO model VALUES (51, 51, 'new');",
    );
    let changed = sync.run(false).await;
    complete(&changed);
    assert!(changed.since);
    assert_eq!(
        changed.records,
        ["added 51", "changed 3", "removed 5"],
        "the row written back unchanged is not sent"
    );
    // Only the rows written since the mark were fingerprinted (3, 4 and 51), and of those
    // only the two that need sending came.
    assert_eq!(changed.report.rows_read, 2);

    // A row written by a transaction still open when the diff took its snapshot is invisible
    // to that diff, and must be read by the next one, though it was written before that
    // diff's mark was taken.
    let (inserted, go_on) = (channel(), channel::<()>());
    let open_url = url.clone();
    let writer = std::thread::spawn(move || {
        let (mut client, _) = Connection::new(open_url).connect().unwrap();
        let mut transaction = client.transaction().unwrap();
        transaction
            .batch_execute("INSERT INTO model VALUES (52, 52, 'late')")
            .unwrap();
        inserted.0.send(()).unwrap();
        go_on.1.recv().unwrap();
        transaction.commit().unwrap();
    });
    inserted.1.recv().unwrap();
    let during = sync.run(false).await;
    complete(&during);
    assert!(during.records.is_empty(), "{:?}", during.records);
    go_on.0.send(()).unwrap();
    writer.join().unwrap();
    let after = sync.run(false).await;
    complete(&after);
    assert!(after.since);
    assert_eq!(after.records, ["added 52"]);

    // A run that does not complete forgets the mark: the next reads the whole table.
    pg.psql(&db, "UPDATE model SET n = n + 1 WHERE id = 10");
    let stopped = sync.run(true).await;
    assert_eq!(stopped.report.outcome, Outcome::Interrupted);
    assert_eq!(sync.mark(), None);
    let whole = sync.run(false).await;
    complete(&whole);
    assert!(!whole.since);
    assert_eq!(whole.records, ["changed 10"]);
    assert!(sync.mark().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_that_reads_differently_without_a_row_written_is_read_whole() {
    let pg = postgres();
    let db = pg.new_database("since_untrusted");
    let url = pg.url(&db);
    pg.psql(
        &db,
        "CREATE TABLE model (id int8 PRIMARY KEY, n int8);
         INSERT INTO model SELECT g, g FROM generate_series(1, 20) AS g;
         CREATE TABLE next_model (LIKE model INCLUDING ALL);
         INSERT INTO next_model SELECT * FROM model;
         UPDATE next_model SET n = 100 WHERE id = 7;",
    );
    let sync = Sync::new(&url, "untrusted");
    complete(&sync.run(false).await);
    let quiet = sync.run(false).await;
    assert!(quiet.since && quiet.records.is_empty());

    // Another table, written before the mark, renamed into the model's place: its rows are
    // older than the mark, and one differs from what was sent.
    pg.psql(
        &db,
        "ALTER TABLE model RENAME TO old_model; ALTER TABLE next_model RENAME TO model;",
    );
    let swapped = sync.run(false).await;
    complete(&swapped);
    assert!(!swapped.since, "the mark is for the table renamed away");
    assert_eq!(swapped.records, ["changed 7"]);

    // A column added with a default writes no row, and every row now reads with it.
    complete(&sync.run(false).await);
    pg.psql(&db, "ALTER TABLE model ADD COLUMN flag bool DEFAULT true");
    let added = sync.run(false).await;
    complete(&added);
    assert!(!added.since, "the mark is for the columns before");
    assert_eq!(added.records.len(), 20);
    assert!(added.records.iter().all(|r| r.starts_with("changed ")));

    // An enum's label can be renamed without writing a row: a table with enums (in an array,
    // which kinesync reads as JSON) is never read from a mark, and none is kept.
    pg.psql(
        &db,
        "CREATE TYPE mood AS ENUM ('calm', 'busy');
         ALTER TABLE model ADD COLUMN moods mood[] DEFAULT ARRAY['calm']::mood[];",
    );
    complete(&sync.run(false).await);
    assert_eq!(sync.mark(), None);
    pg.psql(&db, "ALTER TYPE mood RENAME VALUE 'calm' TO 'still'");
    let renamed = sync.run(false).await;
    complete(&renamed);
    assert!(!renamed.since);
    assert_eq!(renamed.records.len(), 20, "every row reads 'still' now");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_that_does_not_add_up_to_its_mark_has_every_row_diffed() {
    let pg = postgres();
    let db = pg.new_database("since_tampered");
    let url = pg.url(&db);
    pg.psql(
        &db,
        "CREATE TABLE model (id int8 PRIMARY KEY, n int8);
         INSERT INTO model SELECT g, g FROM generate_series(1, 30) AS g;",
    );
    let sync = Sync::new(&url, "tampered");
    complete(&sync.run(false).await);
    assert!(sync.mark().is_some());

    // The state changed behind kinesync's back: a key it never sent appears in it (copied
    // from another) and in the table, and an old row's stored fingerprint is spoiled. The
    // counts then say fewer than no keys were removed: the rows not written since the mark
    // are diffed too, and the spoiled one is sent again.
    pg.psql(
        &db,
        &format!(
            "INSERT INTO {state} SELECT '31', fingerprint, row, doubt FROM {state} WHERE key = '30';
             UPDATE {state} SET fingerprint = decode('00000000000000000000000000000001', 'hex')
               WHERE key = '8';
             INSERT INTO model VALUES (31, 31);",
            state = sync.rows_table
        ),
    );
    let tampered = sync.run(false).await;
    complete(&tampered);
    assert!(tampered.since, "the diff starts from the mark");
    assert_eq!(tampered.records, ["changed 31", "changed 8"]);
    assert!(
        sync.mark().is_some(),
        "the run completed, so it keeps a mark"
    );

    // And the state adds up again.
    let quiet = sync.run(false).await;
    complete(&quiet);
    assert!(
        quiet.since && quiet.records.is_empty(),
        "{:?}",
        quiet.records
    );
}
