//! The in-memory store, for tests and for callers who keep state elsewhere.

use std::collections::{BTreeMap, HashSet};

use crate::{Change, Fingerprint, StateError, StateStore, StoredRow};

/// A store in memory. Unlike [`crate::SqliteStore`] it holds the keys seen in a run in
/// memory too, so it suits tests and models of modest size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    rows: BTreeMap<String, StoredRow>,
    baseline: bool,
    seen: Option<HashSet<String>>,
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
}

impl StateStore for MemoryStore {
    fn has_baseline(&self) -> Result<bool, StateError> {
        Ok(self.baseline)
    }

    fn set_baseline(&mut self) -> Result<(), StateError> {
        self.baseline = true;
        Ok(())
    }

    fn fingerprints(&mut self, keys: &[String]) -> Result<Vec<Option<Fingerprint>>, StateError> {
        Ok(keys
            .iter()
            .map(|k| self.rows.get(k).map(|r| r.fingerprint))
            .collect())
    }

    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        Ok(keys
            .iter()
            .map(|k| self.rows.get(k).map(|r| r.row.clone()))
            .collect())
    }

    fn begin_run(&mut self) -> Result<(), StateError> {
        self.seen = Some(HashSet::new());
        Ok(())
    }

    fn see(&mut self, keys: &[String]) -> Result<Vec<String>, StateError> {
        let seen = self.seen.as_mut().ok_or(StateError::NoRun)?;
        Ok(keys
            .iter()
            .filter(|k| !seen.insert((*k).clone()))
            .cloned()
            .collect())
    }

    fn unseen(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredRow)>, StateError> {
        let seen = self.seen.as_ref().ok_or(StateError::NoRun)?;
        let range = match after {
            Some(a) => self
                .rows
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.rows.range::<str, _>(..),
        };
        Ok(range
            .filter(|(k, _)| !seen.contains(*k))
            .take(limit)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    fn commit(&mut self, changes: &[Change]) -> Result<(), StateError> {
        for change in changes {
            match change {
                Change::Upsert {
                    key,
                    fingerprint,
                    row,
                } => {
                    self.rows.insert(
                        key.clone(),
                        StoredRow {
                            fingerprint: *fingerprint,
                            row: row.clone(),
                        },
                    );
                }
                Change::Delete { key } => {
                    self.rows.remove(key);
                }
            }
        }
        Ok(())
    }

    fn len(&self) -> Result<usize, StateError> {
        Ok(self.rows.len())
    }
}
