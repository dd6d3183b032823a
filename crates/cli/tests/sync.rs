//! `kinesync sync` on the example model and a simulated stream, as a user runs it: a backfill,
//! a run with nothing to send, runs after edits, the JSON report, and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn example(dir: &Path) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/users");
    for file in ["kinesync.toml", "users.ndjson", "user_event.liquid"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    dir.join("kinesync.toml")
}

fn sync(config: &Path, extra: &[&str]) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .arg("sync")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[test]
fn the_example_syncs_then_sends_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("records acknowledged 3 of 3"), "{stdout}");
    assert!(
        stdout.contains("simulated stream users (4 shards)"),
        "{stdout}"
    );
    assert!(
        dir.path().join("kinesync-state.db").exists(),
        "the state lives beside the config"
    );

    let (_, stdout) = sync(&config, &[]);
    assert!(
        stdout.contains("unchanged 3") && stdout.contains("records acknowledged 0 of 0"),
        "{stdout}"
    );

    // Edit one user, drop another.
    let model = std::fs::read_to_string(dir.path().join("users.ndjson")).unwrap();
    let mut lines: Vec<String> = model.lines().map(str::to_owned).collect();
    lines[0] = lines[0].replace("ada@example.com", "ada@lovelace.example.com");
    lines.pop();
    std::fs::write(dir.path().join("users.ndjson"), lines.join("\n") + "\n").unwrap();
    let report = dir.path().join("report.json");
    let (output, stdout) = sync(&config, &["--report", report.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout.contains("changed 1 · removed 1 · unchanged 1"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(report["outcome"]["status"], "complete");
    assert_eq!(report["records"]["acknowledged"], 2);
}

#[test]
fn a_row_in_error_exits_two_and_a_bad_template_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let model = std::fs::read_to_string(dir.path().join("users.ndjson")).unwrap();
    std::fs::write(
        dir.path().join("users.ndjson"),
        model.replace("\"email\": \"alan@example.com\"", "\"email\": \"\""),
    )
    .unwrap();
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("row errors 1"), "{stdout}");

    std::fs::write(
        dir.path().join("user_event.liquid"),
        "{\"x\": {{ row.nope }}}",
    )
    .unwrap();
    let (output, _) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no column `nope`"));
}
