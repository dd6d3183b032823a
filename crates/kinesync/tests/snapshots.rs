//! What each payload mode makes of the fixture users, kept as insta snapshots: a change to
//! any message, key or shard shows up as a diff to review (`cargo insta review`).

use kinesync::preview::{snapshot_config, snapshot_files};
use kinesync_fixtures::{fixture, machine_independent};

fn config(name: &str) -> std::path::PathBuf {
    fixture(&format!("configs/{name}.toml"))
}

#[test]
fn row_mode() {
    insta::assert_snapshot!(snapshot_config(config("row")).unwrap());
}

#[test]
fn column_mode() {
    insta::assert_snapshot!(snapshot_config(config("column")).unwrap());
}

#[test]
fn mapping_mode_with_a_partition_key_column() {
    insta::assert_snapshot!(snapshot_config(config("mapping")).unwrap());
}

#[test]
fn template_file_with_explicit_hash_keys() {
    insta::assert_snapshot!(snapshot_config(config("template_file")).unwrap());
}

#[test]
fn inline_template_over_csv() {
    insta::assert_snapshot!(snapshot_config(config("template_inline")).unwrap());
}

#[test]
fn escape_none_leaves_escaping_to_the_author() {
    insta::assert_snapshot!(snapshot_config(config("escape_none")).unwrap());
}

#[test]
fn the_same_template_over_other_rows() {
    // The config's template, the CSV users: a column the template needs is missing there.
    let err = snapshot_files(config("template_file"), fixture("models/users.csv")).unwrap_err();
    insta::assert_snapshot!(machine_independent(&err.to_string()));
}

#[test]
fn a_config_for_snapshots_needs_no_model_path_and_no_destination() {
    // The rows come from the test; the config holds only what makes records of them. It
    // renders exactly what the config with the model's path renders over the same file.
    let from_rows =
        snapshot_files(config("template_only"), fixture("models/users.ndjson")).unwrap();
    assert_eq!(from_rows, snapshot_config(config("template_file")).unwrap());
    // Without rows of its own, such a config says what it lacks.
    let err = snapshot_config(config("template_only")).unwrap_err();
    assert!(err.to_string().contains("[source] has no path"), "{err}");
}

#[test]
fn compile_errors_point_into_the_config_file() {
    let err = snapshot_config(config("template_errors")).unwrap_err();
    insta::assert_snapshot!(machine_independent(&err.to_string()));
}

/// The file-free path of the README: a template and rows in code, no config file.
#[test]
fn a_template_over_rows_in_memory() {
    use kinesync::keys::ShardMap;
    use kinesync::payload::{Event, Payload, PayloadSpec, Row, Schema, Value};
    use kinesync::preview::Preview;
    use kinesync::{KeySpec, RecordBuilder};

    let schema = Schema::new(["id", "email", "total"], "id").unwrap();
    let template =
        r#"{"order": {{ row.id }}, "customer": "{{ row.email }}", "total": {{ row.total }}}"#;
    // A compile error's Display is a compiler-style report with line and column.
    let payload = Payload::compile(&PayloadSpec::template(template), schema.clone())
        .unwrap_or_else(|errors| panic!("{errors}"));
    let keys = KeySpec::new(&schema, Some("email"), None).unwrap_or_else(|e| panic!("{e}"));
    let preview = Preview::new(
        RecordBuilder::new(payload, keys),
        ShardMap::even(4).unwrap(),
        Event::Added,
    );
    let rows = [
        Row::new(vec![
            Value::Int(1),
            Value::from("ada@example.com"),
            Value::Float(9.5),
        ]),
        Row::new(vec![Value::Int(2), Value::from(""), Value::Float(12.0)]),
    ];
    insta::assert_snapshot!(preview.snapshot(rows));
}
