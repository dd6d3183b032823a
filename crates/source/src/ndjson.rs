//! NDJSON / JSON Lines models.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use kinesync_payload::{Object, Row, Schema, Value};

use crate::{Locator, RowSource, SourceError, SourceRow, check_key};

/// Rows from newline-delimited JSON objects.
#[derive(Debug)]
pub struct NdjsonSource<R> {
    reader: R,
    path: PathBuf,
    schema: Arc<Schema>,
    line: u64,
    /// The first row, read to learn the schema, handed out first.
    first: Option<SourceRow>,
    buf: String,
}

impl<R: BufRead> NdjsonSource<R> {
    /// Reads the first object to learn the columns; `path` names the input in errors.
    pub fn new(
        reader: R,
        path: impl Into<PathBuf>,
        primary_key: &str,
    ) -> Result<Self, SourceError> {
        let mut source = Self {
            reader,
            path: path.into(),
            schema: Schema::new(["_"], "_").expect("a placeholder schema is valid"),
            line: 0,
            first: None,
            buf: String::new(),
        };
        let Some((line, object)) = source.next_object()? else {
            return Err(SourceError::Empty { path: source.path });
        };
        let columns = object.0.iter().map(|(k, _)| k.clone());
        source.schema = Schema::new(columns, primary_key).map_err(|e| SourceError::Schema {
            path: source.path.clone(),
            source: e,
        })?;
        source.first = Some(SourceRow {
            line,
            row: Row::new(object.0.into_iter().map(|(_, v)| v).collect()),
        });
        Ok(source)
    }

    /// The next non-blank line as an object.
    fn next_object(&mut self) -> Result<Option<(u64, Object)>, SourceError> {
        loop {
            self.buf.clear();
            self.line += 1;
            let read =
                self.reader
                    .read_line(&mut self.buf)
                    .map_err(|source| SourceError::Read {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    })?;
            if read == 0 {
                return Ok(None);
            }
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(text).map_err(|e| SourceError::Json {
                path: self.path.clone(),
                line: self.line,
                column: e.column(),
                message: e
                    .to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            })?;
            return match value {
                Value::Object(object) => Ok(Some((self.line, object))),
                other => Err(SourceError::NotAnObject {
                    path: self.path.clone(),
                    line: self.line,
                    found: other.kind_name(),
                }),
            };
        }
    }

    /// Places an object's values in schema order.
    fn to_row(&self, line: u64, object: Object) -> Result<Row, SourceError> {
        let columns = self.schema.columns();
        // The common case: the same keys in the same order as line 1.
        if object.0.len() == columns.len() && object.0.iter().zip(columns).all(|((k, _), c)| k == c)
        {
            return Ok(Row::new(object.0.into_iter().map(|(_, v)| v).collect()));
        }
        let mut values = vec![Value::Null; columns.len()];
        for (key, value) in object.0 {
            let index = self
                .schema
                .index_of(&key)
                .ok_or_else(|| SourceError::NewColumn {
                    path: self.path.clone(),
                    line,
                    column: key.clone(),
                    known: columns.join(", "),
                })?;
            values[index] = value;
        }
        Ok(Row::new(values))
    }
}

impl<R: BufRead + Send> Iterator for NdjsonSource<R> {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let read = match self.first.take() {
            Some(first) => Ok(first),
            None => match self.next_object() {
                Ok(Some((line, object))) => {
                    self.to_row(line, object).map(|row| SourceRow { line, row })
                }
                Ok(None) => return None,
                Err(e) => Err(e),
            },
        };
        Some(read.and_then(|read| {
            let line = read.line;
            check_key(&self.schema, || self.locator().at(line), read)
        }))
    }
}

impl<R: BufRead + Send> RowSource for NdjsonSource<R> {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> Locator {
        Locator::lines(&self.path)
    }
}
