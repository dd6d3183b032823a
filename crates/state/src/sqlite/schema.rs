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

/// Sets the writing connection up and checks (or creates) the schema.
pub(super) fn init(conn: &Connection, path: &str, upgrade: bool) -> Result<KeyForm, StateError> {
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
