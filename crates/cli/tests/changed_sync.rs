//! A changed config is not a changed model. The state keeps what defines the sync: a changed
//! primary key refuses to run and says how to start over (`kinesync reset`); a changed payload
//! or key is said in the summary and the report, and `--resync` sends every row again.

use std::path::Path;
use std::process::Output;

mod common;

use common::{command, example, sync};
use kinesync::state::{SqliteStore, StateStore};

fn edit(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "the example's config has {from:?}");
    std::fs::write(config, text.replacen(from, to, 1)).unwrap();
}

fn reset(config: &Path, extra: &[&str]) -> (Output, String) {
    command("reset", config, extra)
}

fn state_rows(dir: &Path) -> usize {
    SqliteStore::open(dir.join("kinesync-state.db"))
        .unwrap()
        .key_count()
        .unwrap()
}

#[test]
fn a_changed_primary_key_refuses_to_run_until_the_state_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");

    edit(&config, "primary_key = \"id\"", "primary_key = \"email\"");
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the primary key is \"email\"")
            && text.contains("keyed by \"id\"")
            && text.contains("kinesync reset"),
        "{text}"
    );
    assert!(!text.contains("removed 3"), "nothing was sent: {text}");
    assert_eq!(state_rows(dir.path()), 3, "the state is untouched");

    // Without a terminal to ask on, reset wants --yes, and leaves the state alone.
    let (output, text) = reset(&config, &[]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("--yes"), "{text}");
    assert_eq!(state_rows(dir.path()), 3);

    let (output, text) = reset(&config, &["--yes"]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("3 rows forgotten"), "{text}");
    assert_eq!(state_rows(dir.path()), 0);

    // A first run again, keyed by email: every row added, none removed.
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("added 3") && text.contains("removed 0"),
        "{text}"
    );
}

#[test]
fn reset_waits_for_no_run_it_refuses_while_one_holds_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let held = SqliteStore::open_for_run(dir.path().join("kinesync-state.db"), "run-a").unwrap();
    let (output, text) = reset(&config, &["--yes"]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("in use by") && text.contains("run-a"),
        "{text}"
    );
    drop(held);
    assert_eq!(state_rows(dir.path()), 3);
}

#[test]
fn a_changed_template_is_reported_and_a_resync_sends_every_row_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");

    // A new template, and a new partition key: no row changed, so nothing is sent, but the run
    // says what changed, in its summary and its report.
    let template = dir.path().join("user_event.liquid");
    std::fs::write(
        &template,
        r#"{"user": {{ row.id }}, "event": "{{ event }}", "was": {% if previous %}"{{ previous.plan }}"{% else %}null{% endif %}}"#,
    )
    .unwrap();
    edit(
        &config,
        "partition_key = \"email\"",
        "partition_key = \"id\"",
    );
    let report_path = dir.path().join("report.json");
    let report_arg = report_path.to_str().unwrap();
    let (output, text) = sync(&config, &["--report", report_arg]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("the sync changed since the last run (payload, partition key)")
            && text.contains("--resync")
            && text.contains("unchanged 3"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(
        report["sync_changed"],
        serde_json::json!(["payload", "partition_key"])
    );
    assert_eq!(report["records"]["to_send"], 0);

    // Said once: the next run knows the new definition.
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(!text.contains("the sync changed"), "{text}");

    // A resync sends every row again, as changed.
    let (output, text) = sync(&config, &["--resync", "--report", report_arg]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("resync: every row"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["events"]["changed"], 3, "{report}");
    assert_eq!(report["records"]["acknowledged"], 3, "{report}");
    assert_eq!(report["resync"], true);

    // And then nothing is left to send.
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("unchanged 3"), "{text}");
}
