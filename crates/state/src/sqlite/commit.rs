//! One commit as SQL: a batch of changes written in a single transaction.
//!
//! Apart from the writer thread, which only decides when a commit runs, because this is
//! where the cost of a backfill lies: upserts go [`UPSERT_GROUP`] rows to a statement, and a
//! delete first writes the upserts queued before it, so that changes land in the order given.
//! A key marked in doubt with the version sent is an upsert whose fingerprint is the 17-byte
//! mark; a removal in doubt, and an acknowledged mark (settled), change only the fingerprint.

use std::borrow::Cow;

use rusqlite::{Connection, params};

use super::keys::stored_key;
use crate::{Change, Fingerprint, StateError};

/// One atomic commit.
pub(super) fn write_changes(
    conn: &mut Connection,
    path: &str,
    changes: &[Change],
) -> Result<(), StateError> {
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
        // A removal's mark, or a settled mark: the fingerprint changes, the row stays.
        let mut stamp = tx
            .prepare_cached("UPDATE rows SET fingerprint = ?2 WHERE key = ?1")
            .map_err(sql)?;
        for change in changes {
            match change {
                Change::Upsert {
                    key,
                    fingerprint,
                    row,
                } => upserts
                    .push(key, Stamp::fingerprint(*fingerprint), row)
                    .map_err(sql)?,
                Change::InDoubt {
                    key,
                    doubt,
                    row: Some(row),
                } => upserts
                    .push(key, Stamp::Mark(doubt.to_blob()), row)
                    .map_err(sql)?,
                Change::InDoubt {
                    key,
                    doubt,
                    row: None,
                } => {
                    // In order, as for a delete.
                    upserts.write().map_err(sql)?;
                    stamp
                        .execute(params![stored_key(key), &doubt.to_blob()[..]])
                        .map_err(sql)?;
                }
                Change::Settle { key, fingerprint } => {
                    upserts.write().map_err(sql)?;
                    stamp
                        .execute(params![stored_key(key), &fingerprint.to_be_bytes()[..]])
                        .map_err(sql)?;
                }
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

/// What the `fingerprint` column holds: an acknowledged row's 16-byte fingerprint, or the
/// 17-byte mark of a key in doubt.
#[derive(Clone, Copy)]
enum Stamp {
    Fingerprint([u8; 16]),
    Mark([u8; 17]),
}

impl Stamp {
    fn fingerprint(fingerprint: Fingerprint) -> Self {
        Self::Fingerprint(fingerprint.to_be_bytes())
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Fingerprint(bytes) => bytes,
            Self::Mark(bytes) => bytes,
        }
    }
}

/// Rows per multi-row `INSERT`: each statement execution opens cursors and resets the
/// machine, a cost a backfill would otherwise pay once per row.
const UPSERT_GROUP: usize = 16;

/// Upserts, written [`UPSERT_GROUP`] rows per statement, in the order pushed.
struct Upserts<'c, 'a> {
    one: rusqlite::CachedStatement<'c>,
    group: rusqlite::CachedStatement<'c>,
    pending: Vec<(Cow<'a, str>, Stamp, &'a [u8])>,
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

    fn push(&mut self, key: &'a str, stamp: Stamp, row: &'a [u8]) -> rusqlite::Result<()> {
        self.pending.push((stored_key(key), stamp, row));
        if self.pending.len() == UPSERT_GROUP {
            for (i, (key, fingerprint, row)) in self.pending.iter().enumerate() {
                self.group.raw_bind_parameter(3 * i + 1, key)?;
                self.group
                    .raw_bind_parameter(3 * i + 2, fingerprint.as_slice())?;
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
            self.one
                .execute(params![key, fingerprint.as_slice(), row])?;
        }
        Ok(())
    }
}
