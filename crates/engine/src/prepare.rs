//! Stage 1, prepare: a model row becomes a [`Prepared`] row: its primary key (and the key's
//! hash), its stored form and its fingerprint. Done on the thread that reads the model, so
//! that reading and encoding overlap with the rest of the run.

use kinesync_payload::{Row, RowEncoder};
use kinesync_source::SourceRow;
use xxhash_rust::xxh3::xxh3_128;

use crate::record::shrink_if_large;

/// A row of the model as [`crate::Engine::run`] takes it: a bare [`Row`], or a [`SourceRow`]
/// that knows the line it was read from (so that a duplicate key's error can say where).
pub trait ModelRow {
    /// The row, and its line (0 when unknown).
    fn into_parts(self) -> (Row, u64);

    /// The row's fingerprint as its source computed it, used in place of the engine's own
    /// (see [`SourceRow::fingerprint`]); `None` (the default) for the engine's.
    fn fingerprint(&self) -> Option<u128> {
        None
    }
}

impl ModelRow for Row {
    fn into_parts(self) -> (Row, u64) {
        (self, 0)
    }
}

impl ModelRow for SourceRow {
    fn into_parts(self) -> (Row, u64) {
        (self.row, self.line)
    }

    fn fingerprint(&self) -> Option<u128> {
        self.fingerprint
    }
}

/// What the reader hands the run: a prepared row, or (from a model diffed where it lives) a
/// key gone from the model, or, after the last of them, the mark the diff leaves.
#[derive(Debug)]
pub(crate) enum Read {
    Row(Prepared),
    Removed(String),
    Watermark(String),
}

/// One model row, read and fingerprinted.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) key: String,
    /// The key's XXH3-128, for the run's set of keys seen.
    pub(crate) key_hash: u128,
    /// The line (or query row) it was read from; 0 when unknown.
    pub(crate) line: u64,
    pub(crate) row: Row,
    /// The row as the state store keeps it (see [`crate::codec`]).
    pub(crate) stored: Vec<u8>,
    /// The XXH3-128 of the row as a JSON object, or the fingerprint its source computed.
    pub(crate) fingerprint: u128,
}

thread_local! {
    /// Where [`Preparer::prepare`] encodes a row as a JSON object, and as it is stored.
    static ENCODED: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Turns a model row into a [`Prepared`] one. Cheap to clone, so that a source's rows can be
/// prepared on the thread that reads them.
#[derive(Debug, Clone)]
pub(crate) struct Preparer {
    pub(crate) encoder: RowEncoder,
    pub(crate) primary_key: usize,
    /// The model's columns: a row must have a value for each, no more and no fewer.
    pub(crate) columns: usize,
    /// What each stored row starts with: its column list's number.
    pub(crate) stored_prefix: Vec<u8>,
}

impl Preparer {
    /// The row prepared, or why it cannot be: a row whose width is not the schema's is an
    /// error naming its primary key (when it has one), never silently cut or padded. With
    /// `fingerprint`, the row's source computed it.
    pub(crate) fn prepare(&self, row: impl ModelRow) -> Result<Prepared, String> {
        let fingerprint = row.fingerprint();
        let (row, line) = row.into_parts();
        let width = row.values().len();
        if width != self.columns {
            let key = match row.values().get(self.primary_key) {
                Some(value) => format!("row {}", value.to_json_string()),
                None => "a row".to_owned(),
            };
            return Err(format!(
                "{key} has {width} values, and the model has {} columns",
                self.columns
            ));
        }
        Ok(self.prepare_checked(row, line, fingerprint))
    }

    fn prepare_checked(&self, row: Row, line: u64, fingerprint: Option<u128>) -> Prepared {
        // Encoded into this thread's buffers, then copied out at its exact size: one
        // allocation per row, never a regrowth. The fingerprint is the object's, as it
        // always was, so that rows stored before stored rows lost their names still match.
        let (fingerprint, stored) = ENCODED.with_borrow_mut(|(object, stored)| {
            object.clear();
            stored.clear();
            stored.extend_from_slice(&self.stored_prefix);
            self.encoder.encode_with_values(&row, object, stored);
            let result = (
                fingerprint.unwrap_or_else(|| xxh3_128(object)),
                stored.as_slice().to_vec(),
            );
            shrink_if_large(object);
            shrink_if_large(stored);
            result
        });
        let key = row.get(self.primary_key).to_json_string();
        Prepared {
            key_hash: xxh3_128(key.as_bytes()),
            fingerprint,
            key,
            line,
            row,
            stored,
        }
    }
}
