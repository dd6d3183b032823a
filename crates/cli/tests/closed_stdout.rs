//! A closed stdout (`kinesync sync | head -1`, `kinesync runs | head -0`) ends the output
//! quietly: no panic, and the exit code is the work's (a sync's records were sent and committed
//! before it printed anything, and its report is still written).

use std::process::{Command, Stdio};

mod common;

use common::example;

/// Runs kinesync with its stdout a pipe whose reading end is closed before it writes.
fn with_stdout_closed(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_changes_no_exit_code_and_loses_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let config = config.to_str().unwrap();
    let report = dir.path().join("report.json");
    let (code, stderr) = with_stdout_closed(&[
        "sync",
        "--config",
        config,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(written["records"]["acknowledged"], 3);

    for args in [
        vec!["runs", "--config", config],
        vec!["runs", "show", "latest", "--config", config],
        vec!["preview", "--config", config],
        vec!["reset", "--config", config, "--yes"],
    ] {
        let (code, stderr) = with_stdout_closed(&args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
