//! The SQLite store: one file, versioned schema, atomic commits written in the background.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use crate::{Change, Fingerprint, SCHEMA_VERSION, StateError, StateStore};

/// Keys per `IN (...)` lookup: well under SQLite's parameter limit.
const LOOKUP_CHUNK: usize = 500;

/// How many commits may wait for the writer thread before [`StateStore::commit`] waits.
pub const COMMITS_AHEAD: usize = 4;

/// Log pages (4 KiB each) after which the writer asks for a checkpoint: fewer, larger
/// checkpoints, since rows arrive in bulk.
const CHECKPOINT_PAGES: i32 = 16_384;

/// A state store in a SQLite file.
///
/// The file runs in WAL mode with `synchronous = NORMAL`: a commit is durable against a crash
/// or kill of the process once it is written (it is in the log, in the operating system's
/// hands); an operating system crash can lose the last commits, and their rows are then sent
/// again: duplicates, never loss.
///
/// **Commits are written by a thread of their own**, on their own connection, so that a sync
/// goes on building and sending records while SQLite writes (and checkpoints) the last
/// acknowledged batch. [`StateStore::commit`] queues the batch, waiting only when
/// [`COMMITS_AHEAD`] batches are already queued; [`StateStore::flush`] waits until every
/// queued batch is written. Lookups read on a second connection and see what has been
/// written. A process killed with batches still queued loses them: those rows were
/// acknowledged, so the next run sends them again (duplicates, bounded by the queue), and a
/// row the stream did not acknowledge is never in the store.
///
/// **Checkpoints run on a third thread**, on a third connection: copying the log back into
/// the database takes long enough (tens of megabytes, then an fsync) that a writer doing it
/// itself would stop taking commits, and the sync would wait for it. SQLite lets a passive
/// checkpoint run beside a writer, so commits go on being appended meanwhile.
pub struct SqliteStore {
    /// Lookups.
    reader: Connection,
    writer: Option<Writer>,
    path: String,
    /// Lookup queries by (column, number of keys), built once.
    lookup_sql: HashMap<(&'static str, usize), String>,
    /// How the file stores keys.
    keys: KeyForm,
}

/// How a file stores its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyForm {
    /// Integers after their length (see [`stored_key`]): schema version 2.
    ByLength,
    /// As the caller wrote them: a version 1 file opened without its upgrade.
    AsWritten,
}

impl KeyForm {
    fn stored(self, key: &str) -> Cow<'_, str> {
        match self {
            KeyForm::ByLength => stored_key(key),
            KeyForm::AsWritten => Cow::Borrowed(key),
        }
    }

    fn caller_key(self, stored: String) -> String {
        match self {
            KeyForm::ByLength => key_from_stored(stored),
            KeyForm::AsWritten => stored,
        }
    }
}

/// The connection lookups read on.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    reader.pragma_update(None, "cache_size", -32768)?;
    Ok(reader)
}

/// The writing side: a thread with its own connection, fed through a bounded queue.
struct Writer {
    jobs: SyncSender<Job>,
    /// The writer's or the checkpointer's failure, reported by the next commit or flush.
    failures: Receiver<StateError>,
    thread: Option<JoinHandle<()>>,
    /// Ends once the writer's connection is closed.
    checkpointer: Option<JoinHandle<()>>,
    /// Set once the writer failed: every later write fails too.
    failed: Option<String>,
}

enum Job {
    Commit(Vec<Change>),
    /// A row of `meta`: the store's own (`baseline`) or a caller's (prefixed, apart from
    /// the store's own), and its value.
    SetMeta(String, String),
    /// Answered once every job before it is done.
    Flush(SyncSender<()>),
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, upgrading a file of an older schema
    /// version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_with(path.as_ref(), true)
    }

    /// Opens the store at `path` without upgrading a file of an older schema version: such a
    /// file is read as it is, and the store refuses to write to it. For runs that write
    /// nothing (a dry run), so that trying a newer kinesync leaves the file as the older one
    /// can still read it. A file of the current version opens as with [`open`](Self::open).
    pub fn open_without_upgrade(path: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, upgrade: bool) -> Result<Self, StateError> {
        let name = path.display().to_string();
        let sql = |source| StateError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        let keys = init(&conn, &name, upgrade)?;
        let reader = open_reader(path).map_err(sql)?;
        // A file read as an older version wrote it is never written.
        let writer = match keys {
            KeyForm::ByLength => Some(Writer::start(conn, path)?),
            KeyForm::AsWritten => None,
        };
        Ok(Self {
            reader,
            writer,
            path: name,
            lookup_sql: HashMap::new(),
            keys,
        })
    }

    /// The writer; none for a file opened without its upgrade.
    fn writer(&mut self) -> Result<&mut Writer, StateError> {
        let path = &self.path;
        self.writer
            .as_mut()
            .ok_or_else(|| StateError::NotUpgraded { path: path.clone() })
    }

    /// Queues a job for the writer, first reporting a failure it had.
    fn send(&mut self, job: Job) -> Result<(), StateError> {
        let path = self.path.clone();
        let writer = self.writer()?;
        writer.check(&path)?;
        if writer.jobs.send(job).is_err() {
            return Err(writer.stopped(&path));
        }
        Ok(())
    }

    fn sql(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Looks `keys` up, `IN (...)` a few hundred at a time. Keys found are matched back to
    /// their place through a map of their stored forms; a key asked more than once is answered
    /// at every place.
    fn lookup<T: Clone>(
        &mut self,
        keys: &[String],
        column: &'static str,
        read: impl Fn(rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<T>,
    ) -> Result<Vec<Option<T>>, StateError> {
        let path = self.path.clone();
        let sql = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut found: Vec<Option<T>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
        for (chunk_index, chunk) in keys.chunks(LOOKUP_CHUNK).enumerate() {
            let stored: Vec<Cow<'_, str>> = chunk.iter().map(|k| self.keys.stored(k)).collect();
            let mut places: HashMap<&str, usize> = HashMap::with_capacity(chunk.len());
            // Places of keys asked again in the chunk, and where they were first asked.
            let mut again: Vec<(usize, usize)> = Vec::new();
            for (i, key) in stored.iter().enumerate() {
                let place = chunk_index * LOOKUP_CHUNK + i;
                let first = *places.entry(key.as_ref()).or_insert(place);
                if first != place {
                    again.push((place, first));
                }
            }
            let query = self
                .lookup_sql
                .entry((column, chunk.len()))
                .or_insert_with(|| {
                    let placeholders = vec!["?"; chunk.len()].join(",");
                    format!("SELECT key, {column} FROM rows WHERE key IN ({placeholders})")
                })
                .clone();
            let mut statement = self.reader.prepare_cached(&query).map_err(sql)?;
            let mut rows = statement
                .query(params_from_iter(stored.iter()))
                .map_err(sql)?;
            while let Some(row) = rows.next().map_err(sql)? {
                let key = row.get_ref(0).map_err(sql)?;
                let key = key.as_str().map_err(|e| sql(e.into()))?;
                if let Some(&place) = places.get(key) {
                    let value = read(row.get_ref(1).map_err(sql)?).map_err(|e| sql(e.into()))?;
                    found[place] = Some(value);
                }
            }
            for (place, first) in again {
                found[place] = found[first].clone();
            }
        }
        Ok(found)
    }
}

impl Writer {
    /// Starts the writer thread on `writer`, and the checkpointer beside it.
    fn start(mut writer: Connection, path: &Path) -> Result<Self, StateError> {
        let name = path.display().to_string();
        let sql = |source| StateError::Sqlite {
            path: name.clone(),
            source,
        };
        let checkpoints = Connection::open(path).map_err(sql)?;
        // A connection finds the log only once it has read the file; until then its
        // checkpoints do nothing.
        checkpoints
            .query_row("SELECT COUNT(*) FROM meta", [], |_| Ok(()))
            .map_err(sql)?;
        let (jobs, queue) = sync_channel(COMMITS_AHEAD);
        let (report, failures) = sync_channel(2);
        // Asks for a checkpoint; one pending request stands for any number.
        let (ask, asked) = sync_channel::<()>(1);
        // Replaces SQLite's own checkpoint-on-commit.
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= CHECKPOINT_PAGES {
                    ask.try_send(()).ok();
                }
                Ok(())
            }))
            .map_err(sql)?;
        let spawn = |role: &str, name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map_err(|e| StateError::Thread {
                    path: path.display().to_string(),
                    message: format!("cannot start the thread that {role}: {e}"),
                })
        };
        let checkpoint_path = name.clone();
        let checkpoint_report = report.clone();
        let checkpointer = spawn(
            "checkpoints it",
            "kinesync-checkpoint",
            Box::new(move || {
                checkpoint(&checkpoints, &checkpoint_path, &asked, &checkpoint_report)
            }),
        )?;
        let thread_path = name.clone();
        let thread = spawn(
            "writes it",
            "kinesync-state",
            Box::new(move || write_jobs(writer, &thread_path, &queue, &report)),
        )?;
        Ok(Self {
            jobs,
            failures,
            thread: Some(thread),
            checkpointer: Some(checkpointer),
            failed: None,
        })
    }

    /// The writer's failure, if it had one.
    fn check(&mut self, path: &str) -> Result<(), StateError> {
        if let Ok(failure) = self.failures.try_recv() {
            self.failed = Some(failure.to_string());
            return Err(failure);
        }
        match &self.failed {
            Some(message) => Err(StateError::Thread {
                path: path.to_owned(),
                message: format!("an earlier commit failed ({message}); nothing more is written"),
            }),
            None => Ok(()),
        }
    }

    /// The error for a writer thread that is gone.
    fn stopped(&mut self, path: &str) -> StateError {
        self.check(path)
            .err()
            .unwrap_or_else(|| StateError::Thread {
                path: path.to_owned(),
                message: "the thread writing it stopped".into(),
            })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Every queued commit is written before the store is gone, so that a store opened
        // again on the same file (the next run) sees them.
        if let Some(mut writer) = self.writer.take() {
            let threads = [writer.thread.take(), writer.checkpointer.take()];
            drop(writer);
            // The writer first: closing its connection ends the checkpointer's requests.
            for thread in threads.into_iter().flatten() {
                thread.join().ok();
            }
        }
    }
}

/// Sets the writing connection up and checks (or creates) the schema.
fn init(conn: &Connection, path: &str, upgrade: bool) -> Result<KeyForm, StateError> {
    let sql = |source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    };
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    conn.pragma_update(None, "cache_size", -16384)
        .map_err(sql)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    match version {
        0 => conn
            .execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS rows (
                     key TEXT NOT NULL UNIQUE,
                     fingerprint BLOB NOT NULL,
                     row BLOB NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                 PRAGMA user_version = 2;
                 COMMIT;",
            )
            .map(|()| KeyForm::ByLength)
            .map_err(sql),
        1 if !upgrade => Ok(KeyForm::AsWritten),
        // Version 2 stores non-negative integer keys after their length (see `stored_key`),
        // and its callers may keep values in `meta`. Rows written by version 1 stay readable.
        // An older kinesync refuses the upgraded file rather than misread it.
        1 => conn
            .execute_batch(
                "BEGIN;
                 UPDATE rows SET key = char(31) || key WHERE unicode(key) < 32;
                 UPDATE rows SET key = char(length(key)) || key
                     WHERE length(key) BETWEEN 1 AND 20 AND key NOT GLOB '*[^0-9]*';
                 PRAGMA user_version = 2;
                 COMMIT;",
            )
            .map(|()| KeyForm::ByLength)
            .map_err(sql),
        SCHEMA_VERSION => Ok(KeyForm::ByLength),
        found => Err(StateError::SchemaVersion {
            path: path.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        }),
    }
}

/// The writer thread: runs jobs in order until the store is dropped. After a failure it
/// reports it and writes nothing more.
fn write_jobs(
    mut conn: Connection,
    path: &str,
    queue: &Receiver<Job>,
    report: &SyncSender<StateError>,
) {
    let mut failed = false;
    for job in queue {
        let result = match job {
            Job::Flush(done) => {
                done.send(()).ok();
                continue;
            }
            _ if failed => continue,
            Job::Commit(changes) => write_changes(&mut conn, path, &changes),
            Job::SetMeta(name, value) => conn
                .execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )
                .map(drop)
                .map_err(|source| StateError::Sqlite {
                    path: path.to_owned(),
                    source,
                }),
        };
        if let Err(e) = result {
            failed = true;
            report.send(e).ok();
        }
    }
}

/// The checkpointer thread: a passive checkpoint each time the writer asks, until the writer
/// is gone. A checkpoint that fails is reported like a failed commit: the rows are safe in the
/// log, but a store that cannot write its file will not take the next commit either.
fn checkpoint(
    conn: &Connection,
    path: &str,
    asked: &Receiver<()>,
    report: &SyncSender<StateError>,
) {
    for () in asked {
        match conn.wal_checkpoint_v2(Some(rusqlite::MAIN_DB), CheckpointMode::PASSIVE) {
            Ok(_) => {}
            // A passive checkpoint never waits: one that meets the writer mid-commit is
            // refused as busy. It is tried again at the next commit the writer asks after.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) => {}
            Err(source) => {
                report
                    .send(StateError::Sqlite {
                        path: path.to_owned(),
                        source,
                    })
                    .ok();
                return;
            }
        }
    }
    // The store is closing: what is left goes into the database and the log is emptied, so
    // that no large log outlives the run. Nobody is left to hear a failure, and none loses
    // anything: the next open reads the log. Another process reading the file makes it
    // wait, briefly: closing the store must not hang on it.
    conn.busy_timeout(std::time::Duration::from_millis(100))
        .ok();
    conn.wal_checkpoint_v2(Some(rusqlite::MAIN_DB), CheckpointMode::TRUNCATE)
        .ok();
}

/// One atomic commit.
fn write_changes(conn: &mut Connection, path: &str, changes: &[Change]) -> Result<(), StateError> {
    let sql = |source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let tx = conn.transaction().map_err(sql)?;
    {
        let mut upserts = Upserts::new(&tx).map_err(sql)?;
        let mut delete = tx
            .prepare_cached("DELETE FROM rows WHERE key = ?1")
            .map_err(sql)?;
        for change in changes {
            match change {
                Change::Upsert {
                    key,
                    fingerprint,
                    row,
                } => upserts.push(key, *fingerprint, row).map_err(sql)?,
                Change::Delete { key } => {
                    // In order: an upsert of the same key before it must land first.
                    upserts.write().map_err(sql)?;
                    delete.execute(params![stored_key(key)]).map_err(sql)?;
                }
            }
        }
        upserts.write().map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

/// Rows per multi-row `INSERT`: each statement execution opens cursors and resets the
/// machine, a cost a backfill would otherwise pay once per row.
const UPSERT_GROUP: usize = 16;

/// Upserts, written [`UPSERT_GROUP`] rows per statement, in the order pushed.
struct Upserts<'c, 'a> {
    one: rusqlite::CachedStatement<'c>,
    group: rusqlite::CachedStatement<'c>,
    pending: Vec<(Cow<'a, str>, [u8; 16], &'a [u8])>,
}

impl<'c, 'a> Upserts<'c, 'a> {
    fn new(tx: &'c rusqlite::Transaction<'_>) -> rusqlite::Result<Self> {
        // Made once: every commit looks its statement up by this text.
        static GROUP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let values = vec!["(?, ?, ?)"; UPSERT_GROUP].join(", ");
            format!("INSERT OR REPLACE INTO rows (key, fingerprint, row) VALUES {values}")
        });
        Ok(Self {
            one: tx.prepare_cached(
                "INSERT OR REPLACE INTO rows (key, fingerprint, row) VALUES (?1, ?2, ?3)",
            )?,
            group: tx.prepare_cached(&GROUP)?,
            pending: Vec::with_capacity(UPSERT_GROUP),
        })
    }

    fn push(
        &mut self,
        key: &'a str,
        fingerprint: Fingerprint,
        row: &'a [u8],
    ) -> rusqlite::Result<()> {
        self.pending
            .push((stored_key(key), fingerprint.to_be_bytes(), row));
        if self.pending.len() == UPSERT_GROUP {
            for (i, (key, fingerprint, row)) in self.pending.iter().enumerate() {
                self.group.raw_bind_parameter(3 * i + 1, key)?;
                self.group.raw_bind_parameter(3 * i + 2, &fingerprint[..])?;
                self.group.raw_bind_parameter(3 * i + 3, row)?;
            }
            self.group.raw_execute()?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes what is pending, one row per statement.
    fn write(&mut self) -> rusqlite::Result<()> {
        for (key, fingerprint, row) in self.pending.drain(..) {
            self.one.execute(params![key, &fingerprint[..], row])?;
        }
        Ok(())
    }
}

/// The longest run of digits stored with a length: 20 digits hold any 64-bit integer.
const MAX_LENGTH_PREFIXED: usize = 20;

/// How a key is stored. A non-negative integer's digits go after a character that gives their
/// count (`42` → `\u{2}42`), so that the key index's order is the integers' order: a model
/// read by ascending id then appends to the index instead of splitting pages in its middle
/// (text order puts `10` before `9`). A key that itself starts with a control character
/// (kinesync's never do: they are compact JSON) goes after [`ESCAPED`], so that a stored key
/// starts with a control character exactly when one was added. Any other key is stored as it
/// is.
fn stored_key(key: &str) -> Cow<'_, str> {
    let digits = key.len();
    let prefix =
        if (1..=MAX_LENGTH_PREFIXED).contains(&digits) && key.bytes().all(|b| b.is_ascii_digit()) {
            char::from(digits as u8)
        } else if key.as_bytes().first().is_some_and(|&b| b < 0x20) {
            ESCAPED
        } else {
            return Cow::Borrowed(key);
        };
    let mut stored = String::with_capacity(key.len() + 1);
    stored.push(prefix);
    stored.push_str(key);
    Cow::Owned(stored)
}

/// What a stored key that starts with a control character of its own starts with (the lengths
/// of integers take 0x01 to 0x14).
const ESCAPED: char = '\u{1f}';

/// A key as the caller knows it, from its stored form: without the character
/// [`stored_key`] added, if it added one.
fn key_from_stored(mut stored: String) -> String {
    if stored.as_bytes().first().is_some_and(|&b| b < 0x20) {
        stored.remove(0);
    }
    stored
}

fn fingerprint_of(blob: &[u8]) -> Fingerprint {
    let mut bytes = [0u8; 16];
    let n = blob.len().min(16);
    bytes[..n].copy_from_slice(&blob[..n]);
    u128::from_be_bytes(bytes)
}

impl StateStore for SqliteStore {
    fn has_baseline(&self) -> Result<bool, StateError> {
        let value: Option<String> = self
            .reader
            .query_row("SELECT value FROM meta WHERE name = 'baseline'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(value.is_some())
    }

    fn set_baseline(&mut self) -> Result<(), StateError> {
        self.send(Job::SetMeta("baseline".into(), "taken".into()))?;
        self.flush()
    }

    fn fingerprints(&mut self, keys: &[String]) -> Result<Vec<Option<Fingerprint>>, StateError> {
        self.lookup(keys, "fingerprint", |value| {
            value.as_blob().map(fingerprint_of)
        })
    }

    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.lookup(keys, "row", |value| value.as_blob().map(<[u8]>::to_vec))
    }

    fn keys_after(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StateError> {
        let path = self.path.clone();
        let sql = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let form = self.keys;
        let read = |r: &rusqlite::Row<'_>| r.get::<_, String>(0).map(|k| form.caller_key(k));
        // Reads only the key index, never the stored rows. The first page has no lower bound:
        // the empty key comes before any `after`.
        let keys = match after {
            Some(after) => self
                .reader
                .prepare_cached("SELECT key FROM rows WHERE key > ?1 ORDER BY key LIMIT ?2")
                .and_then(|mut s| {
                    s.query_map(params![self.keys.stored(after), limit], read)?
                        .collect::<Result<Vec<_>, _>>()
                }),
            None => self
                .reader
                .prepare_cached("SELECT key FROM rows ORDER BY key LIMIT ?1")
                .and_then(|mut s| {
                    s.query_map(params![limit], read)?
                        .collect::<Result<Vec<_>, _>>()
                }),
        };
        keys.map_err(sql)
    }

    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StateError> {
        self.send(Job::Commit(changes))
    }

    fn flush(&mut self) -> Result<(), StateError> {
        if self.writer.is_none() {
            // Nothing was written: there is nothing to wait for.
            return Ok(());
        }
        let (done, answer) = sync_channel(1);
        self.send(Job::Flush(done))?;
        let path = self.path.clone();
        let writer = self.writer()?;
        if answer.recv().is_err() {
            return Err(writer.stopped(&path));
        }
        writer.check(&path)
    }

    fn key_count(&self) -> Result<usize, StateError> {
        let n: i64 = self
            .reader
            .query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        Ok(usize::try_from(n).unwrap_or_default())
    }

    fn meta(&mut self, name: &str) -> Result<Option<String>, StateError> {
        // A value set moments ago may still be queued for the writer.
        self.flush()?;
        self.reader
            .query_row(
                "SELECT value FROM meta WHERE name = ?1",
                params![caller_meta(name)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StateError> {
        self.send(Job::SetMeta(caller_meta(name), value.to_owned()))
    }
}

/// A caller's name for a value in `meta`, kept apart from the store's own (`baseline`).
fn caller_meta(name: &str) -> String {
    format!("caller.{name}")
}
