//! The file's schema: the pragmas a store runs with, the tables a new file gets, and the
//! upgrade of a version 1 file.
//!
//! In one place because the schema version decides everything else about a file: how its
//! keys are stored ([`KeyForm`]), and whether it may be written at all. The upgrade's SQL
//! rewrites keys into the form [`stored_key`](super::keys::stored_key) gives, and must stay
//! in step with it.

use rusqlite::Connection;

use super::keys::KeyForm;
use crate::{SCHEMA_VERSION, StateError};

/// What the file is, once opened: how it stores keys, whether it has the `doubt` table, and
/// whether it may be written (a file of an older version opened without its upgrade is read
/// only).
pub(super) struct Opened {
    pub(super) keys: KeyForm,
    pub(super) doubts: bool,
    pub(super) writable: bool,
}

/// The table of keys in doubt (see [`crate::Seen::InDoubt`]): small (the records sent and not
/// yet answered), beside the rows, so that settling a record is a delete from it rather than a
/// second write of its row.
const DOUBT_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS doubt (key TEXT PRIMARY KEY, mark BLOB NOT NULL) WITHOUT ROWID;";

/// Sets the writing connection up and checks (or creates) the schema.
pub(super) fn init(conn: &Connection, path: &str, upgrade: bool) -> Result<Opened, StateError> {
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
    let current = Opened {
        keys: KeyForm::ByLength,
        doubts: true,
        writable: true,
    };
    match version {
        0 => conn
            .execute_batch(&format!(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS rows (
                     key TEXT NOT NULL UNIQUE,
                     fingerprint BLOB NOT NULL,
                     row BLOB NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                 {DOUBT_TABLE}
                 PRAGMA user_version = 3;
                 COMMIT;"
            ))
            .map(|()| current)
            .map_err(sql),
        1 if !upgrade => Ok(Opened {
            keys: KeyForm::AsWritten,
            doubts: false,
            writable: false,
        }),
        2 if !upgrade => Ok(Opened {
            keys: KeyForm::ByLength,
            doubts: false,
            writable: false,
        }),
        // Version 2 stores non-negative integer keys after their length (see `stored_key`),
        // and its callers may keep values in `meta`. Rows written by version 1 stay readable.
        // Version 3 adds the keys in doubt. An older kinesync refuses the upgraded file
        // rather than misread it.
        1 => conn
            .execute_batch(&format!(
                "BEGIN;
                 UPDATE rows SET key = char(31) || key WHERE unicode(key) < 32;
                 UPDATE rows SET key = char(length(key)) || key
                     WHERE length(key) BETWEEN 1 AND 20 AND key NOT GLOB '*[^0-9]*';
                 {DOUBT_TABLE}
                 PRAGMA user_version = 3;
                 COMMIT;"
            ))
            .map(|()| current)
            .map_err(sql),
        2 => conn
            .execute_batch(&format!(
                "BEGIN; {DOUBT_TABLE} PRAGMA user_version = 3; COMMIT;"
            ))
            .map(|()| current)
            .map_err(sql),
        SCHEMA_VERSION => Ok(current),
        found => Err(StateError::SchemaVersion {
            path: path.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        }),
    }
}
