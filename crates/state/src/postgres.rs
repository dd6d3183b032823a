//! The state kept in the warehouse: a sync's rows and values in three tables of a PostgreSQL
//! schema, next to the model they describe.
//!
//! Where it sits: beside the engine, like the SQLite store, for syncs whose model is in
//! PostgreSQL. Keeping the state in the warehouse is what lets a later run compute the diff
//! there (the model joined with the state on the primary key).
//!
//! Tables, in the schema the caller names, for the sync named `name`:
//! - `kinesync_<name>_rows (key text COLLATE "C" PRIMARY KEY, fingerprint bytea, row bytea,
//!   doubt bytea)`: each key's last acknowledged (or in-doubt) version, as the SQLite store
//!   keeps it;
//! - `kinesync_<name>_meta (name text PRIMARY KEY, value text)`: the schema version, the
//!   baseline, and the caller's values (prefixed `caller.`);
//! - `kinesync_<name>_marks (batch int8 PRIMARY KEY, keys text[], fingerprints bytea[],
//!   rows bytea[], doubts bytea[])`: marks in doubt written a batch at a time, until settled
//!   (see the `marks` module).
//!
//! Every commit is one transaction, written in order. A call's marks are one row of the marks
//! table, and their settles each key's row once (the `marks` module); any other commit reads
//! the stored versions of the keys it touches, applies the changes to them in order exactly
//! as [`MemoryStore`](crate::MemoryStore) applies them, and writes the result back with one
//! `DELETE` and one `INSERT ... ON CONFLICT` (the `rows` module): so a crash at any point
//! leaves the state with what the stream acknowledged, and no more.
//!
//! One sync at a time: the store holds a session-level advisory lock on its tables' name for as
//! long as it is open; a second run finds it taken and stops with [`StateError::Locked`].
//!
//! The connection lives on a thread of its own, which takes the store's work in order: a
//! lookup waits for its answer (and so sees every commit made before it), a commit does not
//! (the run goes on sending while it is written, four commits at the most; `flush`
//! waits for them). The client also blocks on a runtime of its own, which tokio forbids on a
//! thread driving a runtime: on its own thread, the store works from anywhere.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use postgres::Client;

mod marks;
mod rows;

use self::marks::Outstanding;
use self::rows::{STORED_COLUMNS, apply, decoded, left_behind};
use crate::{Change, Seen, SeenRow, StateError, StateStore, StoredRow};

/// The version of the tables this build writes and reads. Version 1 had no marks table; a
/// store of version 1 is upgraded when opened (by creating it), and a build of version 1
/// refuses a store of version 2, whose marks it would not read.
pub const POSTGRES_SCHEMA_VERSION: i64 = 2;

/// Work for the connection's thread.
type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// How many commits may wait for the connection's thread: a run sends on while they are
/// written (a kill then loses at most these, which the next run sends again).
const COMMITS_AHEAD: usize = 4;

/// A sync's state in PostgreSQL.
pub struct PostgresStore {
    /// The connection's thread takes the jobs in order: lookups wait for their answer, and
    /// so see every commit made before them; commits do not wait. `None` once dropped.
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The first commit that failed: every later call reports it, and no later commit is
    /// written.
    failed: Arc<Mutex<Option<String>>>,
    /// Opened for a dry run: read, never written.
    read_only: bool,
    /// `postgres://user@host:port/database`, for messages.
    place: String,
    rows: String,
    meta: String,
    marks: String,
    /// The marks written a batch at a time and not settled yet.
    outstanding: Outstanding,
    /// Settles write their rows with `COPY` (see [`marks`]): set while the store believes
    /// the keys it settles have no row yet (the rows table was empty when opened or
    /// cleared), cleared by the first settle that finds one.
    settle_by_copy: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("place", &self.place)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Runs `work` with the client on the connection's thread, after every job before it, and
    /// gives its answer.
    fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client) -> T + Send + 'static,
    ) -> Result<T, StateError> {
        self.check()?;
        let (answer, answered) = sync_channel(1);
        self.send(Box::new(move |client| {
            // The caller waits for the answer; it is gone only if it panicked.
            answer.send(work(client)).ok();
        }))?;
        answered.recv().map_err(|_| self.gone())
    }

    /// Queues `job` for the connection's thread.
    fn send(&self, job: Job) -> Result<(), StateError> {
        let jobs = self.jobs.as_ref().ok_or_else(|| self.gone())?;
        jobs.send(job).map_err(|_| self.gone())
    }

    /// Reports an earlier commit that failed.
    fn check(&self) -> Result<(), StateError> {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match failed.as_ref() {
            Some(message) => Err(StateError::Postgres {
                place: self.describe(),
                message: format!("a commit failed, so nothing later was written: {message}"),
            }),
            None => Ok(()),
        }
    }

    /// Queues a commit's `write` for the connection's thread; a write that fails is kept, and
    /// reported by every later call, and nothing after it is written (the state stays a
    /// prefix of the acknowledgements).
    fn queue(
        &self,
        write: impl FnOnce(&mut Client) -> Result<(), String> + Send + 'static,
    ) -> Result<(), StateError> {
        let failed = self.failed.clone();
        self.send(Box::new(move |client| {
            let mut failed = failed.lock().unwrap_or_else(PoisonError::into_inner);
            if failed.is_none()
                && let Err(message) = write(client)
            {
                *failed = Some(message);
            }
        }))
    }

    /// Writes the outstanding marks to their keys' rows, deleting their batches' rows.
    fn commit_outstanding(&mut self) -> Result<(), StateError> {
        self.check()?;
        let (rows_table, marks_table) = (self.rows.clone(), self.marks.clone());
        let (marks, done) = self.outstanding.drain();
        self.queue(move |client| apply(client, &rows_table, &marks_table, marks, &done))
    }

    fn gone(&self) -> StateError {
        StateError::Postgres {
            place: self.describe(),
            message: "the connection's thread stopped".to_owned(),
        }
    }
}

impl Drop for PostgresStore {
    /// Lets the connection's thread write what is queued, then close the connection there
    /// (closing blocks too, and releases the sync's lock, held by the session).
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// What PostgreSQL's error says, and what to do.
fn error_message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) if db.code().code() == "42501" => format!(
            "{} (the state needs CREATE on the database or its schema, and to own its tables: see the README)",
            db.message()
        ),
        Some(db) => db.message().to_owned(),
        None if error.is_closed() => "the connection to the warehouse was lost".to_owned(),
        None => error.to_string(),
    }
}

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresStore {
    /// The state of the sync `name` in `schema`, over `client` (connected to `place`): the
    /// schema and tables are created if missing (which needs `CREATE` on the database, or on
    /// the schema when it exists), and the sync's lock is taken.
    pub fn open(
        client: Client,
        place: impl Into<String>,
        schema: &str,
        name: &str,
    ) -> Result<Self, StateError> {
        Self::open_as(client, place.into(), schema, name, false)
    }

    /// The state of the sync `name` in `schema` for a dry run: read as it is, never written,
    /// no lock taken, nothing created; `None` when its tables do not exist (no run yet).
    pub fn open_read_only(
        client: Client,
        place: impl Into<String>,
        schema: &str,
        name: &str,
    ) -> Result<Option<Self>, StateError> {
        let store = Self::open_as(client, place.into(), schema, name, true)?;
        let exists = format!(
            "SELECT to_regclass('{}') IS NOT NULL",
            store.rows.replace('\'', "''")
        );
        let found = store.call(move |client| client.query_one(&exists, &[]))?;
        let found: bool = found.map_err(|e| store.error(&e))?.get(0);
        Ok(found.then_some(store))
    }

    fn open_as(
        client: Client,
        place: String,
        schema: &str,
        name: &str,
        read_only: bool,
    ) -> Result<Self, StateError> {
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 40
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !valid(schema) || !valid(name) {
            return Err(StateError::Postgres {
                place,
                message: format!(
                    "the state's schema {schema:?} and name {name:?} must each be 1 to 40 letters, digits or underscores"
                ),
            });
        }
        let (jobs, queued) = sync_channel::<Job>(COMMITS_AHEAD);
        let thread = std::thread::Builder::new()
            .name("kinesync-postgres-state".into())
            .spawn(move || {
                let mut client = client;
                for job in queued {
                    job(&mut client);
                }
            })
            .map_err(|e| StateError::Postgres {
                place: place.clone(),
                message: format!("cannot start the connection's thread: {e}"),
            })?;
        let mut store = Self {
            jobs: Some(jobs),
            thread: Some(thread),
            failed: Arc::default(),
            read_only,
            rows: format!(
                "{}.{}",
                quoted(schema),
                quoted(&format!("kinesync_{name}_rows"))
            ),
            meta: format!(
                "{}.{}",
                quoted(schema),
                quoted(&format!("kinesync_{name}_meta"))
            ),
            marks: format!(
                "{}.{}",
                quoted(schema),
                quoted(&format!("kinesync_{name}_marks"))
            ),
            outstanding: Outstanding::default(),
            settle_by_copy: Arc::default(),
            place,
        };
        let lock_key = format!("kinesync state {schema}.{name}");
        // Under a lock of its own: two syncs creating the same schema at once would collide.
        let setup = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtextextended('kinesync state setup', 0));
             CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {rows} (key text COLLATE \"C\" PRIMARY KEY, fingerprint bytea NOT NULL, row bytea NOT NULL, doubt bytea) WITH (fillfactor = 70);
             CREATE TABLE IF NOT EXISTS {meta} (name text PRIMARY KEY, value text NOT NULL);
             CREATE TABLE IF NOT EXISTS {marks} (batch int8 PRIMARY KEY, keys text[] NOT NULL,
               fingerprints bytea[] NOT NULL, rows bytea[] NOT NULL, doubts bytea[] NOT NULL);
             -- A batch's row is written once and read only after a kill: compressing it cost
             -- a fifth of the state's work in a backfill.
             ALTER TABLE {marks} ALTER COLUMN keys SET STORAGE EXTERNAL,
               ALTER COLUMN fingerprints SET STORAGE EXTERNAL,
               ALTER COLUMN rows SET STORAGE EXTERNAL, ALTER COLUMN doubts SET STORAGE EXTERNAL;
             COMMIT;",
            schema = quoted(schema),
            rows = store.rows,
            meta = store.meta,
            marks = store.marks,
        );
        if read_only {
            return Self::read_only_marks(store);
        }
        let meta = store.meta.clone();
        let result: Result<(bool, Option<String>), postgres::Error> =
            store.call(move |client| {
                let locked: bool = client
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                        &[&lock_key],
                    )?
                    .get(0);
                if !locked {
                    return Ok((false, None));
                }
                client.batch_execute(&setup)?;
                // A mark must be on the server's disk before its record goes out: a server
                // (or role) that commits asynchronously by default does not for this session.
                let commits: String = client
                    .query_one("SELECT current_setting('synchronous_commit')", &[])?
                    .get(0);
                if commits == "off" {
                    client.batch_execute("SET synchronous_commit = on")?;
                }
                let version: Option<String> = client
                    .query_opt(
                        &format!("SELECT value FROM {meta} WHERE name = 'schema_version'"),
                        &[],
                    )?
                    .map(|row| row.get(0));
                if version.is_none() {
                    client.execute(
                    &format!(
                        "INSERT INTO {meta} VALUES ('schema_version', $1) ON CONFLICT DO NOTHING"
                    ),
                    &[&POSTGRES_SCHEMA_VERSION.to_string()],
                )?;
                }
                Ok((true, version))
            })?;
        let (locked, version) = result.map_err(|e| store.error(&e))?;
        if !locked {
            return Err(StateError::Locked {
                path: store.describe(),
                holder: None,
            });
        }
        match version.and_then(|v| v.parse::<i64>().ok()) {
            // Version 1 lacked only the marks table, which the setup created.
            Some(1) => {
                store.set_meta_value("schema_version", &POSTGRES_SCHEMA_VERSION.to_string())?
            }
            Some(found) if found != POSTGRES_SCHEMA_VERSION => {
                return Err(StateError::SchemaVersion {
                    path: store.describe(),
                    found,
                    expected: POSTGRES_SCHEMA_VERSION,
                });
            }
            _ => {}
        }
        store.recover_marks()?;
        let empty = format!("SELECT NOT EXISTS (SELECT FROM {})", store.rows);
        let empty = store.call(move |client| client.query_one(&empty, &[]))?;
        let empty: bool = empty.map_err(|e| store.error(&e))?.get(0);
        store.settle_by_copy.store(empty, Ordering::Relaxed);
        Ok(store)
    }

    /// Writes the batches of marks an earlier run left (killed, or with records pending) to
    /// their keys' rows, in one transaction with their rows' deletion (see the `marks`
    /// module).
    fn recover_marks(&mut self) -> Result<(), StateError> {
        let (rows_table, marks_table) = (self.rows.clone(), self.marks.clone());
        let recovered = self.call(move |client| -> Result<(), String> {
            let (changes, done) = left_behind(client, &marks_table)?;
            if done.is_empty() {
                return Ok(());
            }
            apply(client, &rows_table, &marks_table, changes, &done)
        })?;
        recovered.map_err(|message| StateError::Postgres {
            place: self.describe(),
            message,
        })
    }

    /// A store opened for a dry run keeps the marks it finds in memory, laid over what it
    /// reads, as a run would write them to their rows first (it writes nothing itself).
    fn read_only_marks(mut store: Self) -> Result<Self, StateError> {
        let marks_table = store.marks.clone();
        let found = store.call(move |client| {
            let exists: bool = client
                .query_one(
                    &format!(
                        "SELECT to_regclass('{}') IS NOT NULL",
                        marks_table.replace('\'', "''")
                    ),
                    &[],
                )
                .map_err(|e| error_message(&e))?
                .get(0);
            if exists {
                left_behind(client, &marks_table).map(|(changes, _)| changes)
            } else {
                Ok(Vec::new())
            }
        })?;
        let found = found.map_err(|message| StateError::Postgres {
            place: store.describe(),
            message,
        })?;
        store.outstanding.keep_found(found);
        Ok(store)
    }

    fn error(&self, error: &postgres::Error) -> StateError {
        StateError::Postgres {
            place: self.describe(),
            message: error_message(error),
        }
    }

    /// The stored rows of `keys`.
    fn stored(&mut self, keys: &[String]) -> Result<BTreeMap<String, StoredRow>, StateError> {
        let query = format!(
            "SELECT {STORED_COLUMNS} FROM {} WHERE key = ANY($1)",
            self.rows
        );
        let asked = keys.to_vec();
        let rows = self.call(move |client| client.query(&query, &[&asked]))?;
        let rows = rows.map_err(|e| self.error(&e))?;
        let mut stored = rows
            .iter()
            .map(|row| {
                decoded(row).map_err(|message| StateError::Postgres {
                    place: self.describe(),
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        self.outstanding.overlay(keys, &mut stored);
        Ok(stored)
    }

    fn meta_value(&self, name: &str) -> Result<Option<String>, StateError> {
        let query = format!("SELECT value FROM {} WHERE name = $1", self.meta);
        let name = name.to_owned();
        let row = self.call(move |client| client.query_opt(&query, &[&name]))?;
        Ok(row.map_err(|e| self.error(&e))?.map(|r| r.get(0)))
    }

    /// Forgets everything the sync sent (its rows, its baseline, its values): the next run is
    /// a first run. One transaction, under the sync's lock.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.writable()?;
        let statements = format!(
            "BEGIN; TRUNCATE {rows}, {marks}; DELETE FROM {meta} WHERE name <> 'schema_version'; COMMIT;",
            rows = self.rows,
            meta = self.meta,
            marks = self.marks,
        );
        self.outstanding = Outstanding::default();
        let done = self.call(move |client| client.batch_execute(&statements))?;
        done.map_err(|e| self.error(&e))?;
        self.settle_by_copy.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The table of the rows, quoted and schema-qualified (`"kinesync"."kinesync_users_rows"`):
    /// what a diff in the warehouse joins the model with.
    pub fn rows_table(&self) -> &str {
        &self.rows
    }

    /// Where the state is: `postgres://user@host:port/database (schema.table)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.place, self.rows)
    }

    /// Refuses a write to a store opened for a dry run.
    fn writable(&self) -> Result<(), StateError> {
        if self.read_only {
            return Err(StateError::Postgres {
                place: self.describe(),
                message: "opened read-only for a dry run, so it cannot be written".to_owned(),
            });
        }
        Ok(())
    }

    fn set_meta_value(&mut self, name: &str, value: &str) -> Result<(), StateError> {
        self.writable()?;
        let query = format!(
            "INSERT INTO {} VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            self.meta
        );
        let (name, value) = (name.to_owned(), value.to_owned());
        let done = self.call(move |client| client.execute(&query, &[&name, &value]))?;
        done.map(|_| ()).map_err(|e| self.error(&e))
    }
}

impl StateStore for PostgresStore {
    fn has_baseline(&self) -> Result<bool, StateError> {
        Ok(self.meta_value("baseline")?.is_some())
    }

    fn set_baseline(&mut self) -> Result<(), StateError> {
        self.set_meta_value("baseline", "true")
    }

    fn seen(&mut self, keys: &[String]) -> Result<Vec<Option<Seen>>, StateError> {
        let stored = self.stored(keys)?;
        Ok(keys
            .iter()
            .map(|k| stored.get(k).map(StoredRow::seen))
            .collect())
    }

    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        let stored = self.stored(keys)?;
        Ok(keys
            .iter()
            .map(|k| stored.get(k).map(|r| r.row.clone()))
            .collect())
    }

    fn seen_with_rows(&mut self, keys: &[String]) -> Result<Vec<Option<SeenRow>>, StateError> {
        let stored = self.stored(keys)?;
        // A key asked twice is answered twice.
        Ok(keys
            .iter()
            .map(|k| stored.get(k).map(|r| (r.seen(), r.row.clone())))
            .collect())
    }

    fn keys_after(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StateError> {
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let query = match after {
            Some(_) => format!(
                "SELECT key FROM {} WHERE key > $1 ORDER BY key LIMIT $2",
                self.rows
            ),
            None => format!(
                "SELECT key FROM {} WHERE $1 = $1 ORDER BY key LIMIT $2",
                self.rows
            ),
        };
        let from = after.unwrap_or_default().to_owned();
        let rows = self.call(move |client| client.query(&query, &[&from, &count]))?;
        let mut page: Vec<String> = rows
            .map_err(|e| self.error(&e))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        // With the keys only outstanding marks have yet, in the rows' order (their bytes').
        page.extend(self.outstanding.keys_after(after));
        page.sort_unstable();
        page.dedup();
        page.truncate(limit);
        Ok(page)
    }

    /// Queued for the connection's thread: the run goes on while it is written. A lookup,
    /// or [`flush`](StateStore::flush), waits for it.
    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StateError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.writable()?;
        self.check()?;
        let (rows_table, marks_table) = (self.rows.clone(), self.marks.clone());
        // A call's marks, then its settles: a batch's row, then each key's row once.
        if let Some(batch) = self.outstanding.mark(&changes) {
            return self.queue(move |client| {
                batch
                    .write(client, &marks_table)
                    .map_err(|e| error_message(&e))
            });
        }
        if let Some(settled) = self.outstanding.settle(&changes) {
            let by_copy = self.settle_by_copy.clone();
            return self
                .queue(move |client| settled.write(client, &rows_table, &marks_table, &by_copy));
        }
        // Anything else is applied to the rows as stored, the outstanding marks first.
        let (mut all, done) = self.outstanding.drain();
        all.extend(changes);
        self.queue(move |client| apply(client, &rows_table, &marks_table, all, &done))
    }

    fn flush(&mut self) -> Result<(), StateError> {
        self.call(|_| ())?;
        self.check()
    }

    /// The marks not settled by the run's end (records pending) written to their keys' rows
    /// as doubts, their batches' rows deleted: a batch's row is left only by a kill.
    fn close_run(&mut self) -> Result<(), StateError> {
        if !self.read_only && !self.outstanding.is_empty() {
            self.commit_outstanding()?;
        }
        self.flush()
    }

    fn key_count(&self) -> Result<usize, StateError> {
        // With the keys only outstanding marks have yet.
        let query = format!(
            "SELECT (SELECT count(*) FROM {rows}) + (SELECT count(*) FROM unnest($1::text[]) AS k(key)
               WHERE NOT EXISTS (SELECT FROM {rows} AS r WHERE r.key = k.key))",
            rows = self.rows
        );
        let outstanding = self.outstanding.keys();
        let row = self.call(move |client| client.query_one(&query, &[&outstanding]))?;
        let count: i64 = row.map_err(|e| self.error(&e))?.get(0);
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn meta(&mut self, name: &str) -> Result<Option<String>, StateError> {
        self.meta_value(&format!("caller.{name}"))
    }

    fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StateError> {
        self.set_meta_value(&format!("caller.{name}"), value)
    }
}
