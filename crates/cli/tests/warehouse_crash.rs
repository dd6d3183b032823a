//! Crash recovery with the model and the state in PostgreSQL (the test kit's server): the
//! binary syncs a table into kinesalite and is killed with SIGKILL mid-run, during the backfill
//! and during a run after an UPDATE, DELETE and INSERT, then run again. Read back, the stream
//! holds every row's events, in order per key, none missing; and a last run has nothing left
//! to send: the state in the warehouse holds exactly what the stream acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kinesync_testkit::postgres::postgres;
use kinesync_testkit::probe::KinesisProbe;
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance::{StreamProbe, unique_stream};

mod common;

const ROWS: i64 = 20_000;
const URL_VARIABLE: &str = "KINESYNC_TEST_WAREHOUSE_URL";

fn write_config(dir: &Path, stream: &str, endpoint: &str) -> PathBuf {
    let destination = common::endpoint_destination(stream, endpoint);
    let config = format!(
        r#"[source]
format = "postgres"
connection_env = "{URL_VARIABLE}"
table = "model"
primary_key = "id"

[payload]
mode = "template"
template = '{{"id": {{{{ row.id }}}}, "version": {{{{ row.version }}}}, "event": "{{{{ event }}}}"}}'

{destination}
[sync]
max_in_flight = 4
state_schema = "kinesync"
"#
    );
    let path = dir.join("kinesync.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn command(config: &Path, url: &str) -> Command {
    let mut command = common::sync_command(config);
    command.env(URL_VARIABLE, url);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_runs_with_the_state_in_the_warehouse_lose_nothing() {
    let pg = postgres();
    let db = pg.new_database("warehouse_crash");
    let url = pg.url(&db);
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE model (id int8 PRIMARY KEY, version int4 NOT NULL);
             INSERT INTO model SELECT g, 1 FROM generate_series(1, {ROWS}) AS g;"
        ),
    );
    let server = kinesalite();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = unique_stream("warehouse-crash");
    probe.create_stream(&stream, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), stream.as_str(), &server.endpoint);
    let runs = dir.path().join("kinesync-runs");

    // The backfill, killed twice, then finished.
    let (config_ref, url_ref, runs_ref) = (config.clone(), url.clone(), runs.clone());
    tokio::task::spawn_blocking(move || {
        common::run_and_kill(command(&config_ref, &url_ref), &runs_ref, 4);
        common::run_and_kill(command(&config_ref, &url_ref), &runs_ref, 12);
        common::run_command_to_completion(command(&config_ref, &url_ref))
    })
    .await
    .unwrap();

    // Every 7th row changed, every 11th removed, 500 added; killed once, then finished.
    pg.psql(
        &db,
        &format!(
            "UPDATE model SET version = 2 WHERE id % 7 = 0;
             DELETE FROM model WHERE id % 11 = 0;
             INSERT INTO model SELECT g, 1 FROM generate_series({}, {}) AS g;",
            ROWS + 1,
            ROWS + 500
        ),
    );
    let (config_ref, url_ref, runs_ref) = (config.clone(), url.clone(), runs.clone());
    let settled = tokio::task::spawn_blocking(move || {
        common::run_and_kill(command(&config_ref, &url_ref), &runs_ref, 3);
        common::run_command_to_completion(command(&config_ref, &url_ref));
        common::run_command_to_completion(command(&config_ref, &url_ref))
    })
    .await
    .unwrap();
    assert!(
        settled.contains("records acknowledged 0 of 0"),
        "the state equals the model: {settled}"
    );

    // The events each row must have had, in order.
    let mut expected: BTreeMap<i64, Vec<(i64, &str)>> = BTreeMap::new();
    for id in 1..=ROWS {
        let events = expected.entry(id).or_default();
        events.push((1, "added"));
        if id % 11 == 0 {
            events.push((1, "removed"));
        } else if id % 7 == 0 {
            events.push((2, "changed"));
        }
    }
    for id in ROWS + 1..=ROWS + 500 {
        expected.entry(id).or_default().push((1, "added"));
    }

    let mut seen: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    for record in probe.read_back(&stream).await {
        let message: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
        seen.entry(message["id"].as_i64().unwrap())
            .or_default()
            .push((
                message["version"].as_i64().unwrap(),
                message["event"].as_str().unwrap().to_owned(),
            ));
    }
    for (id, want) in &expected {
        let got = seen
            .get(id)
            .unwrap_or_else(|| panic!("row {id}: nothing in the stream"));
        let mut distinct: Vec<(i64, &str)> = Vec::new();
        for (version, event) in got {
            if distinct.last() != Some(&(*version, event.as_str())) {
                distinct.push((*version, event));
            }
        }
        assert_eq!(&distinct, want, "row {id}: the stream holds {got:?}");
    }
    // The state's table is named after the stream.
    let table = pg
        .psql(
            &db,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'kinesync' AND tablename LIKE '%_rows'",
        )
        .trim()
        .to_owned();
    let count = pg.psql(&db, &format!("SELECT count(*) FROM kinesync.\"{table}\""));
    assert_eq!(
        count.trim().parse::<i64>().unwrap(),
        ROWS - ROWS / 11 + 500,
        "the state holds the model's rows"
    );
}
