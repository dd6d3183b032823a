//! The SQLite store: one file, versioned schema, atomic commits.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::{Change, Fingerprint, SCHEMA_VERSION, StateError, StateStore};

/// Keys per `IN (...)` lookup: well under SQLite's parameter limit.
const LOOKUP_CHUNK: usize = 500;

/// A state store in a SQLite file.
///
/// The file runs in WAL mode with `synchronous = NORMAL`: a commit is durable against a crash
/// or kill of the process the moment it returns (it is in the log, in the operating system's
/// hands); an operating system crash can lose the last commits, and their rows are then sent
/// again: duplicates, never loss.
pub struct SqliteStore {
    conn: Connection,
    path: String,
    /// Lookup queries by (column, number of keys), built once.
    lookup_sql: HashMap<(&'static str, usize), String>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StateError::Sqlite {
            path: name.clone(),
            source,
        })?;
        Self::init(conn, name)
    }

    /// A store in memory (SQLite's own `:memory:`), for tests of the SQLite code path.
    pub fn open_in_memory() -> Result<Self, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<Self, StateError> {
        let sql = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        // Rows arrive in bulk: fewer, larger checkpoints, and a 64 MiB page cache.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)
            .map_err(sql)?;
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(sql)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        match version {
            0 => {
                conn.execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS rows (
                         key TEXT NOT NULL UNIQUE,
                         fingerprint BLOB NOT NULL,
                         row BLOB NOT NULL
                     );
                     CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                     PRAGMA user_version = 1;
                     COMMIT;",
                )
                .map_err(sql)?;
            }
            SCHEMA_VERSION => {}
            found => {
                return Err(StateError::SchemaVersion {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        Ok(Self {
            conn,
            path,
            lookup_sql: HashMap::new(),
        })
    }

    fn sql(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn lookup<T>(
        &mut self,
        keys: &[String],
        column: &'static str,
        read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<Option<T>>, StateError> {
        let mut found: HashMap<String, T> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let query = self
                .lookup_sql
                .entry((column, chunk.len()))
                .or_insert_with(|| {
                    let placeholders = vec!["?"; chunk.len()].join(",");
                    format!("SELECT key, {column} FROM rows WHERE key IN ({placeholders})")
                })
                .clone();
            let mut statement = self.conn.prepare_cached(&query).map_err(|e| self.sql(e))?;
            let mut rows = statement
                .query(params_from_iter(chunk.iter()))
                .map_err(|e| self.sql(e))?;
            while let Some(row) = rows.next().map_err(|e| StateError::Sqlite {
                path: self.path.clone(),
                source: e,
            })? {
                let key: String = row.get(0).map_err(|e| StateError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })?;
                let value = read(row).map_err(|e| StateError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })?;
                found.insert(key, value);
            }
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }
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
            .conn
            .query_row("SELECT value FROM meta WHERE name = 'baseline'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(value.is_some())
    }

    fn set_baseline(&mut self) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('baseline', 'taken')",
                [],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    fn fingerprints(&mut self, keys: &[String]) -> Result<Vec<Option<Fingerprint>>, StateError> {
        self.lookup(keys, "fingerprint", |row| {
            row.get::<_, Vec<u8>>(1).map(|b| fingerprint_of(&b))
        })
    }

    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.lookup(keys, "row", |row| row.get::<_, Vec<u8>>(1))
    }

    fn keys_after(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StateError> {
        let path = self.path.clone();
        let sql = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        // Reads only the key index, never the stored rows.
        let mut statement = self
            .conn
            .prepare_cached("SELECT key FROM rows WHERE key > ?1 ORDER BY key LIMIT ?2")
            .map_err(sql)?;
        let keys = statement
            .query_map(
                params![
                    after.unwrap_or(""),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(sql)?;
        keys.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    fn commit(&mut self, changes: &[Change]) -> Result<(), StateError> {
        let path = self.path.clone();
        let sql = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO rows (key, fingerprint, row) VALUES (?1, ?2, ?3)",
                )
                .map_err(sql)?;
            let mut delete = tx
                .prepare_cached("DELETE FROM rows WHERE key = ?1")
                .map_err(sql)?;
            for change in changes {
                match change {
                    Change::Upsert {
                        key,
                        fingerprint,
                        row,
                    } => {
                        upsert
                            .execute(params![key, &fingerprint.to_be_bytes()[..], row])
                            .map_err(sql)?;
                    }
                    Change::Delete { key } => {
                        delete.execute(params![key]).map_err(sql)?;
                    }
                }
            }
        }
        tx.commit().map_err(sql)
    }

    fn key_count(&self) -> Result<usize, StateError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        Ok(usize::try_from(n).unwrap_or_default())
    }
}
