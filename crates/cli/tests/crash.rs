//! Crash recovery, for real: the `kinesync` binary syncs a 50,000-row model into kinesalite
//! (started by the test) and is killed with SIGKILL mid-run, during the backfill and during an
//! incremental run, then run again. The whole stream is read back: every row's latest version
//! is there, no event is missing, per-key order holds, and the duplicates are no more than
//! what can have been in flight at the kills.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kinesync_testkit::probe::KinesisProbe;
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance::{StreamProbe, unique_stream};

mod common;

const ROWS: u64 = 50_000;
/// `[sync] max_in_flight` of the test's config: at most this many calls of 500 records can be
/// out when the process dies.
const MAX_IN_FLIGHT: u64 = 4;
/// Acknowledged calls whose commit may still be queued for the state's writer thread when the
/// process dies: with the calls in flight, what a kill can make the next run send again.
const COMMITS_QUEUED: u64 = kinesync::state::COMMITS_AHEAD as u64;

/// The model: `id → version`; the message carries both, so the stream says which version of
/// which row each record is.
fn write_model(path: &Path, model: &BTreeMap<u64, u64>) {
    let mut text = String::with_capacity(model.len() * 64);
    for (id, version) in model {
        text.push_str(&format!(
            "{{\"id\":{id},\"version\":{version},\"email\":\"user{id}@example.com\"}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn write_config(dir: &Path, stream: &str, endpoint: &str) -> PathBuf {
    let destination = common::endpoint_destination(stream, endpoint);
    let config = format!(
        r#"[source]
path = "model.ndjson"
primary_key = "id"

[payload]
mode = "template"
template = '{{"id": {{{{ row.id }}}}, "version": {{{{ row.version }}}}, "event": "{{{{ event }}}}"}}'

{destination}
[sync]
max_in_flight = {MAX_IN_FLIGHT}
"#
    );
    let path = dir.join("kinesync.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs kinesync and kills it (SIGKILL) once `calls` more calls have been logged.
fn run_and_kill(config: &Path, calls: usize) {
    common::run_and_kill(
        common::sync_command(config),
        &config.parent().unwrap().join("kinesync-runs"),
        calls,
    );
}

/// One record as read back: which row, which version, which event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    version: u64,
    kind: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_runs_lose_nothing_and_keep_per_key_order() {
    let server = kinesalite();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = unique_stream("crash");
    probe.create_stream(&stream, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), stream.as_str(), &server.endpoint);
    let model_path = dir.path().join("model.ndjson");

    // The events every row must see, in order.
    let mut expected: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    let mut model: BTreeMap<u64, u64> = (1..=ROWS).map(|id| (id, 1)).collect();
    for id in model.keys() {
        expected.entry(*id).or_default().push(Event {
            version: 1,
            kind: "added".into(),
        });
    }
    write_model(&model_path, &model);

    // The backfill, killed twice, then finished.
    let config_ref = config.clone();
    tokio::task::spawn_blocking(move || {
        run_and_kill(&config_ref, 5);
        run_and_kill(&config_ref, 30);
        common::run_to_completion(&config_ref)
    })
    .await
    .unwrap();
    let kills = 2;

    // An incremental run: every 7th row changed, every 11th removed, 1,000 rows added.
    // (A removed row's event carries the version last sent.)
    let removed: Vec<u64> = model.keys().copied().filter(|id| id % 11 == 0).collect();
    for id in &removed {
        let version = model.remove(id).unwrap();
        expected.get_mut(id).unwrap().push(Event {
            version,
            kind: "removed".into(),
        });
    }
    for (id, version) in &mut model {
        if id % 7 == 0 {
            *version = 2;
            expected.get_mut(id).unwrap().push(Event {
                version: 2,
                kind: "changed".into(),
            });
        }
    }
    for id in ROWS + 1..=ROWS + 1000 {
        model.insert(id, 1);
        expected.entry(id).or_default().push(Event {
            version: 1,
            kind: "added".into(),
        });
    }
    write_model(&model_path, &model);
    let config_ref = config.clone();
    let last = tokio::task::spawn_blocking(move || {
        run_and_kill(&config_ref, 3);
        common::run_to_completion(&config_ref)
    })
    .await
    .unwrap();
    let kills = kills + 1;
    assert!(last.contains("complete"), "{last}");

    // A run after all that has nothing left to send.
    let config_ref = config.clone();
    let settled = tokio::task::spawn_blocking(move || common::run_to_completion(&config_ref))
        .await
        .unwrap();
    assert!(
        settled.contains("records acknowledged 0 of 0"),
        "the state equals the model: {settled}"
    );

    // Each killed run is kept as interrupted, with the calls it made before it died.
    let listed = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["runs", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(
        listed.matches("interrupted (no report;").count() as u64,
        kills,
        "{listed}"
    );
    assert_eq!(listed.matches("complete").count(), 3, "{listed}");

    // Read the whole stream back.
    let stored = probe.read_back(&stream).await;
    let mut seen: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    for record in &stored {
        let message: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
        let id = message["id"].as_u64().unwrap();
        assert_eq!(record.partition_key.as_str(), id.to_string());
        seen.entry(id).or_default().push(Event {
            version: message["version"].as_u64().unwrap(),
            kind: message["event"].as_str().unwrap().to_owned(),
        });
    }

    let mut duplicates = 0u64;
    for (id, want) in &expected {
        let got = seen
            .get(id)
            .unwrap_or_else(|| panic!("row {id}: nothing in the stream"));
        // The records of one key are on one shard, in the order the stream took them. With
        // repeats removed they must be exactly the row's events, in order: none missing,
        // none out of order, nothing that was not an event.
        let mut distinct: Vec<&Event> = Vec::new();
        for event in got {
            if distinct.last() == Some(&event) {
                duplicates += 1;
            } else {
                distinct.push(event);
            }
        }
        assert_eq!(
            distinct,
            want.iter().collect::<Vec<_>>(),
            "row {id}: the stream holds {got:?}"
        );
    }
    assert_eq!(
        seen.keys().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "no record for a row the model never had"
    );
    // A kill can only repeat records the stream took but the state had not yet written: calls
    // in flight, and acknowledged calls whose commit was still queued; 500 records each.
    // (One more batch: the one the writer may have been in the middle of writing.)
    let bound = kills * (MAX_IN_FLIGHT + COMMITS_QUEUED + 1) * 500;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, more than the {bound} that can be in flight at {kills} kills"
    );
    eprintln!("{duplicates} duplicates after {kills} kills (bound {bound})");
    let events: usize = expected.values().map(Vec::len).sum();
    assert_eq!(stored.len() as u64, events as u64 + duplicates);
}
