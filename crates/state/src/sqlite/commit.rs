//! One commit as SQL: a batch of changes written in a single transaction.
//!
//! Apart from the writer thread, which only decides when a commit runs, because this is
//! where the cost of a backfill lies: upserts go [`UPSERT_GROUP`] rows to a statement, and a
//! delete first writes the upserts queued before it, so that changes land in the order given.
//! A key marked in doubt is an upsert of the version sent and a row of the `doubt` table;
//! settling it deletes that row, so an acknowledged record costs no second write of its row.

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
        let mut doubts = Doubts::new(&tx).map_err(sql)?;
        // A removal's mark: only for a key the store has.
        let mut doubt_if_stored = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO doubt (key, mark) \
                 SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM rows WHERE key = ?1)",
            )
            .map_err(sql)?;
        for change in changes {
            match change {
                Change::Upsert {
                    key,
                    fingerprint,
                    row,
                } => {
                    upserts.push(key, *fingerprint, row).map_err(sql)?;
                    doubts.settle(key).map_err(sql)?;
                }
                Change::InDoubt {
                    key,
                    doubt: mark,
                    sent: Some((fingerprint, row)),
                } => {
                    upserts.push(key, *fingerprint, row).map_err(sql)?;
                    doubts.mark(key, mark.to_blob()).map_err(sql)?;
                }
                Change::InDoubt {
                    key,
                    doubt: mark,
                    sent: None,
                } => {
                    // In order: an upsert of the same key before it must land first.
                    upserts.write().map_err(sql)?;
                    doubts.write().map_err(sql)?;
                    doubt_if_stored
                        .execute(params![stored_key(key), &mark.to_blob()[..]])
                        .map_err(sql)?;
                }
                Change::Settle { key } => doubts.settle(key).map_err(sql)?,
                Change::Delete { key } => {
                    // In order: an upsert of the same key before it must land first.
                    upserts.write().map_err(sql)?;
                    delete.execute(params![stored_key(key)]).map_err(sql)?;
                    doubts.settle(key).map_err(sql)?;
                }
            }
        }
        upserts.write().map_err(sql)?;
        doubts.write().map_err(sql)?;
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

/// Marks and settlements of the `doubt` table, written [`UPSERT_GROUP`] to a statement: a
/// backfill marks every row once and settles it once, and one statement per row would cost
/// as much as the rows themselves. Pending operations are all of one kind, written before an
/// operation of the other kind is taken, so that they land in the order given.
struct Doubts<'c, 'a> {
    mark_one: rusqlite::CachedStatement<'c>,
    mark_group: rusqlite::CachedStatement<'c>,
    settle_one: rusqlite::CachedStatement<'c>,
    settle_group: rusqlite::CachedStatement<'c>,
    marks: Vec<(Cow<'a, str>, [u8; 17])>,
    settles: Vec<Cow<'a, str>>,
}

impl<'c, 'a> Doubts<'c, 'a> {
    fn new(tx: &'c rusqlite::Transaction<'_>) -> rusqlite::Result<Self> {
        static MARK_GROUP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let values = vec!["(?, ?)"; UPSERT_GROUP].join(", ");
            format!("INSERT OR REPLACE INTO doubt (key, mark) VALUES {values}")
        });
        static SETTLE_GROUP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let keys = vec!["?"; UPSERT_GROUP].join(", ");
            format!("DELETE FROM doubt WHERE key IN ({keys})")
        });
        Ok(Self {
            mark_one: tx
                .prepare_cached("INSERT OR REPLACE INTO doubt (key, mark) VALUES (?1, ?2)")?,
            mark_group: tx.prepare_cached(&MARK_GROUP)?,
            settle_one: tx.prepare_cached("DELETE FROM doubt WHERE key = ?1")?,
            settle_group: tx.prepare_cached(&SETTLE_GROUP)?,
            marks: Vec::with_capacity(UPSERT_GROUP),
            settles: Vec::with_capacity(UPSERT_GROUP),
        })
    }

    fn mark(&mut self, key: &'a str, mark: [u8; 17]) -> rusqlite::Result<()> {
        if !self.settles.is_empty() {
            self.write()?;
        }
        self.marks.push((stored_key(key), mark));
        if self.marks.len() == UPSERT_GROUP {
            for (i, (key, mark)) in self.marks.iter().enumerate() {
                self.mark_group.raw_bind_parameter(2 * i + 1, key)?;
                self.mark_group.raw_bind_parameter(2 * i + 2, &mark[..])?;
            }
            self.mark_group.raw_execute()?;
            self.marks.clear();
        }
        Ok(())
    }

    fn settle(&mut self, key: &'a str) -> rusqlite::Result<()> {
        if !self.marks.is_empty() {
            self.write()?;
        }
        self.settles.push(stored_key(key));
        if self.settles.len() == UPSERT_GROUP {
            for (i, key) in self.settles.iter().enumerate() {
                self.settle_group.raw_bind_parameter(i + 1, key)?;
            }
            self.settle_group.raw_execute()?;
            self.settles.clear();
        }
        Ok(())
    }

    /// Writes what is pending, one key per statement.
    fn write(&mut self) -> rusqlite::Result<()> {
        for (key, mark) in self.marks.drain(..) {
            self.mark_one.execute(params![key, &mark[..]])?;
        }
        for key in self.settles.drain(..) {
            self.settle_one.execute(params![key])?;
        }
        Ok(())
    }
}
