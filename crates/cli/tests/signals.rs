//! SIGTERM (a scheduler stopping a job) and SIGINT (Ctrl-C) stop a run cleanly: no new row or
//! call, the calls in flight finish and are committed, the report says interrupted, the exit
//! code is 143 or 130; the next run sends the rest and nothing acknowledged again.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: u64 = 400_000;

fn write_model(dir: &Path) {
    let mut text = String::with_capacity(ROWS as usize * 40);
    for id in 1..=ROWS {
        text.push_str(&format!(
            "{{\"id\":{id},\"email\":\"user{id}@example.com\"}}\n"
        ));
    }
    std::fs::write(dir.join("model.ndjson"), text).unwrap();
    std::fs::write(
        dir.join("kinesync.toml"),
        "[source]\npath = \"model.ndjson\"\nprimary_key = \"id\"\n\n[payload]\nmode = \"row\"\n\n\
         [destination]\nstream = \"signals\"\nsimulated = { shards = 4, unlimited = true }\n",
    )
    .unwrap();
}

fn kinesync(dir: &Path, report: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesync"));
    command
        .args(["sync", "--config"])
        .arg(dir.join("kinesync.toml"))
        .args(["--report"])
        .arg(dir.join(report))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// PutRecords calls logged so far by the only run under `dir`.
fn calls_logged(dir: &Path) -> usize {
    let Ok(runs) = std::fs::read_dir(dir.join("kinesync-runs")) else {
        return 0;
    };
    runs.filter_map(Result::ok)
        .map(|run| {
            std::fs::read_to_string(run.path().join("calls.jsonl"))
                .map(|text| text.lines().filter(|l| l.contains("PutRecords")).count())
                .unwrap_or(0)
        })
        .sum()
}

fn report(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn stop_with(signal: &str, expected_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path());
    let child = kinesync(dir.path(), "first.json").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while calls_logged(dir.path()) < 3 {
        assert!(Instant::now() < deadline, "no calls in 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(expected_code), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    let first = report(dir.path(), "first.json");
    assert_eq!(first["outcome"]["status"], "interrupted", "{first}");
    let acknowledged = first["records"]["acknowledged"].as_u64().unwrap();
    assert!(
        acknowledged > 0 && acknowledged < ROWS,
        "stopped part way: {first}"
    );

    // The next run sends exactly the rest: nothing acknowledged goes out again.
    let output = kinesync(dir.path(), "second.json").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let second = report(dir.path(), "second.json");
    assert_eq!(
        second["events"]["added"].as_u64().unwrap(),
        ROWS - acknowledged
    );
    assert_eq!(
        second["events"]["unchanged"].as_u64().unwrap(),
        acknowledged
    );
}

#[test]
fn sigterm_stops_the_run_cleanly_with_exit_143() {
    stop_with("-TERM", 143);
}

#[test]
fn sigint_stops_the_run_cleanly_with_exit_130() {
    stop_with("-INT", 130);
}
