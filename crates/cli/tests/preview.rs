//! `kinesync preview`, run as a user runs it: the built binary, on the fixtures.

use std::process::{Command, Output};

use kinesync_fixtures::{fixture, machine_independent};
use serde_json::Value;

fn kinesync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(args)
        .output()
        .expect("the kinesync binary runs")
}

fn config(name: &str) -> String {
    fixture(&format!("configs/{name}.toml"))
        .display()
        .to_string()
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

#[test]
fn prints_one_json_line_per_row_with_keys_shard_and_message() {
    let output = kinesync(&["preview", "--config", &config("template_file")]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "some fixture rows are in error"
    );
    let lines = lines(&output);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["primary_key"], 1);
    assert_eq!(lines[0]["partition_key"], "u-1");
    assert_eq!(lines[0]["explicit_hash_key"], "0");
    assert_eq!(
        lines[0]["shard"], "shardId-000000000000",
        "hash key 0 is on the first shard"
    );
    assert_eq!(lines[0]["data"]["name"], "Ada Lovelace");
    assert_eq!(
        lines[1]["shard"], "shardId-000000000003",
        "hash key 2^128-1 is on the last shard"
    );
    assert_eq!(lines[1]["data"]["name"], "Grace \"Amazing\" Hopper\\Navy");
    assert_eq!(lines[3]["primary_key"], 4);
    assert_eq!(lines[3]["error"]["kind"], "partition_key");
    assert!(
        lines[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("partition key is empty")
    );
    assert_eq!(
        lines[2]["primary_key"], 9223372036854775807_i64,
        "large keys stay exact"
    );
}

#[test]
fn exits_zero_when_every_row_renders() {
    let output = kinesync(&["preview", "--config", &config("row")]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(lines(&output).len(), 5);
}

#[test]
fn limit_shards_and_event_options() {
    let output = kinesync(&[
        "preview",
        "--config",
        &config("template_inline"),
        "--limit",
        "2",
        "--shards",
        "1",
        "--event",
        "removed",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let lines = lines(&output);
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["shard"], "shardId-000000000000");
        assert_eq!(line["data"]["event"], "removed");
    }
    let changed = kinesync(&[
        "preview",
        "--config",
        &config("template_inline"),
        "--event",
        "changed",
        "--limit",
        "1",
    ]);
    assert_eq!(self::lines(&changed)[0]["data"]["event"], "changed");
    let bad = kinesync(&["preview", "--config", &config("row"), "--event", "deleted"]);
    assert_eq!(bad.status.code(), Some(2), "clap usage errors exit 2");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected added, changed or removed"));
}

#[test]
fn rows_can_come_from_another_file() {
    let rows = fixture("models/users.csv").display().to_string();
    let output = kinesync(&[
        "preview",
        "--config",
        &config("escape_none"),
        "--rows",
        &rows,
    ]);
    let lines = lines(&output);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["primary_key"], "1", "CSV values are strings");
}

#[test]
fn compile_errors_print_like_a_compiler_and_exit_one() {
    let output = kinesync(&["preview", "--config", &config("template_errors")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "nothing is previewed when the template does not compile"
    );
    let stderr = machine_independent(&String::from_utf8(output.stderr).unwrap());
    assert!(
        stderr.contains("error: `row` has no column `frist_name`; did you mean \"first_name\"?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--> fixtures/configs/template_errors.toml:9:19"),
        "{stderr}"
    );
    assert!(
        stderr.contains("9 |   \"name\": \"{{ row.frist_name }}\",\n  |                   ^"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--> fixtures/configs/template_errors.toml:10:27"),
        "{stderr}"
    );
}

#[test]
fn configuration_mistakes_exit_one_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(&path, "[source]\npath = \"nowhere.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"row\"\n[keys]\npartition = \"id\"\n").unwrap();
    let output = kinesync(&["preview", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unknown field `partition`") && stderr.contains("line 7"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        "[source]\npath = \"nowhere.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"row\"\n",
    )
    .unwrap();
    let output = kinesync(&["preview", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot open model file"));

    let output = kinesync(&["preview", "--config", &config("row"), "--shards", "0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least one open shard"));

    std::fs::write(&path, format!("[source]\npath = {:?}\nprimary_key = \"id\"\n[payload]\nmode = \"row\"\n[keys]\npartition_key = \"userid\"\n", fixture("models/users.ndjson"))).unwrap();
    let output = kinesync(&["preview", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("keys.partition_key names column \"userid\", which the model does not have; did you mean \"user_id\"?"));
}

/// `record_id_field` adds the record's id to a row-mode message; a preview shows a fixed id,
/// so that what it prints is the same from run to run.
#[test]
fn a_record_id_field_shows_in_the_preview() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.ndjson"),
        "{\"id\": 1, \"name\": \"Ada\"}\n",
    )
    .unwrap();
    let config = dir.path().join("kinesync.toml");
    std::fs::write(
        &config,
        "[source]\npath = \"m.ndjson\"\nprimary_key = \"id\"\n\n\
         [payload]\nmode = \"row\"\nrecord_id_field = \"_record_id\"\n\n\
         [destination]\nstream = \"s\"\nsimulated = { shards = 1 }\n",
    )
    .unwrap();
    let output = kinesync(&["preview", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        lines(&output)[0]["data"],
        serde_json::json!({"id": 1, "name": "Ada", "_record_id": "00000000-0000-7000-8000-000000000000"})
    );
}
