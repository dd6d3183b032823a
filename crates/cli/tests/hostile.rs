//! Hostile values and bad settings through the binary: each is a clear error or a row error
//! naming its row, found before anything is sent where it can be; nothing panics, and a
//! report keeps no part of a message unless asked.

use std::path::{Path, PathBuf};

mod common;

/// A model of `rows` (NDJSON lines) and a config with `payload` and `sync` sections, into a
/// simulated stream.
fn setup(dir: &Path, rows: &str, payload: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("model.ndjson"), rows).unwrap();
    let config = format!(
        "[source]\npath = \"model.ndjson\"\nprimary_key = \"id\"\n\n[payload]\n{payload}\n\n[destination]\nstream = \"hostile\"\nsimulated = {{ shards = 2 }}\n\n{extra}\n"
    );
    let path = dir.join("kinesync.toml");
    std::fs::write(&path, config).unwrap();
    path
}

const ROWS: &str = "{\"id\":1,\"n\":5}\n{\"id\":2,\"n\":-9223372036854775808}\n{\"id\":3,\"n\":9223372036854775807}\n";

#[test]
fn integer_overflow_in_a_template_is_a_row_error_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        ROWS,
        "mode = \"template\"\ntemplate = '{\"q\": {{ row.n | divided_by: -1 }}, \"r\": {{ row.n | plus: 1 }}}'",
        "",
    );
    let (output, text) = common::sync(&config, &[]);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("records acknowledged 1 of 1"), "{text}");
    assert!(
        text.contains("divided_by: -1 is beyond the 64-bit integers"),
        "row 2: {text}"
    );
    assert!(
        text.contains("plus: 1 is beyond the 64-bit integers"),
        "row 3: {text}"
    );
    // The run is kept, and the next one says the same (nothing stuck).
    let (again, text) = common::sync(&config, &[]);
    assert_eq!(again.status.code(), Some(2), "{text}");
    assert!(
        text.contains("2 rows are in error") && !text.contains("pending and will be sent"),
        "nothing is pending, the errors are the rows': {text}"
    );
}

#[test]
fn an_unwritable_report_path_stops_the_run_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), ROWS, "mode = \"row\"", "");
    let report = dir.path().join("no-such-dir").join("report.json");
    let (output, text) = common::sync(&config, &["--report", report.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("checked before the run, so nothing was sent"),
        "{text}"
    );
    assert!(!text.contains("sync starting"), "{text}");
    assert!(
        !dir.path().join("kinesync-state.db").exists(),
        "no state was written: nothing was sent"
    );
}

#[test]
fn bad_settings_are_named_alone_with_their_range() {
    let dir = tempfile::tempdir().unwrap();
    for (sync, destination, expected) in [
        (
            "[sync]\nmax_in_flight = 0",
            None,
            "max_in_flight must be 1..=256, not 0",
        ),
        (
            "[sync]\nmax_in_flight = 100000",
            None,
            "max_in_flight must be 1..=256, not 100000",
        ),
        ("[sync]\nstate = \"\"", None, "[sync] state is empty"),
        (
            "",
            Some("simulated = { shards = 100001 }"),
            "a simulated stream has 1 to 100000 shards",
        ),
        (
            "[sync]\naggregate_max_bytes = 4096",
            None,
            "aggregate_max_bytes is set but aggregate is not",
        ),
    ] {
        let config = setup(dir.path(), ROWS, "mode = \"row\"", sync);
        if let Some(destination) = destination {
            let text = std::fs::read_to_string(&config)
                .unwrap()
                .replace("simulated = { shards = 2 }", destination);
            std::fs::write(&config, text).unwrap();
        }
        let (output, text) = common::sync(&config, &[]);
        assert_eq!(output.status.code(), Some(1), "{sync}: {text}");
        assert!(text.contains(expected), "{sync}: {text}");
        assert!(
            !text.contains("panicked") && !text.contains("sync starting"),
            "{text}"
        );
    }
}

#[test]
fn a_report_keeps_no_part_of_a_message_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    // Plain Liquid writes the name unquoted: not JSON, and the error quotes the output.
    let config = setup(
        dir.path(),
        "{\"id\":1,\"name\":\"Ada Secretname\"}\n",
        "mode = \"template\"\nescape = \"none\"\ntemplate = '{\"name\": {{ row.name }}}'",
        "",
    );
    let report = dir.path().join("report.json");
    let report_arg = report.to_str().unwrap();
    let (output, _) = common::sync(&config, &["--report", report_arg]);
    assert_eq!(output.status.code(), Some(2));
    let kept = std::fs::read_to_string(&report).unwrap();
    assert!(kept.contains("not valid JSON"), "{kept}");
    assert!(
        !kept.contains("Secretname"),
        "the row's data is in the report: {kept}"
    );
    let (_, _) = common::sync(&config, &["--report", report_arg, "--debug-payloads"]);
    let kept = std::fs::read_to_string(&report).unwrap();
    assert!(
        kept.contains("Secretname"),
        "asked for, the excerpt is kept: {kept}"
    );
}

#[test]
fn preview_finds_what_sync_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(2 * 1024 * 1024);
    let rows = format!(
        "{{\"id\":1,\"v\":\"a\"}}\n{{\"id\":2,\"v\":\"{big}\"}}\n{{\"id\":1,\"v\":\"again\"}}\n"
    );
    let config = setup(dir.path(), &rows, "mode = \"row\"", "");
    let (output, text) = common::command("preview", &config, &[]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        &text[..text.len().min(2000)]
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["data"].is_object());
    assert_eq!(lines[1]["error"]["kind"], "record_too_large");
    assert_eq!(lines[2]["error"]["kind"], "duplicate_primary_key");
}

/// `kinesync check` on a real (unreachable or misnamed) destination, with `HOME` in `dir`.
fn check_destination(dir: &Path, destination: &str) -> (Option<i32>, String) {
    let config = setup(dir, ROWS, "mode = \"row\"", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("simulated = { shards = 2 }", destination);
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["check", "--config"])
        .arg(&config)
        .env("HOME", dir)
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env("HOSTILE_KEY_ID", "AKIDHOSTILE")
        .env("HOSTILE_SECRET", "hostile-secret")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[test]
fn a_host_that_does_not_resolve_is_named_with_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = check_destination(
        dir.path(),
        "region = \"us-east-1\"\nendpoint_url = \"http://no-such-host.invalid:4567\"\n[destination.auth]\nkind = \"access_key\"\naccess_key_id_env = \"HOSTILE_KEY_ID\"\nsecret_access_key_env = \"HOSTILE_SECRET\"",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("endpoint http://no-such-host.invalid:4567")
            && text.contains("did not resolve"),
        "{text}"
    );
    assert!(!text.contains("hostile-secret"), "{text}");
}

#[test]
fn a_profile_that_is_not_defined_says_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = check_destination(
        dir.path(),
        "region = \"us-east-1\"\n[destination.auth]\nkind = \"profile\"\nprofile = \"nope\"",
    );
    assert_eq!(code, Some(1), "{text}");
    let config_file = dir.path().join(".aws").join("config");
    assert!(
        text.contains("profile \"nope\" is not defined")
            && text.contains(&config_file.display().to_string()),
        "{text}"
    );
}
