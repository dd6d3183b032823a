//! SQLite models: a database file and a query, run on a thread of its own.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use kinesync_payload::{Row, Schema, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::background::{BackgroundSource, produce};
use crate::{Locator, RowSource, SourceError, SourceRow, check_key};

/// Rows of a query over a SQLite database, opened read-only. Values keep SQLite's types:
/// integer, real (float), text and null. A BLOB has no JSON form, so a row holding one is an
/// error that says how to select it instead.
#[derive(Debug)]
pub struct SqliteSource {
    rows: BackgroundSource,
}

impl SqliteSource {
    /// Opens `path` read-only and prepares `query`; the rows are read on a thread of their own.
    pub fn open(path: &Path, query: &str, primary_key: &str) -> Result<Self, SourceError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(SourceError::Open {
                path: path.to_owned(),
                source,
            });
        }
        let locator = Locator::query_rows(path);
        let thread_locator = locator.clone();
        let (query, primary_key) = (query.to_owned(), primary_key.to_owned());
        // The statement borrows its connection, so both live on the reading thread, which
        // sends the schema (or why there is none) first, then the rows.
        let (schema_sender, schema) = sync_channel(1);
        let rows = produce("kinesync-sqlite", move |rows| {
            let locator = thread_locator;
            let conn = match open_read_only(locator.path()) {
                Ok(conn) => conn,
                Err(e) => {
                    schema_sender.send(Err(e)).ok();
                    return;
                }
            };
            let mut statement = match conn.prepare(&query) {
                Ok(statement) => statement,
                Err(e) => {
                    let message = format!("the query does not prepare: {e}");
                    let path = locator.path().to_owned();
                    schema_sender
                        .send(Err(SourceError::Query { path, message }))
                        .ok();
                    return;
                }
            };
            let columns = statement.column_names().map(str::to_owned);
            let schema = match Schema::new(columns, &primary_key) {
                Ok(schema) => schema,
                Err(source) => {
                    let path = locator.path().to_owned();
                    schema_sender
                        .send(Err(SourceError::Schema { path, source }))
                        .ok();
                    return;
                }
            };
            if schema_sender.send(Ok(schema.clone())).is_err() {
                return;
            }
            let mut results = match statement.query([]) {
                Ok(results) => results,
                Err(e) => {
                    rows.emit(Err(sqlite_error(locator.path(), &e)));
                    return;
                }
            };
            for line in 1u64.. {
                let item = match results.next() {
                    Ok(Some(row)) => convert(&schema, &locator, line, row),
                    Ok(None) => return,
                    Err(e) => {
                        // The query cannot go on: report where it stopped, and end.
                        rows.emit(Err(SourceError::Sqlite {
                            location: locator.at(line),
                            message: e.to_string(),
                        }));
                        return;
                    }
                };
                if !rows.emit(item) {
                    return;
                }
            }
        })
        .map_err(|source| SourceError::Read {
            path: locator.path().to_owned(),
            line: 0,
            source,
        })?;
        let schema = schema.recv().map_err(|_| SourceError::Sqlite {
            location: locator.path().display().to_string(),
            message: "the thread opening the database stopped".into(),
        })??;
        Ok(Self {
            rows: BackgroundSource::new(schema, locator, rows),
        })
    }
}

fn open_read_only(path: &Path) -> Result<Connection, SourceError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_error(path, &e))
}

fn sqlite_error(path: &Path, e: &rusqlite::Error) -> SourceError {
    SourceError::Sqlite {
        location: path.display().to_string(),
        message: e.to_string(),
    }
}

/// One result row as a model row.
fn convert(
    schema: &Schema,
    locator: &Locator,
    line: u64,
    row: &rusqlite::Row<'_>,
) -> Result<SourceRow, SourceError> {
    let columns = schema.columns();
    let mut values = Vec::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        let value = row.get_ref(index).map_err(|e| SourceError::Sqlite {
            location: locator.at(line),
            message: format!("column {column:?}: {e}"),
        })?;
        values.push(match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) if !f.is_finite() => {
                return Err(SourceError::Sqlite {
                    location: locator.at(line),
                    message: format!(
                        "column {column:?} holds {f}, which is not a finite number: JSON has none, so every source refuses it (select a finite value, or NULL, instead)"
                    ),
                });
            }
            ValueRef::Real(f) => Value::Float(f),
            ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Value::String(text.to_owned()),
                Err(_) => {
                    return Err(SourceError::Sqlite {
                        location: locator.at(line),
                        message: format!(
                            "column {column:?} holds text that is not UTF-8; convert it in the query"
                        ),
                    });
                }
            },
            ValueRef::Blob(_) => {
                return Err(SourceError::Sqlite {
                    location: locator.at(line),
                    message: format!(
                        "column {column:?} holds a BLOB, which has no JSON form; select hex({column}) or CAST({column} AS TEXT) instead"
                    ),
                });
            }
        });
    }
    check_key(
        schema,
        || locator.at(line),
        SourceRow::new(line, Row::new(values)),
    )
}

impl Iterator for SqliteSource {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rows.next()
    }
}

impl RowSource for SqliteSource {
    fn schema(&self) -> &Arc<Schema> {
        self.rows.schema()
    }

    fn locator(&self) -> Locator {
        self.rows.locator()
    }
}
