//! The state kept in PostgreSQL (a real server on loopback, started by the test kit) behaves
//! as the in-memory store does: lookups, walking the keys, commits applied in order and
//! atomically, keys in doubt; it persists, and one sync at a time holds it.

use std::sync::atomic::{AtomicUsize, Ordering};

use kinesync_source::Connection;
use kinesync_state::{
    Change, Doubt, MemoryStore, PostgresStore, Seen, StateError, StateStore, Unanswered,
};
use kinesync_testkit::postgres::{PASSWORD, postgres};
use proptest::prelude::*;

mod common;
use common::{keys, random_change, upsert, walk_in_order};

/// A database shared by the tests of this file; each test uses stores of its own names.
fn database() -> &'static str {
    static DATABASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DATABASE.get_or_init(|| postgres().new_database("state_stores"))
}

fn open(name: &str) -> Result<PostgresStore, StateError> {
    let (client, place) = Connection::new(postgres().url(database()))
        .connect()
        .unwrap_or_else(|e| panic!("{e}"));
    PostgresStore::open(client, place, "kinesync_state", name)
}

/// A name no other test uses.
fn fresh(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[test]
fn it_keeps_what_was_acknowledged_and_persists() {
    let name = fresh("basics");
    let mut store = open(&name).unwrap();
    assert!(!store.has_baseline().unwrap());
    store
        .commit(vec![
            upsert("1", 11),
            upsert("\"a\"", 22),
            upsert("3", u128::MAX),
        ])
        .unwrap();
    store.set_baseline().unwrap();
    assert_eq!(store.key_count().unwrap(), 3);
    assert_eq!(
        store.seen(&keys(&["3", "1", "9"])).unwrap(),
        vec![
            Some(Seen::Acknowledged(u128::MAX)),
            Some(Seen::Acknowledged(11)),
            None
        ]
    );
    let all = store.keys_after(None, 10).unwrap();
    assert_eq!(
        all,
        keys(&["\"a\"", "1", "3"]),
        "byte order, as the in-memory store"
    );
    assert_eq!(store.keys_after(Some(&all[0]), 1).unwrap(), all[1..2]);
    store
        .commit(vec![Change::Delete { key: "3".into() }, upsert("1", 12)])
        .unwrap();
    store.set_meta("columns", "[[\"id\"]]").unwrap();
    store.set_meta("columns", "[[\"id\",\"v\"]]").unwrap();
    assert_eq!(
        store.meta("baseline").unwrap(),
        None,
        "the store's own are not a caller's"
    );
    drop(store);

    let mut reopened = open(&name).unwrap();
    assert!(reopened.has_baseline().unwrap());
    assert!(
        reopened
            .describe()
            .contains(&format!("kinesync_{name}_rows"))
    );
    assert_eq!(reopened.key_count().unwrap(), 2);
    assert_eq!(
        reopened.seen(&keys(&["1", "3"])).unwrap(),
        vec![Some(Seen::Acknowledged(12)), None]
    );
    assert_eq!(
        reopened.meta("columns").unwrap().as_deref(),
        Some("[[\"id\",\"v\"]]")
    );
    assert_eq!(
        reopened.rows(&keys(&["\"a\""])).unwrap(),
        vec![Some(b"{\"k\":\"\\\"a\\\"\"}".to_vec())]
    );
    // Cleared: a first run again.
    reopened.clear().unwrap();
    assert!(!reopened.has_baseline().unwrap());
    assert_eq!(reopened.key_count().unwrap(), 0);
    assert_eq!(reopened.meta("columns").unwrap(), None);
}

#[test]
fn one_sync_at_a_time_holds_the_state() {
    let name = fresh("locked");
    let first = open(&name).unwrap();
    let error = open(&name).expect_err("the second is refused").to_string();
    assert!(
        error.contains("in use") && error.contains(&format!("kinesync_{name}_rows")),
        "{error}"
    );
    assert!(!error.contains(PASSWORD));
    // Another sync's state is free.
    open(&fresh("other")).unwrap();
    drop(first);
    open(&name).expect("free once the first is closed");
}

#[test]
fn a_bad_name_is_refused_before_anything_is_created() {
    let error = open("users; DROP TABLE x").unwrap_err().to_string();
    assert!(error.contains("letters, digits or underscores"), "{error}");
}

#[test]
fn keys_in_doubt_are_kept_until_settled() {
    let mut store = open(&fresh("doubt")).unwrap();
    let doubt = |event| Doubt {
        event,
        record_id: 42,
    };
    store.commit(vec![upsert("1", 7), upsert("2", 8)]).unwrap();
    store
        .commit(vec![
            Change::InDoubt {
                key: "1".into(),
                doubt: doubt(Unanswered::Changed),
                sent: Some((70, b"{\"sent\":70}".to_vec())),
            },
            Change::InDoubt {
                key: "2".into(),
                doubt: doubt(Unanswered::Removed),
                sent: None,
            },
        ])
        .unwrap();
    let asked = keys(&["1", "2", "3"]);
    assert_eq!(
        store.seen(&asked).unwrap(),
        vec![
            Some(Seen::InDoubt(doubt(Unanswered::Changed))),
            Some(Seen::InDoubt(doubt(Unanswered::Removed))),
            None
        ]
    );
    store
        .commit(vec![
            Change::Settle { key: "1".into() },
            Change::Delete { key: "2".into() },
        ])
        .unwrap();
    assert_eq!(
        store.seen(&asked).unwrap(),
        vec![Some(Seen::Acknowledged(70)), None, None]
    );
    assert_eq!(
        store.rows(&keys(&["1"])).unwrap(),
        vec![Some(b"{\"sent\":70}".to_vec())]
    );
}

/// Keys of every kind: integers, strings, odd characters, the empty key.
const KEYS: &[&str] = &[
    "0",
    "1",
    "10",
    "9",
    "-1",
    "1.5",
    "\"1\"",
    "\"a\"",
    "\"\"",
    "true",
    "\u{1}5",
    "\u{1f}",
    "",
    "é",
    "\u{10ffff}",
    // The tag of the literal settles send their keys in, and a quote.
    "\"$kinesync$'\"",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the changes, the Postgres store and the in-memory store end up the same.
    #[test]
    fn it_agrees_with_the_in_memory_store(
        ops in prop::collection::vec((0usize..KEYS.len(), 0u8..11, any::<u128>()), 0..80),
        size in 1usize..30,
    ) {
        let mut memory = MemoryStore::new();
        let mut store = open(&fresh("agree")).unwrap();
        for chunk in ops.chunks(size) {
            let changes: Vec<Change> = chunk
                .iter()
                .map(|(k, op, fp)| random_change(KEYS[*k], *op, fp))
                .collect();
            memory.commit(changes.clone()).unwrap();
            store.commit(changes).unwrap();
        }
        let all = keys(KEYS);
        let asked: Vec<String> = all.iter().chain(all.iter().rev()).cloned().collect();
        prop_assert_eq!(memory.seen(&asked).unwrap(), store.seen(&asked).unwrap());
        prop_assert_eq!(memory.rows(&asked).unwrap(), store.rows(&asked).unwrap());
        prop_assert_eq!(
            memory.seen_with_rows(&asked).unwrap(),
            store.seen_with_rows(&asked).unwrap()
        );
        prop_assert_eq!(memory.key_count().unwrap(), store.key_count().unwrap());
        prop_assert_eq!(memory.keys_after(None, 100).unwrap(), store.keys_after(None, 100).unwrap());
        let walked = walk_in_order(&mut store, 4);
        prop_assert_eq!(walked, memory.keys_after(None, 100).unwrap());
    }
}

/// Settles into a state with no rows go in by `COPY` (a backfill); a key settled again, its
/// row there, makes the `COPY` fail, and the settle is written as an upsert instead, whole:
/// what the store then holds is each key's last version, acknowledged, on this store and
/// when opened again.
#[test]
fn settles_into_an_empty_state_and_over_keys_it_has_keep_the_last_version() {
    let name = fresh("copy_settle");
    let mut store = open(&name).unwrap();
    let versions = |fingerprint: u128| -> Vec<Change> {
        ["1", "2", "3"]
            .iter()
            .map(|key| common::in_doubt(key, Unanswered::Added, Some(&fingerprint)))
            .collect()
    };
    let settles = |keys: &[&str]| -> Vec<Change> {
        keys.iter()
            .map(|key| Change::Settle { key: (*key).into() })
            .collect()
    };
    store.commit(versions(10)).unwrap();
    store.commit(settles(&["1", "2", "3"])).unwrap();
    let first = keys(&["1", "2", "3"]);
    assert_eq!(
        store.seen_with_rows(&first).unwrap(),
        first
            .iter()
            .map(|_| Some((Seen::Acknowledged(10), b"{\"sent\":10}".to_vec())))
            .collect::<Vec<_>>()
    );
    // Again, over rows the state has now: one mark of a key new, two of keys it has.
    let mut again = versions(20);
    again.push(common::in_doubt("4", Unanswered::Added, Some(&20)));
    store.commit(again).unwrap();
    store.commit(settles(&["4", "1", "3"])).unwrap();
    store.close_run().unwrap();
    let expected = vec![
        Some(Seen::Acknowledged(20)),
        Some(Seen::InDoubt(common::doubt("2", Unanswered::Added))),
        Some(Seen::Acknowledged(20)),
        Some(Seen::Acknowledged(20)),
    ];
    let asked = keys(&["1", "2", "3", "4"]);
    assert_eq!(store.seen(&asked).unwrap(), expected);
    drop(store);
    let mut store = open(&name).unwrap();
    assert_eq!(store.seen(&asked).unwrap(), expected);
    assert_eq!(store.key_count().unwrap(), 4);
}

/// A long run keeps the marks table small: each batch's row is stored out of line and deleted
/// once settled, and the store vacuums the table as it goes (every 128 batches), so later
/// batches reuse the space of earlier ones rather than growing its files (a 10M-row backfill
/// otherwise left gigabytes of dead batches for the server's autovacuum).
#[test]
fn a_long_run_reuses_the_space_of_its_settled_marks() {
    let name = fresh("reuse");
    let mut store = open(&name).unwrap();
    let (mut client, _) = Connection::new(postgres().url(database()))
        .connect()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut size = || -> i64 {
        client
            .query_one(
                &format!("SELECT pg_total_relation_size('kinesync_state.kinesync_{name}_marks')"),
                &[],
            )
            .unwrap()
            .get(0)
    };
    // Five rows of 800 bytes: a batch's row too long to keep in its page.
    let row = vec![b'r'; 800];
    let mut sizes = Vec::new();
    for batch in 1..=1024 {
        let keys: Vec<String> = (0..5).map(|i| format!("{batch}.{i}")).collect();
        let marks = keys
            .iter()
            .map(|key| Change::InDoubt {
                key: key.clone(),
                doubt: common::doubt(key, Unanswered::Added),
                sent: Some((7, row.clone())),
            })
            .collect();
        store.commit(marks).unwrap();
        let settles = keys.into_iter().map(|key| Change::Settle { key }).collect();
        store.commit(settles).unwrap();
        if batch == 256 || batch == 1024 {
            store.flush().unwrap();
            sizes.push(size());
        }
    }
    assert!(
        sizes[1] < sizes[0] * 2,
        "the marks table grew from {} to {} bytes over four times the batches",
        sizes[0],
        sizes[1]
    );
    assert_eq!(store.key_count().unwrap(), 5 * 1024);
}

/// A batch of marks settled in part: a run's end writes the rest as doubts, exactly; a kill
/// instead leaves the batch's row, and every key of it goes again.
#[test]
fn a_runs_end_keeps_the_settled_part_of_a_batch_and_a_kill_resends_it() {
    for killed in [false, true] {
        let name = fresh("batch_end");
        let mut store = open(&name).unwrap();
        let marks = vec![
            common::in_doubt("1", Unanswered::Added, Some(&10)),
            common::in_doubt("2", Unanswered::Added, Some(&20)),
        ];
        store.commit(marks).unwrap();
        store
            .commit(vec![Change::Settle { key: "1".into() }])
            .unwrap();
        if !killed {
            store.close_run().unwrap();
        }
        drop(store);
        let mut store = open(&name).unwrap();
        let first = match killed {
            true => Seen::InDoubt(common::doubt("1", Unanswered::Added)),
            false => Seen::Acknowledged(10),
        };
        assert_eq!(
            store.seen(&keys(&["1", "2"])).unwrap(),
            vec![
                Some(first),
                Some(Seen::InDoubt(common::doubt("2", Unanswered::Added)))
            ],
            "killed: {killed}"
        );
    }
}

/// What `store` answers for every key of [`KEYS`], to compare with another store.
fn answers(store: &mut dyn StateStore) -> impl PartialEq + std::fmt::Debug {
    let all = keys(KEYS);
    (
        store.seen_with_rows(&all).unwrap(),
        store.key_count().unwrap(),
        walk_in_order(store, 3),
    )
}

/// After a kill: every key whose answer differs is one `memory` holds acknowledged, which
/// `store` has in doubt with the same row and the id of the key's last mark (`marked`) — the
/// settled part of a batch of marks still in flight, which goes again. `memory` is brought to
/// the same; `Err` names a key that differs otherwise.
fn resend_after_a_kill(
    memory: &mut MemoryStore,
    store: &mut PostgresStore,
    marked: &std::collections::HashMap<String, Doubt>,
) -> Result<(), String> {
    let all = keys(KEYS);
    let theirs = store.seen_with_rows(&all).unwrap();
    let ours = memory.seen_with_rows(&all).unwrap();
    let mut resent = Vec::new();
    for ((key, ours), theirs) in all.iter().zip(ours).zip(theirs) {
        if ours == theirs {
            continue;
        }
        match (&ours, &theirs) {
            (Some((Seen::Acknowledged(fp), row)), Some((Seen::InDoubt(doubt), their_row)))
                if row == their_row && marked.get(key) == Some(doubt) =>
            {
                resent.push(Change::InDoubt {
                    key: key.clone(),
                    doubt: *doubt,
                    sent: Some((*fp, row.clone())),
                });
            }
            _ => {
                return Err(format!(
                    "{key:?}: {ours:?} came back from a kill as {theirs:?}"
                ));
            }
        }
    }
    memory.commit(resent).unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A run's commits, as the engine makes them: a call's records marked in doubt at once (a
    /// batch), then settled in parts as calls are acknowledged, some never; now and then
    /// another commit (an upsert, a removal); a run's end (the marks not settled written as
    /// doubts), and the store dropped with marks outstanding and opened again (a killed run).
    /// After every step the store answers as the in-memory store given the same commits: a
    /// mark not settled is a key in doubt, with the version it sent, through every reopen;
    /// after a kill, the settled keys of the batches in flight may be in doubt too (they go
    /// again), and nothing else differs.
    #[test]
    fn marks_written_a_batch_at_a_time_answer_as_if_written_one_by_one(
        steps in prop::collection::vec(
            (0u8..9, prop::collection::vec((0usize..KEYS.len(), any::<u128>(), any::<bool>()), 1..7)),
            1..24,
        ),
    ) {
        let name = fresh("batches");
        let mut memory = MemoryStore::new();
        let mut store = open(&name).unwrap();
        let mut marked = std::collections::HashMap::new();
        // Nothing committed since a run's end: a kill then resends nothing.
        let mut closed = false;
        for (kind, picks) in steps {
            let changes: Vec<Change> = match kind {
                // A call's marks: distinct keys, each with the version it sends.
                0..=2 => {
                    let mut seen = std::collections::BTreeSet::new();
                    picks
                        .iter()
                        .filter(|(k, ..)| seen.insert(*k))
                        .map(|(k, fp, changed)| {
                            let event = if *changed { Unanswered::Changed } else { Unanswered::Added };
                            common::in_doubt(KEYS[*k], event, Some(fp))
                        })
                        .collect()
                }
                // Acknowledgements: settles of some keys (in doubt or not).
                3..=5 => picks.iter().map(|(k, ..)| Change::Settle { key: KEYS[*k].into() }).collect(),
                // Another commit.
                6 => picks.iter().map(|(k, fp, delete)| {
                    if *delete { Change::Delete { key: KEYS[*k].into() } } else { upsert(KEYS[*k], *fp) }
                }).collect(),
                // A run's end.
                7 => {
                    store.close_run().unwrap();
                    closed = true;
                    Vec::new()
                }
                // A kill: the store dropped (its queued commits written) and opened again.
                _ => {
                    drop(store);
                    store = open(&name).unwrap();
                    if closed {
                        prop_assert_eq!(answers(&mut memory), answers(&mut store));
                    }
                    let resent = resend_after_a_kill(&mut memory, &mut store, &marked);
                    prop_assert!(resent.is_ok(), "{}", resent.unwrap_err());
                    Vec::new()
                }
            };
            closed &= changes.is_empty();
            for change in &changes {
                if let Change::InDoubt { key, doubt, .. } = change {
                    marked.insert(key.clone(), *doubt);
                }
            }
            memory.commit(changes.clone()).unwrap();
            store.commit(changes).unwrap();
            prop_assert_eq!(answers(&mut memory), answers(&mut store));
        }
        drop(store);
        let mut reopened = open(&name).unwrap();
        let resent = resend_after_a_kill(&mut memory, &mut reopened, &marked);
        prop_assert!(resent.is_ok(), "{}", resent.unwrap_err());
        prop_assert_eq!(answers(&mut memory), answers(&mut reopened));
    }
}

/// A state of version 1 (no marks table) is upgraded when opened, keeping its rows; one of a
/// version this build does not know is refused.
#[test]
fn a_state_of_the_version_before_is_upgraded_and_a_newer_one_refused() {
    let name = fresh("upgrade");
    let mut store = open(&name).unwrap();
    store.commit(vec![upsert("1", 7)]).unwrap();
    drop(store);
    let tables = format!("kinesync_state.kinesync_{name}");
    let version = |value: &str| {
        postgres().psql(
            database(),
            &format!("UPDATE {tables}_meta SET value = '{value}' WHERE name = 'schema_version'"),
        );
    };
    postgres().psql(database(), &format!("DROP TABLE {tables}_marks"));
    version("1");
    let mut store = open(&name).unwrap();
    store
        .commit(vec![common::in_doubt("2", Unanswered::Added, Some(&9))])
        .unwrap();
    store
        .commit(vec![Change::Settle { key: "2".into() }])
        .unwrap();
    assert_eq!(
        store.seen(&keys(&["1", "2"])).unwrap(),
        vec![Some(Seen::Acknowledged(7)), Some(Seen::Acknowledged(9))]
    );
    drop(store);
    let stored = postgres().psql(
        database(),
        &format!("SELECT value FROM {tables}_meta WHERE name = 'schema_version'"),
    );
    assert_eq!(stored.trim(), "2");
    version("3");
    match open(&name) {
        Err(StateError::SchemaVersion {
            found: 3,
            expected: 2,
            ..
        }) => {}
        other => panic!("a newer state was not refused: {other:?}"),
    }
}

#[test]
fn a_dry_run_reads_the_state_as_it_is_and_writes_nothing() {
    let connect = || {
        Connection::new(postgres().url(database()))
            .connect()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let name = fresh("dry");
    let (client, place) = connect();
    assert!(
        PostgresStore::open_read_only(client, place, "kinesync_state", &name)
            .unwrap()
            .is_none(),
        "no tables yet: nothing to read, and nothing created"
    );
    let exists = postgres().psql(
        database(),
        &format!("SELECT to_regclass('kinesync_state.kinesync_{name}_rows') IS NULL"),
    );
    assert_eq!(exists.trim(), "t");
    let mut store = open(&name).unwrap();
    store.commit(vec![upsert("1", 5)]).unwrap();
    // Read-only beside a run holding the lock: a dry run takes none.
    let (client, place) = connect();
    let mut dry = PostgresStore::open_read_only(client, place, "kinesync_state", &name)
        .unwrap()
        .expect("the tables exist");
    assert_eq!(
        dry.seen(&keys(&["1"])).unwrap(),
        vec![Some(Seen::Acknowledged(5))]
    );
    let error = dry.commit(vec![upsert("2", 6)]).unwrap_err().to_string();
    assert!(error.contains("read-only for a dry run"), "{error}");
    assert!(dry.set_baseline().is_err());
    drop(store);
}

#[test]
fn a_commit_that_fails_is_reported_and_nothing_after_it_is_written() {
    let name = fresh("failing");
    let mut store = open(&name).unwrap();
    store.commit(vec![upsert("1", 1)]).unwrap();
    store.flush().unwrap();
    // The rows' table vanishes under the store (a DBA's mistake): the next commit fails on
    // the connection's thread, and the run hears of it at its next flush or lookup.
    postgres().psql(
        database(),
        &format!("DROP TABLE kinesync_state.kinesync_{name}_rows"),
    );
    store.commit(vec![upsert("2", 2)]).expect("queued");
    let error = store.flush().unwrap_err().to_string();
    assert!(
        error.contains("a commit failed") && error.contains("does not exist"),
        "{error}"
    );
    assert!(
        store.commit(vec![upsert("3", 3)]).is_err(),
        "nothing after it"
    );
    assert!(store.seen(&keys(&["1"])).is_err());
}
