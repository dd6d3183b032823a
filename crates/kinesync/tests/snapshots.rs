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
fn compile_errors_point_into_the_config_file() {
    let err = snapshot_config(config("template_errors")).unwrap_err();
    insta::assert_snapshot!(machine_independent(&err.to_string()));
}
