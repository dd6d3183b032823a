//! Both stores behave the same: lookups, runs and duplicates, removed keys, atomic commits,
//! and (SQLite) a schema version that is checked.

use kinesync_state::{Change, MemoryStore, SqliteStore, StateError, StateStore, StoredRow};
use proptest::prelude::*;

fn upsert(key: &str, fingerprint: u128) -> Change {
    Change::Upsert {
        key: key.into(),
        fingerprint,
        row: format!("{{\"k\":{key:?}}}").into_bytes(),
    }
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn exercise(store: &mut dyn StateStore) {
    assert!(!store.has_baseline().unwrap());
    store
        .commit(&[upsert("1", 11), upsert("\"a\"", 22), upsert("3", u128::MAX)])
        .unwrap();
    store.set_baseline().unwrap();
    assert!(store.has_baseline().unwrap());
    assert_eq!(store.len().unwrap(), 3);
    assert_eq!(
        store.fingerprints(&keys(&["3", "1", "9"])).unwrap(),
        vec![Some(u128::MAX), Some(11), None]
    );
    assert_eq!(
        store.rows(&keys(&["\"a\""])).unwrap(),
        vec![Some(b"{\"k\":\"\\\"a\\\"\"}".to_vec())]
    );

    assert!(matches!(store.see(&keys(&["1"])), Err(StateError::NoRun)));
    store.begin_run().unwrap();
    assert!(store.see(&keys(&["1", "9"])).unwrap().is_empty());
    assert_eq!(
        store.see(&keys(&["9", "10"])).unwrap(),
        keys(&["9"]),
        "a key seen twice in a run is a duplicate"
    );
    let unseen = store.unseen(None, 10).unwrap();
    let names: Vec<&str> = unseen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["\"a\"", "3"],
        "keys in the store the model no longer has"
    );
    assert_eq!(
        unseen[1].1,
        StoredRow {
            fingerprint: u128::MAX,
            row: b"{\"k\":\"3\"}".to_vec()
        }
    );
    let page = store.unseen(None, 1).unwrap();
    assert_eq!(page.len(), 1);
    let rest = store.unseen(Some(&page[0].0), 10).unwrap();
    assert_eq!(rest.len(), 1, "paging goes on after the last key");

    store
        .commit(&[Change::Delete { key: "3".into() }, upsert("1", 12)])
        .unwrap();
    assert_eq!(
        store.fingerprints(&keys(&["1", "3"])).unwrap(),
        vec![Some(12), None]
    );
    store.begin_run().unwrap();
    assert!(
        store.see(&keys(&["9"])).unwrap().is_empty(),
        "a new run forgets the last run's keys"
    );
}

#[test]
fn memory_store_behaves() {
    exercise(&mut MemoryStore::new());
}

#[test]
fn sqlite_store_behaves_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    exercise(&mut SqliteStore::open(&path).unwrap());
    let reopened = SqliteStore::open(&path).unwrap();
    assert!(reopened.has_baseline().unwrap());
    assert_eq!(reopened.len().unwrap(), 2);
}

#[test]
fn a_newer_schema_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite_conn(&path);
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(
        err,
        StateError::SchemaVersion {
            found: 7,
            expected: 1,
            ..
        }
    ));
    assert!(
        err.to_string().contains("start over with a new state file"),
        "{err}"
    );
}

fn rusqlite_conn(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the changes, the SQLite store and the in-memory store end up the same.
    #[test]
    fn stores_agree(ops in prop::collection::vec((0u8..20, any::<bool>(), any::<u128>()), 0..60)) {
        let mut memory = MemoryStore::new();
        let mut sqlite = SqliteStore::open_in_memory().unwrap();
        for chunk in ops.chunks(7) {
            let changes: Vec<Change> = chunk
                .iter()
                .map(|(k, delete, fp)| if *delete { Change::Delete { key: k.to_string() } } else { upsert(&k.to_string(), *fp) })
                .collect();
            memory.commit(&changes).unwrap();
            sqlite.commit(&changes).unwrap();
        }
        let all: Vec<String> = (0u8..20).map(|k| k.to_string()).collect();
        prop_assert_eq!(memory.fingerprints(&all).unwrap(), sqlite.fingerprints(&all).unwrap());
        prop_assert_eq!(memory.len().unwrap(), sqlite.len().unwrap());
        memory.begin_run().unwrap();
        sqlite.begin_run().unwrap();
        let seen: Vec<String> = (0u8..20).step_by(3).map(|k| k.to_string()).collect();
        prop_assert_eq!(memory.see(&seen).unwrap(), sqlite.see(&seen).unwrap());
        prop_assert_eq!(memory.unseen(None, 100).unwrap(), sqlite.unseen(None, 100).unwrap());
    }
}
