//! The in-memory store, for tests and for callers who keep state elsewhere.

use std::collections::BTreeMap;

use crate::{Change, Seen, StateError, StateStore, StoredRow};

/// A store in memory: for tests, and for callers who keep state elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    rows: BTreeMap<String, StoredRow>,
    baseline: bool,
    meta: BTreeMap<String, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything the store holds, by key.
    pub fn snapshot(&self) -> &BTreeMap<String, StoredRow> {
        &self.rows
    }

    /// A store holding `rows` (another store's, to apply changes to as this one does).
    pub(crate) fn from_rows(rows: BTreeMap<String, StoredRow>) -> Self {
        Self {
            rows,
            ..Self::default()
        }
    }

    /// The rows held.
    pub(crate) fn into_rows(self) -> BTreeMap<String, StoredRow> {
        self.rows
    }
}

impl StateStore for MemoryStore {
    fn has_baseline(&self) -> Result<bool, StateError> {
        Ok(self.baseline)
    }

    fn set_baseline(&mut self) -> Result<(), StateError> {
        self.baseline = true;
        Ok(())
    }

    fn seen(&mut self, keys: &[String]) -> Result<Vec<Option<Seen>>, StateError> {
        Ok(keys
            .iter()
            .map(|k| self.rows.get(k).map(StoredRow::seen))
            .collect())
    }

    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        Ok(keys
            .iter()
            .map(|k| self.rows.get(k).map(|r| r.row.clone()))
            .collect())
    }

    fn keys_after(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StateError> {
        let range = match after {
            Some(a) => self
                .rows
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.rows.range::<str, _>(..),
        };
        Ok(range.take(limit).map(|(k, _)| k.clone()).collect())
    }

    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StateError> {
        for change in changes {
            match change {
                Change::Upsert {
                    key,
                    fingerprint,
                    row,
                } => {
                    let doubt = None;
                    self.rows.insert(
                        key,
                        StoredRow {
                            fingerprint,
                            row,
                            doubt,
                        },
                    );
                }
                Change::Settle { key } => {
                    if let Some(stored) = self.rows.get_mut(&key) {
                        stored.doubt = None;
                    }
                }
                Change::Delete { key } => {
                    self.rows.remove(&key);
                }
                Change::InDoubt { key, doubt, sent } => match (sent, self.rows.get_mut(&key)) {
                    (Some((fingerprint, row)), _) => {
                        let doubt = Some(doubt);
                        self.rows.insert(
                            key,
                            StoredRow {
                                fingerprint,
                                row,
                                doubt,
                            },
                        );
                    }
                    (None, Some(stored)) => stored.doubt = Some(doubt),
                    // A removal of a key the store does not have: nothing to keep.
                    (None, None) => {}
                },
            }
        }
        Ok(())
    }

    fn key_count(&self) -> Result<usize, StateError> {
        Ok(self.rows.len())
    }

    fn meta(&mut self, name: &str) -> Result<Option<String>, StateError> {
        Ok(self.meta.get(name).cloned())
    }

    fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StateError> {
        self.meta.insert(name.to_owned(), value.to_owned());
        Ok(())
    }
}
