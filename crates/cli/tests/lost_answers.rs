//! Lost answers, for real: the `kinesync` binary syncs into kinesalite through the test kit's
//! fault endpoint, which forwards each call (the records land) and then loses its answer:
//! drops the connection, or holds it while the process is killed with SIGKILL. The rows then
//! leave the model, and the next run, straight to kinesalite, must send their removals; the
//! stream is read back with the AWS SDK.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kinesync_testkit::fake_kinesis::{FakeKinesis, HttpFault};
use kinesync_testkit::probe::{KinesisProbe, aws_sink};
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::StreamName;
use kinesync_transport::conformance::{StreamProbe, unique_stream};

fn write_model(path: &Path, ids: impl IntoIterator<Item = u64>) {
    let text: String = ids
        .into_iter()
        .map(|id| format!("{{\"id\":{id},\"name\":\"user {id}\"}}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// A config named `name` in `dir`; every config there shares the model and the state.
fn write_config(dir: &Path, name: &str, stream: &str, endpoint: &str) -> PathBuf {
    let config = format!(
        r#"[source]
path = "model.ndjson"
primary_key = "id"

[payload]
mode = "template"
template = '{{"id": {{{{ row.id }}}}, "event": "{{{{ event }}}}", "rid": "{{{{ record.id }}}}", "run": "{{{{ record.run_id }}}}"}}'

[destination]
stream = "{stream}"
region = "us-east-1"
endpoint_url = "{endpoint}"

[destination.auth]
kind = "access_key"
access_key_id_env = "LOST_TEST_KEY_ID"
secret_access_key_env = "LOST_TEST_SECRET"

[sync]
max_attempts = 2
"#
    );
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    path
}

fn kinesync(config: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesync"));
    command
        .args(["sync", "--config"])
        .arg(config)
        .args(extra)
        .env("LOST_TEST_KEY_ID", "AKIDLOSTTEST")
        .env("LOST_TEST_SECRET", "lost-test-secret")
        .env("RUST_LOG", "warn");
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A stream in kinesalite, the fault endpoint in front of it, and a directory with the model
/// (ids 1..=100) and two configs of the same sync (one model, one state): one through the
/// endpoint, one straight to kinesalite.
struct Setup {
    stream: StreamName,
    probe: KinesisProbe,
    fake: FakeKinesis,
    dir: tempfile::TempDir,
    through_faults: PathBuf,
    direct: PathBuf,
}

async fn setup(prefix: &str) -> Setup {
    let server = kinesalite();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = unique_stream(prefix);
    probe.create_stream(&stream, 1).await;
    let fake = FakeKinesis::start(Arc::new(aws_sink(&server.endpoint).await)).await;
    let dir = tempfile::tempdir().unwrap();
    let through_faults = write_config(dir.path(), "faults.toml", stream.as_str(), &fake.endpoint);
    let direct = write_config(dir.path(), "direct.toml", stream.as_str(), &server.endpoint);
    write_model(&dir.path().join("model.ndjson"), 1..=100);
    Setup {
        stream,
        probe,
        fake,
        dir,
        through_faults,
        direct,
    }
}

/// One record as read back: its event, its record id and the run that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    event: String,
    record_id: String,
    run: String,
}

/// The records the stream holds per id, in order.
async fn sent(setup: &Setup) -> BTreeMap<u64, Vec<Sent>> {
    let mut by_id: BTreeMap<u64, Vec<Sent>> = BTreeMap::new();
    for record in setup.probe.read_back(&setup.stream).await {
        let message: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
        let text = |name: &str| message[name].as_str().unwrap().to_owned();
        by_id
            .entry(message["id"].as_u64().unwrap())
            .or_default()
            .push(Sent {
                event: text("event"),
                record_id: text("rid"),
                run: text("run"),
            });
    }
    by_id
}

/// The run id a sync printed (`run ID: ...`).
fn run_id(output: &Output) -> String {
    let text = text(output);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .unwrap_or_else(|| panic!("no run id in {text}"));
    line.split(':').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_dropped_after_landing_then_every_row_removed() {
    let setup = setup("lost-dropped").await;
    // Every PutRecords lands and loses its answer (the SDK's own retries too).
    setup
        .fake
        .fault_every("PutRecords", HttpFault::LandThenDrop);
    let config = setup.through_faults.clone();
    let first = tokio::task::spawn_blocking(move || kinesync(&config, &[]).output().unwrap())
        .await
        .unwrap();
    // No call got an answer: after max_attempts calls the run stops, saying why (exit 1).
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert!(
        text(&first).contains("pending 100") && text(&first).contains("2 calls in a row failed"),
        "{}",
        text(&first)
    );

    // Every row leaves the model (one new row comes in: a model without rows has no
    // columns); the removals are allowed for this run.
    write_model(&setup.dir.path().join("model.ndjson"), [101]);
    let config = setup.direct.clone();
    let second = tokio::task::spawn_blocking(move || {
        kinesync(&config, &["--allow-removals"]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));

    let mut sent = sent(&setup).await;
    sent.remove(&101).unwrap();
    assert_eq!(sent.len(), 100);
    let (first_run, second_run) = (run_id(&first), run_id(&second));
    for (id, got) in &sent {
        let (last, copies) = got.split_last().unwrap();
        assert!(
            last.event == "removed"
                && !copies.is_empty()
                && copies.iter().all(|s| s.event == "added"),
            "row {id}: its copies landed, then its removal: {got:?}"
        );
        // Every copy is one event: one record id, from the run that sent them; the removal is
        // a later event, with a greater id, from the next run.
        assert!(
            copies
                .iter()
                .all(|s| s.record_id == copies[0].record_id && s.run == first_run),
            "row {id}: {got:?}"
        );
        assert!(
            last.record_id > copies[0].record_id && last.run == second_run,
            "row {id}: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_a_call_that_landed_waits_for_its_answer() {
    let setup = setup("lost-killed").await;
    setup
        .fake
        .fault_every("PutRecords", HttpFault::LandThenHold);
    let mut child = kinesync(&setup.through_faults, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let held = tokio::time::timeout(Duration::from_secs(60), setup.fake.until_held()).await;
    assert!(
        held.is_ok(),
        "no call was held in 60 s (kinesync ended: {:?}; requests {:?})",
        child.try_wait().unwrap(),
        setup.fake.requests()
    );
    // `Child::kill` is SIGKILL: the process learns nothing more about its call.
    child.kill().unwrap();
    child.wait().unwrap();

    // 40 rows leave the model (under the removal threshold), 60 stay.
    write_model(&setup.dir.path().join("model.ndjson"), 41..=100);
    let config = setup.direct.clone();
    let second = tokio::task::spawn_blocking(move || kinesync(&config, &[]).output().unwrap())
        .await
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(text(&second).contains("removed 40"), "{}", text(&second));

    let sent = sent(&setup).await;
    assert_eq!(sent.len(), 100);
    for (id, got) in &sent {
        let events: Vec<&str> = got.iter().map(|s| s.event.as_str()).collect();
        if *id <= 40 {
            assert_eq!(events, ["added", "removed"], "row {id}");
            assert!(got[1].record_id > got[0].record_id, "row {id}: {got:?}");
        } else {
            // Sent again by the next run, as the same event: the same record id, from
            // another run, so that a consumer can drop the copy.
            assert_eq!(events, ["added", "added"], "row {id}");
            assert_eq!(got[1].record_id, got[0].record_id, "row {id}");
            assert_ne!(got[1].run, got[0].run, "row {id}");
        }
    }
}

/// A 503 to the run's first call, then calls whose records land and whose answers cannot be
/// read (a garbled body, one result short): the run retries the first and sends the others
/// again, and ends complete, every row in the stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_503_first_and_unreadable_answers_still_end_complete() {
    let setup = setup("lost-unreadable").await;
    for fault in [
        HttpFault::Status(503, "ServiceUnavailable"),
        HttpFault::Delay(Duration::ZERO),
        HttpFault::Delay(Duration::ZERO),
        HttpFault::Garble,
        HttpFault::ShortAnswer,
    ] {
        setup.fake.push_fault(fault);
    }
    // The default attempts: two unreadable answers in a row are within them.
    let config = setup.dir.path().join("default-attempts.toml");
    std::fs::write(
        &config,
        std::fs::read_to_string(&setup.through_faults)
            .unwrap()
            .replace("max_attempts = 2\n", ""),
    )
    .unwrap();
    let output = tokio::task::spawn_blocking(move || kinesync(&config, &[]).output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("acknowledged 100 of 100"),
        "{}",
        text(&output)
    );
    let sent = sent(&setup).await;
    assert_eq!(sent.len(), 100, "every row is in the stream");
    for (id, got) in &sent {
        // A copy that landed under an unreadable answer is the same event: the same id.
        assert!(
            got.iter()
                .all(|s| s.event == "added" && s.record_id == got[0].record_id),
            "row {id}: {got:?}"
        );
    }
}
