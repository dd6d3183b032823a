//! Both stores behave the same: lookups, walking the keys, atomic commits,
//! and (SQLite) a schema version that is checked.

use kinesync_state::{Change, MemoryStore, Seen, SqliteStore, StateError, StateStore, Unanswered};
use proptest::prelude::*;

mod common;
use common::{doubt, in_doubt, keys, random_change, upsert, walk_in_order};

/// The fingerprints of acknowledged keys (a key in doubt fails the test).
trait Acked {
    fn acked(&mut self, keys: &[String]) -> Vec<Option<u128>>;
}

impl<S: StateStore + ?Sized> Acked for S {
    fn acked(&mut self, keys: &[String]) -> Vec<Option<u128>> {
        self.seen(keys)
            .unwrap()
            .into_iter()
            .map(|seen| {
                seen.map(|seen| match seen {
                    Seen::Acknowledged(fingerprint) => fingerprint,
                    Seen::InDoubt(event) => panic!("a key in doubt ({event:?})"),
                })
            })
            .collect()
    }
}

fn exercise(store: &mut dyn StateStore) {
    assert!(!store.has_baseline().unwrap());
    store
        .commit(vec![
            upsert("1", 11),
            upsert("\"a\"", 22),
            upsert("3", u128::MAX),
        ])
        .unwrap();
    store.set_baseline().unwrap();
    assert!(store.has_baseline().unwrap());
    assert_eq!(store.key_count().unwrap(), 3);
    assert_eq!(
        store.acked(&keys(&["3", "1", "9"])),
        vec![Some(u128::MAX), Some(11), None]
    );
    assert_eq!(
        store.rows(&keys(&["\"a\""])).unwrap(),
        vec![Some(b"{\"k\":\"\\\"a\\\"\"}".to_vec())]
    );

    // Every key once, in the store's own order, page after page.
    let all = store.keys_after(None, 10).unwrap();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(sorted, keys(&["\"a\"", "1", "3"]), "every key");
    assert_eq!(store.keys_after(None, 2).unwrap(), all[..2]);
    assert_eq!(
        store.keys_after(Some(&all[1]), 10).unwrap(),
        all[2..],
        "paging goes on after the last key"
    );
    assert_eq!(
        store.rows(&keys(&["3"])).unwrap(),
        vec![Some(b"{\"k\":\"3\"}".to_vec())]
    );

    store
        .commit(vec![Change::Delete { key: "3".into() }, upsert("1", 12)])
        .unwrap();
    store.flush().unwrap();
    assert_eq!(store.acked(&keys(&["1", "3"])), vec![Some(12), None]);

    // A caller's values: kept apart from the store's own, replaced when set again.
    assert_eq!(
        store.meta("baseline").unwrap(),
        None,
        "the store's own are not a caller's"
    );
    store.set_meta("columns", "[[\"id\"]]").unwrap();
    store
        .set_meta("columns", "[[\"id\"],[\"id\",\"v\"]]")
        .unwrap();
    assert_eq!(
        store.meta("columns").unwrap().as_deref(),
        Some("[[\"id\"],[\"id\",\"v\"]]")
    );
    assert_eq!(store.meta("other").unwrap(), None);
    assert!(store.has_baseline().unwrap());
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
    let mut reopened = SqliteStore::open(&path).unwrap();
    assert!(reopened.has_baseline().unwrap());
    assert_eq!(reopened.key_count().unwrap(), 2);
    assert_eq!(
        reopened.meta("columns").unwrap().as_deref(),
        Some("[[\"id\"],[\"id\",\"v\"]]"),
        "a caller's values persist"
    );
}

#[test]
fn sqlite_store_of_version_1_is_upgraded_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    version_1_file(
        &path,
        "INSERT INTO meta VALUES ('baseline', 'taken');
         INSERT INTO rows VALUES ('1', x'0000000000000000000000000000002a', CAST('{\"id\":1}' AS BLOB));
         INSERT INTO rows VALUES ('10', x'00000000000000000000000000000001', x'00');
         INSERT INTO rows VALUES ('-2', x'00000000000000000000000000000002', x'00');
         INSERT INTO rows VALUES ('\"7\"', x'00000000000000000000000000000003', x'00');
         INSERT INTO rows VALUES ('123456789012345678901', x'00000000000000000000000000000004', x'00');
         INSERT INTO rows VALUES (char(1) || '5', x'00000000000000000000000000000005', x'00');",
    );

    let mut store = SqliteStore::open(&path).unwrap();
    assert!(store.has_baseline().unwrap());
    assert_eq!(store.acked(&keys(&["1"])), vec![Some(42)]);
    assert_eq!(
        store.rows(&keys(&["1"])).unwrap(),
        vec![Some(b"{\"id\":1}".to_vec())]
    );
    assert_eq!(store.meta("columns").unwrap(), None);
    let all = keys(&["1", "10", "-2", "\"7\"", "123456789012345678901", "\u{1}5"]);
    assert_eq!(
        store.acked(&all),
        vec![Some(42), Some(1), Some(2), Some(3), Some(4), Some(5)],
        "every key is found under its own name"
    );
    assert_eq!(walk(&mut store, 2), sorted(all));
    drop(store);
    let conn = rusqlite_conn(&path);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, kinesync_state::SCHEMA_VERSION);
    let mut stored: Vec<String> = conn
        .prepare("SELECT key FROM rows ORDER BY key")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        keys(&[
            "\u{1}1",
            "\u{2}10",
            "\u{1f}\u{1}5",
            "\"7\"",
            "-2",
            "123456789012345678901"
        ]),
        "integers of up to 20 digits are stored after their length, a key that starts with a \
         control character after an escape, other keys as they were"
    );
}

#[test]
fn sqlite_store_of_version_1_opened_without_upgrade_is_read_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    version_1_file(
        &path,
        "INSERT INTO rows VALUES ('10', x'00000000000000000000000000000001', x'00');
         INSERT INTO rows VALUES ('9', x'00000000000000000000000000000002', x'00');",
    );

    let mut store = SqliteStore::open_without_upgrade(&path).unwrap();
    assert_eq!(
        store.acked(&keys(&["9", "10", "11"])),
        vec![Some(2), Some(1), None]
    );
    assert_eq!(walk(&mut store, 1), keys(&["10", "9"]));
    store.flush().unwrap();
    let refused = store.commit(vec![upsert("11", 3)]).unwrap_err();
    assert!(
        matches!(refused, StateError::NotUpgraded { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("without --dry-run"),
        "{refused}"
    );
    assert!(store.set_meta("columns", "[]").is_err());
    drop(store);
    let version: i64 = rusqlite_conn(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1, "the file is as it was");
    // A file of the current version opens as usual.
    let current = dir.path().join("current.db");
    drop(SqliteStore::open(&current).unwrap());
    let mut store = SqliteStore::open_without_upgrade(&current).unwrap();
    store.commit(vec![upsert("1", 1)]).unwrap();
    store.flush().unwrap();
    assert_eq!(store.key_count().unwrap(), 1);
}

#[test]
fn sqlite_store_walks_integer_keys_in_numeric_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path().join("state.db")).unwrap();
    let numbers: Vec<String> = [9, 10, 1, 100, 2, 11].iter().map(u32::to_string).collect();
    store
        .commit(
            numbers
                .iter()
                .map(|k| upsert(k, 0))
                .chain([upsert("\"x\"", 0)])
                .collect(),
        )
        .unwrap();
    store.flush().unwrap();
    assert_eq!(
        store.keys_after(None, 100).unwrap(),
        keys(&["1", "2", "9", "10", "11", "100", "\"x\""])
    );
    assert_eq!(store.keys_after(Some("9"), 2).unwrap(), keys(&["10", "11"]));
}

#[test]
fn sqlite_store_writes_queued_commits_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path().join("state.db")).unwrap();
    // More commits than the queue holds, each replacing the one before: the last one
    // written must be the last one made, and a value set between commits is kept.
    for version in 0..200u128 {
        store
            .commit(vec![upsert("1", version), upsert(&format!("{version}"), 0)])
            .unwrap();
    }
    store.set_meta("after", "the commits").unwrap();
    for version in 200..300u128 {
        store.commit(vec![upsert("1", version)]).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.acked(&keys(&["1"])), vec![Some(299)]);
    assert_eq!(store.key_count().unwrap(), 200);
    assert_eq!(store.meta("after").unwrap().as_deref(), Some("the commits"));
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
            expected: kinesync_state::SCHEMA_VERSION,
            ..
        }
    ));
    assert!(
        err.to_string().contains("start over with a new state file"),
        "{err}"
    );
}

/// Every key of the store, walked `page` keys at a time, sorted.
fn walk(store: &mut dyn StateStore, page: usize) -> Vec<String> {
    sorted(walk_in_order(store, page))
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// A file as state schema version 1 wrote it, with what `inserts` put in it.
fn version_1_file(path: &std::path::Path, inserts: &str) {
    rusqlite_conn(path)
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE rows (key TEXT NOT NULL UNIQUE, fingerprint BLOB NOT NULL, row BLOB NOT NULL);
             CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             {inserts}
             PRAGMA user_version = 1;"
        ))
        .unwrap();
}

fn rusqlite_conn(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// Keys of every kind a model has: integers (stored after their length by SQLite), one of
/// the most digits stored that way and one of more, negative and fractional numbers, strings
/// (one that holds digits).
const KEYS: &[&str] = &[
    "0",
    "1",
    "2",
    "9",
    "10",
    "11",
    "99",
    "100",
    "12345678901234567890",
    "123456789012345678901",
    "-1",
    "-10",
    "1.5",
    "\"1\"",
    "\"a\"",
    "\"\"",
    "true",
    "null",
    // Not JSON, which kinesync's keys always are, but a store takes any text.
    "\u{1}5",
    "\u{1f}",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the changes, the SQLite store and the in-memory store end up the same.
    /// Commits of up to 40 changes, so that SQLite's multi-row inserts meet repeated keys,
    /// deletes and keys marked in doubt between them.
    #[test]
    fn stores_agree(
        ops in prop::collection::vec((0usize..KEYS.len(), 0u8..11, any::<u128>()), 0..120),
        size in 1usize..40,
    ) {
        let mut memory = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = SqliteStore::open(dir.path().join("state.db")).unwrap();
        for chunk in ops.chunks(size) {
            let changes: Vec<Change> = chunk
                .iter()
                .map(|(k, op, fp)| random_change(KEYS[*k], *op, fp))
                .collect();
            memory.commit(changes.clone()).unwrap();
            sqlite.commit(changes).unwrap();
        }
        sqlite.flush().unwrap();
        let all = keys(KEYS);
        // Each key asked twice: every place is answered.
        let asked: Vec<String> = all.iter().chain(all.iter().rev()).cloned().collect();
        prop_assert_eq!(memory.seen(&asked).unwrap(), sqlite.seen(&asked).unwrap());
        prop_assert_eq!(memory.key_count().unwrap(), sqlite.key_count().unwrap());
        // The same keys, each walk in its store's own order.
        prop_assert_eq!(walk(&mut memory, 3), sorted(memory.keys_after(None, 100).unwrap()));
        prop_assert_eq!(walk(&mut sqlite, 3), sorted(sqlite.keys_after(None, 100).unwrap()));
        prop_assert_eq!(walk(&mut memory, 100), walk(&mut sqlite, 7));
        prop_assert_eq!(memory.rows(&asked).unwrap(), sqlite.rows(&asked).unwrap());
    }
}

#[test]
fn sqlite_commits_queued_in_the_background_are_written_before_the_store_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = SqliteStore::open(&path).unwrap();
    // Far more batches than the queue holds: commit waits when it is full, never drops one.
    for batch in 0..50u128 {
        let changes = (0..100u128)
            .map(|i| upsert(&(batch * 100 + i).to_string(), batch))
            .collect();
        store.commit(changes).unwrap();
    }
    drop(store);
    let mut reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.key_count().unwrap(), 5000);
    assert_eq!(
        reopened.acked(&keys(&["4999", "0"])),
        vec![Some(49), Some(0)]
    );
}

/// The log is copied into the database file while commits go on (by the store's own
/// checkpoints, not SQLite's on-commit ones, which would stall the writer), and is emptied
/// when the store closes.
#[test]
fn sqlite_checkpoints_while_committing_and_leaves_no_log_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let wal = dir.path().join("state.db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut store = SqliteStore::open(&path).unwrap();
    let fresh = size(&path);
    // About 80 MB of rows: past the log size that asks for a checkpoint.
    let row = vec![b'x'; 800];
    for batch in 0..100u32 {
        let changes = (0..1000u32)
            .map(|i| Change::Upsert {
                key: format!("{batch}-{i}"),
                fingerprint: u128::from(i),
                row: row.clone(),
            })
            .collect();
        store.commit(changes).unwrap();
    }
    store.flush().unwrap();
    // The checkpoint runs on its own thread: give it time to land.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size(&path) < 32 << 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        size(&path) >= 32 << 20,
        "the database file grew from {fresh} bytes only to {} while the log holds {} bytes: no checkpoint ran",
        size(&path),
        size(&wal)
    );
    drop(store);
    assert_eq!(size(&wal), 0, "the log is emptied when the store closes");
    let mut reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.key_count().unwrap(), 100_000);
    assert_eq!(reopened.acked(&keys(&["99-999"])), vec![Some(999)]);
}

/// A key in doubt is told apart from an acknowledged one, keeps the version sent (or, for a
/// removal, the version acknowledged), survives a reopening, and is settled by the next
/// acknowledgement.
#[test]
fn keys_in_doubt_are_kept_until_settled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut sqlite = SqliteStore::open(&path).unwrap();
    let mut memory = MemoryStore::new();
    for store in [&mut sqlite as &mut dyn StateStore, &mut memory] {
        store.commit(vec![upsert("1", 7), upsert("2", 8)]).unwrap();
        store
            .commit(vec![
                in_doubt("1", Unanswered::Changed, Some(&70)),
                in_doubt("2", Unanswered::Removed, None),
                in_doubt("3", Unanswered::Added, Some(&30)),
            ])
            .unwrap();
        store.flush().unwrap();
    }
    drop(sqlite);
    let mut sqlite = SqliteStore::open(&path).unwrap();
    let asked = keys(&["1", "2", "3", "4"]);
    for store in [&mut sqlite as &mut dyn StateStore, &mut memory] {
        assert_eq!(
            store.seen(&asked).unwrap(),
            vec![
                Some(Seen::InDoubt(doubt("1", Unanswered::Changed))),
                Some(Seen::InDoubt(doubt("2", Unanswered::Removed))),
                Some(Seen::InDoubt(doubt("3", Unanswered::Added))),
                None,
            ]
        );
        let rows: Vec<Option<String>> = store
            .rows(&asked)
            .unwrap()
            .into_iter()
            .map(|r| r.map(|r| String::from_utf8(r).unwrap()))
            .collect();
        assert_eq!(
            rows,
            vec![
                Some("{\"sent\":70}".to_owned()),
                Some("{\"k\":\"2\"}".to_owned()),
                Some("{\"sent\":30}".to_owned()),
                None,
            ]
        );
        // A key in doubt is a key of the store: the removal walk finds it.
        assert_eq!(store.key_count().unwrap(), 3);
        store
            .commit(vec![
                Change::Settle { key: "1".into() },
                Change::Delete { key: "2".into() },
            ])
            .unwrap();
        store.flush().unwrap();
        assert_eq!(
            store.seen(&asked).unwrap(),
            vec![
                Some(Seen::Acknowledged(70)),
                None,
                Some(Seen::InDoubt(doubt("3", Unanswered::Added))),
                None,
            ]
        );
        // Settled, the row is the one the mark stored.
        assert_eq!(
            store.rows(&keys(&["1"])).unwrap(),
            vec![Some(b"{\"sent\":70}".to_vec())]
        );
    }
}

/// A version 2 file (before keys in doubt) is read as it is without its upgrade (a dry run:
/// no key is in doubt, nothing is written), and upgraded to version 3 with its rows when opened
/// to write.
#[test]
fn sqlite_store_of_version_2_is_upgraded_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut store = SqliteStore::open(&path).unwrap();
        store
            .commit(vec![upsert("1", 11), upsert("2", 22)])
            .unwrap();
        store.flush().unwrap();
    }
    let conn = rusqlite_conn(&path);
    conn.execute_batch("DROP TABLE doubt; PRAGMA user_version = 2;")
        .unwrap();
    drop(conn);

    let mut read_only = SqliteStore::open_without_upgrade(&path).unwrap();
    assert_eq!(
        read_only.acked(&keys(&["1", "2", "3"])),
        vec![Some(11), Some(22), None]
    );
    assert!(matches!(
        read_only.commit(vec![upsert("3", 33)]),
        Err(StateError::NotUpgraded { .. })
    ));
    drop(read_only);

    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.acked(&keys(&["1", "2"])), vec![Some(11), Some(22)]);
    store
        .commit(vec![in_doubt("1", Unanswered::Changed, Some(&12))])
        .unwrap();
    store.flush().unwrap();
    assert_eq!(
        store.seen(&keys(&["1"])).unwrap(),
        vec![Some(Seen::InDoubt(doubt("1", Unanswered::Changed)))]
    );
    drop(store);
    let version: i64 = rusqlite_conn(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
}
