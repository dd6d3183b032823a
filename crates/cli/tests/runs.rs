//! `kinesync runs` keeps every run that started, even one that stopped before its first
//! PutRecords: with its error, and the calls it made (here: kinesalite on loopback, started by
//! the test, answering DescribeStreamSummary for a stream that does not exist).

use std::path::Path;
use std::process::{Command, Output};

use kinesync_testkit::servers::kinesalite;

fn kinesync(config: &Path, args: &[&str]) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("TEST_KEY_ID", "AKIDRUNSTEST")
        .env("TEST_SECRET", "runs-secret-value-must-never-print")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the kinesync binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains("runs-secret-value-must-never-print"),
        "the secret leaked: {text}"
    );
    (output, text)
}

#[test]
fn a_run_that_stops_at_describe_stream_is_listed_with_its_error_and_call() {
    let server = kinesalite();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.ndjson"),
        "{\"id\": 1, \"email\": \"ada@example.com\"}\n",
    )
    .unwrap();
    let config = dir.path().join("kinesync.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\npath = \"users.ndjson\"\nprimary_key = \"id\"\n\n[payload]\nmode = \"row\"\n\n\
             [destination]\nstream = \"No-Such-Stream\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n\
             [destination.auth]\nkind = \"access_key\"\naccess_key_id_env = \"TEST_KEY_ID\"\nsecret_access_key_env = \"TEST_SECRET\"\n",
            server.endpoint
        ),
    )
    .unwrap();

    let (output, text) = kinesync(&config, &["sync"]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("stream_not_found"), "{text}");

    let (output, listed) = kinesync(&config, &["runs"]);
    assert_eq!(output.status.code(), Some(0), "{listed}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(
        lines[0].contains("failed") && lines[0].contains("No-Such-Stream"),
        "{listed}"
    );

    let (output, shown) = kinesync(&config, &["runs", "show", "latest"]);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(shown.contains("stopped on an error"), "{shown}");
    assert!(shown.contains("1 API call:"), "{shown}");
    assert!(
        shown.contains("DescribeStreamSummary") && shown.contains("stream_not_found"),
        "{shown}"
    );
    assert!(shown.contains("ResourceNotFoundException"), "{shown}");
    assert!(!shown.contains("PutRecords"), "{shown}");
}
