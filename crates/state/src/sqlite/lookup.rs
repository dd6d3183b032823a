//! Lookups: reading stored fingerprints and rows back by key, on a connection of their own.
//!
//! Apart from the store because a sync asks for whole chunks of keys at once: they are
//! looked up `IN (...)` a few hundred at a time, on a read-only connection, so that reads
//! never wait behind the writer (WAL lets them run beside it) and see what it has written.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params_from_iter};

use super::SqliteStore;
use super::keys::KeyForm;
use crate::{Doubt, Fingerprint, StateError};

/// Keys per `IN (...)` lookup: well under SQLite's parameter limit.
const LOOKUP_CHUNK: usize = 500;

/// The connection lookups read on.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // 16 MiB of pages: 32 MiB held 15 MiB more at the peak of a run over a million rows,
    // at the same speed (lookups come a chunk of the model at a time, in key order).
    reader.pragma_update(None, "cache_size", -16384)?;
    Ok(reader)
}

impl SqliteStore {
    /// Looks `keys` up, `IN (...)` a few hundred at a time. Keys found are matched back to
    /// their place through a map of their stored forms; a key asked more than once is answered
    /// at every place.
    pub(super) fn lookup<T: Clone>(
        &mut self,
        keys: &[String],
        columns: &'static str,
        read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
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
                .entry((columns, chunk.len()))
                .or_insert_with(|| {
                    let placeholders = vec!["?"; chunk.len()].join(",");
                    format!("SELECT key, {columns} FROM rows WHERE key IN ({placeholders})")
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
                    found[place] = Some(read(row).map_err(sql)?);
                }
            }
            for (place, first) in again {
                found[place] = found[first].clone();
            }
        }
        Ok(found)
    }
}

/// A fingerprint from its stored blob: the 16 bytes the writer stored it as, big-endian.
pub(super) fn fingerprint_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Fingerprint> {
    let blob = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
    let mut bytes = [0u8; 16];
    let n = blob.len().min(16);
    bytes[..n].copy_from_slice(&blob[..n]);
    Ok(u128::from_be_bytes(bytes))
}

/// Every key in doubt, by the caller's key.
pub(super) fn read_doubts(
    reader: &Connection,
    keys: KeyForm,
) -> rusqlite::Result<HashMap<String, Doubt>> {
    let mut statement = reader.prepare("SELECT key, mark FROM doubt")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut doubts = HashMap::new();
    for row in rows {
        let (key, mark) = row?;
        if let Some(doubt) = Doubt::from_blob(&mark) {
            doubts.insert(keys.caller_key(key), doubt);
        }
    }
    Ok(doubts)
}
