//! The SQLite store: one file, versioned schema, atomic commits written in the background.
//!
//! This file holds the store itself: opening a file, and the [`StateStore`] methods. The
//! parts they rely on are kept one to a file, so that each can be read (and changed) alone:
//!
//! - [`schema`]: the pragmas, the tables of a new file, the upgrades of older files;
//! - [`keys`]: how keys are stored, so that integer keys sort as numbers;
//! - [`lookup`]: the read connection, and lookups a chunk of keys at a time;
//! - [`writer`]: the thread that writes commits in the background, and its queue of jobs;
//! - [`commit`]: one commit as SQL, in a single transaction;
//! - [`checkpoint`]: the thread that copies the log back into the database.

mod checkpoint;
mod commit;
mod keys;
mod lookup;
mod schema;
mod writer;

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::lock::{LockHolder, StateLock};
use crate::{Change, Doubt, Seen, StateError, StateStore};
use keys::KeyForm;
use lookup::{fingerprint_of, open_reader, read_doubts};
use schema::init;
use writer::{Job, Writer};

/// How many commits may wait for the writer thread before [`StateStore::commit`] waits.
pub const COMMITS_AHEAD: usize = 4;

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
    /// The keys in doubt, by the caller's key: the `doubt` table, read when the store opens
    /// and kept up to date with every commit, so that lookups need not read it (it is small:
    /// the records a run sent without an answer read).
    doubts: HashMap<String, Doubt>,
    /// One writer at a time: held while the store is open for writing, released last (after
    /// the writer thread has written everything).
    lock: Option<StateLock>,
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
    /// version, and takes its lock (`PATH.lock`): while it is open, another `open` of the
    /// same store fails with [`StateError::Locked`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_for_run(path, "")
    }

    /// [`open`](Self::open), with the lock noting `run` as its holder, so that a run refused
    /// the store is told which run has it.
    pub fn open_for_run(path: impl AsRef<Path>, run: &str) -> Result<Self, StateError> {
        let lock = StateLock::acquire(path.as_ref(), run)?;
        let mut store = Self::open_with(path.as_ref(), true)?;
        store.lock = Some(lock);
        Ok(store)
    }

    /// The run whose lock this store took over: one that was killed while it held the store
    /// (its note was left behind, its lock released by the operating system).
    pub fn took_over_from(&self) -> Option<&LockHolder> {
        self.lock.as_ref().and_then(StateLock::taken_over)
    }

    /// Opens the store at `path` without upgrading a file of an older schema version: such a
    /// file is read as it is, and the store refuses to write to it. For runs that write
    /// nothing (a dry run), so that trying a newer kinesync leaves the file as the older one
    /// can still read it. A file of the current version opens as with [`open`](Self::open).
    /// No lock is taken: such a run only reads, which SQLite allows beside a writer.
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
        let opened = init(&conn, &name, upgrade)?;
        let reader = open_reader(path).map_err(sql)?;
        let doubts = if opened.doubts {
            read_doubts(&reader, opened.keys).map_err(sql)?
        } else {
            HashMap::new()
        };
        // A file read as an older version wrote it is never written.
        let writer = if opened.writable {
            Some(Writer::start(conn, path)?)
        } else {
            None
        };
        Ok(Self {
            reader,
            writer,
            path: name,
            lookup_sql: HashMap::new(),
            keys: opened.keys,
            doubts,
            lock: None,
        })
    }

    /// Forgets everything: every key's row, the baseline and every value kept beside them,
    /// in one transaction, written when this returns. The file stays, at its schema version;
    /// the next run finds an empty store, as a first run does.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.send(Job::Clear)?;
        self.doubts.clear();
        self.flush()
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
        self.writer()?.send(&path, job)
    }

    fn sql(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Every queued commit is written before the store is gone, so that a store opened
        // again on the same file (the next run) sees them.
        if let Some(writer) = self.writer.take() {
            writer.close();
        }
    }
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

    fn seen(&mut self, keys: &[String]) -> Result<Vec<Option<Seen>>, StateError> {
        let found = self.lookup(keys, "fingerprint", fingerprint_of)?;
        Ok(keys
            .iter()
            .zip(found)
            .map(|(key, fingerprint)| {
                fingerprint.map(|fingerprint| match self.doubts.get(key) {
                    Some(doubt) => Seen::InDoubt(*doubt),
                    None => Seen::Acknowledged(fingerprint),
                })
            })
            .collect())
    }

    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.lookup(keys, "row", |row| {
            Ok(row
                .get_ref(1)?
                .as_blob()
                .map_err(rusqlite::Error::from)?
                .to_vec())
        })
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
        for change in &changes {
            match change {
                Change::InDoubt { key, doubt, .. } => {
                    self.doubts.insert(key.clone(), *doubt);
                }
                Change::Upsert { key, .. } | Change::Settle { key } | Change::Delete { key } => {
                    self.doubts.remove(key);
                }
            }
        }
        self.send(Job::Commit(changes))
    }

    fn flush(&mut self) -> Result<(), StateError> {
        if self.writer.is_none() {
            // Nothing was written: there is nothing to wait for.
            return Ok(());
        }
        let path = self.path.clone();
        self.writer()?.flush(&path)
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
