//! A model that suddenly lacks most of its rows is more often a broken export than the truth:
//! a run that would remove more than `[sync] max_removed_share` of the rows last sent sends no
//! removal and exits 1, saying how to allow it.

use std::path::Path;

mod common;

use common::sync;
use kinesync::state::{SqliteStore, StateStore};

fn write_model(dir: &Path, rows: &[(i64, &str)]) {
    let mut text = String::from("id,email\n");
    for (id, email) in rows {
        text.push_str(&format!("{id},{email}\n"));
    }
    std::fs::write(dir.join("users.csv"), text).unwrap();
}

fn state_rows(dir: &Path) -> usize {
    SqliteStore::open(dir.join("state.db"))
        .unwrap()
        .key_count()
        .unwrap()
}

#[test]
fn a_header_only_csv_after_a_full_one_removes_nothing_until_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kinesync.toml");
    std::fs::write(
        &config,
        "[source]\npath = \"users.csv\"\nprimary_key = \"id\"\n[source.types]\nid = \"integer\"\n\n\
         [payload]\nmode = \"row\"\n\n[destination]\nstream = \"users\"\nsimulated = { shards = 1 }\n\n\
         [sync]\nstate = \"state.db\"\n",
    )
    .unwrap();
    write_model(dir.path(), &[(1, "a@x"), (2, "b@x"), (3, "c@x")]);
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");

    // The export broke: only the header is left.
    write_model(dir.path(), &[]);
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("removals held")
            && text.contains("lacks 3 of the 3 rows")
            && text.contains("max_removed_share"),
        "{text}"
    );
    assert_eq!(state_rows(dir.path()), 3, "nothing was removed");

    // Losing one row of three is within the default share: it goes out as usual.
    write_model(dir.path(), &[(1, "a@x"), (2, "b@x")]);
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("removed 1"), "{text}");

    // The model really is empty now: allowed for this run.
    write_model(dir.path(), &[]);
    let (output, text) = sync(&config, &["--allow-removals"]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("removed 2"), "{text}");
    assert_eq!(state_rows(dir.path()), 0);
}
