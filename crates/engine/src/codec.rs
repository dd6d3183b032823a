//! The stored-row codec: how the state store holds each row (its values alone, with the
//! column names kept once per store), and how a stored row is read back for `previous` and
//! `removed` events. The prepare stage writes this form; nothing else reads it.
//!
//! A stored row is the number of its column list followed by its values as a JSON array:
//! `0[1,"Ada",true]`. The column lists live in the store's meta values under
//! [`COLUMN_LISTS`], as a JSON array of arrays of names; a run whose model has columns not seen
//! before adds its list. Without the names every row is about 40% smaller, and a backfill
//! writes every byte twice (SQLite's log, then the database).
//!
//! The lists are read, extended and written back as a run starts: one sync at a time per
//! state file, as everything else about the file assumes (two at once would also send the
//! same changes twice).
//!
//! Rows stored as a JSON object (`{"id":1,...}`, state schema version 1) stay readable:
//! their fingerprint is the same (it is taken over the object either way), so nothing is sent
//! again because of the change, and they are replaced by the new form as they change.

use kinesync_payload::{Row, Schema, Value};
use kinesync_state::StateStore;

use crate::error::Error;

/// The meta value that holds the column lists.
pub(crate) const COLUMN_LISTS: &str = "row_columns";

/// The store's column lists, and which of them is this run's schema.
#[derive(Debug, Default)]
pub(crate) struct RowCodec {
    lists: Vec<Vec<String>>,
    /// The schema's list, by number.
    current: usize,
}

impl RowCodec {
    /// The store's lists, with the schema's added (and kept, unless `dry_run`) when the store
    /// does not have it yet.
    pub(crate) fn load(
        state: &mut dyn StateStore,
        schema: &Schema,
        dry_run: bool,
    ) -> Result<Self, Error> {
        let mut lists = read_lists(state)?;
        let columns = schema.columns();
        let current = match lists.iter().position(|l| l.as_slice() == columns) {
            Some(n) => n,
            None => {
                lists.push(columns.to_vec());
                if !dry_run {
                    let text = serde_json::to_string(&lists).map_err(|e| Error::ColumnLists {
                        name: COLUMN_LISTS,
                        reason: e.to_string(),
                    })?;
                    state.set_meta(COLUMN_LISTS, &text)?;
                }
                lists.len() - 1
            }
        };
        Ok(Self { lists, current })
    }

    /// What a stored row of this run starts with: the number of its column list.
    pub(crate) fn prefix(&self) -> Vec<u8> {
        self.current.to_string().into_bytes()
    }

    /// A stored row in `schema`'s column order: columns it did not have are null, columns
    /// the schema no longer has are left out. `None` when the bytes are not a row this codec
    /// wrote: the caller reports it against the row's key, never as a row of nulls.
    pub(crate) fn decode(&self, schema: &Schema, stored: &[u8]) -> Option<Row> {
        let digits = stored.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return decode_object(schema, stored);
        }
        let list = std::str::from_utf8(&stored[..digits])
            .ok()
            .and_then(|n| n.parse::<usize>().ok());
        let text = std::str::from_utf8(&stored[digits..]).ok()?;
        let Ok(Value::Array(values)) = Value::from_json_exact(text) else {
            return None;
        };
        let columns = schema.columns();
        match list {
            Some(n) if n == self.current && values.len() == columns.len() => Some(Row::new(values)),
            Some(n) => match self.lists.get(n) {
                Some(names) if names.len() == values.len() => Some(Row::new(
                    columns
                        .iter()
                        .map(|c| {
                            names
                                .iter()
                                .position(|name| name == c)
                                .map_or(Value::Null, |i| values[i].clone())
                        })
                        .collect(),
                )),
                _ => None,
            },
            None => None,
        }
    }
}

/// The store's column lists, as kept.
fn read_lists(state: &mut dyn StateStore) -> Result<Vec<Vec<String>>, Error> {
    match state.meta(COLUMN_LISTS)? {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text).map_err(|e| Error::ColumnLists {
            name: COLUMN_LISTS,
            reason: e.to_string(),
        }),
    }
}

/// A row stored as a JSON object (state schema version 1).
fn decode_object(schema: &Schema, json: &[u8]) -> Option<Row> {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(json) else {
        return None;
    };
    Some(Row::new(
        schema
            .columns()
            .iter()
            .map(|c| object.get(c).cloned().unwrap_or(Value::Null))
            .collect(),
    ))
}

/// The rows the stream last acknowledged for `keys`, in `schema`'s column order (`None`: the
/// store does not have the key, or holds bytes that are not a stored row): what a template's `previous` and a `removed` event see. For
/// tests that check what a run left in the store, and for looking into a store.
pub fn last_sent_rows(
    state: &mut dyn StateStore,
    schema: &Schema,
    keys: &[String],
) -> Result<Vec<Option<Row>>, Error> {
    state.flush()?;
    let codec = RowCodec {
        lists: read_lists(state)?,
        // No list is this schema's without being looked up: every row is read by its names.
        current: usize::MAX,
    };
    Ok(state
        .rows(keys)?
        .into_iter()
        .map(|row| row.and_then(|stored| codec.decode(schema, &stored)))
        .collect())
}
