//! SQLite models: a database file and a query, run on a thread of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use kinesync_payload::{Row, Schema, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::background::{BackgroundSource, pump};
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
        let (schema_sender, schema) = sync_channel(1);
        let path: PathBuf = path.to_owned();
        let (query, primary_key) = (query.to_owned(), primary_key.to_owned());
        // The statement borrows its connection, so both live on the reading thread; the
        // schema (or why there is none) comes back first.
        let (rows_sender, rows) = sync_channel(1);
        std::thread::Builder::new()
            .name("kinesync-sqlite".into())
            .spawn(move || {
                let prepared = prepare(&path, &query, &primary_key);
                let (conn, schema) = match prepared {
                    Ok(ok) => ok,
                    Err(e) => {
                        schema_sender.send(Err(e)).ok();
                        return;
                    }
                };
                schema_sender.send(Ok(schema.clone())).ok();
                let Ok(batches) = rows.recv() else { return };
                let locator = Locator::query_rows(&path);
                let mut statement = match conn.prepare(&query) {
                    Ok(statement) => statement,
                    Err(e) => {
                        pump([Err(sqlite_error(locator.path(), &e))], &batches);
                        return;
                    }
                };
                let mut results = match statement.query([]) {
                    Ok(results) => results,
                    Err(e) => {
                        pump([Err(sqlite_error(locator.path(), &e))], &batches);
                        return;
                    }
                };
                let mut line = 0u64;
                let mut failed = false;
                let items = std::iter::from_fn(|| {
                    if failed {
                        return None;
                    }
                    line += 1;
                    match results.next() {
                        Ok(Some(row)) => Some(convert(&schema, &locator, line, row)),
                        Ok(None) => None,
                        Err(e) => {
                            failed = true;
                            Some(Err(SourceError::Sqlite {
                                location: locator.at(line),
                                message: e.to_string(),
                            }))
                        }
                    }
                });
                pump(items, &batches);
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
        let rows = BackgroundSource::spawn(schema, locator, move |batches| {
            rows_sender.send(batches).ok();
        })?;
        Ok(Self { rows })
    }
}

/// Opens the database and learns the query's columns.
fn prepare(
    path: &Path,
    query: &str,
    primary_key: &str,
) -> Result<(Connection, Arc<Schema>), SourceError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_error(path, &e))?;
    let columns: Vec<String> = {
        let statement = conn.prepare(query).map_err(|e| SourceError::Query {
            path: path.to_owned(),
            message: format!("the query does not prepare: {e}"),
        })?;
        statement.column_names().map(str::to_owned).collect()
    };
    let schema = Schema::new(columns, primary_key).map_err(|source| SourceError::Schema {
        path: path.to_owned(),
        source,
    })?;
    Ok((conn, schema))
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
        SourceRow {
            line,
            row: Row::new(values),
        },
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
