//! Model sources: where the rows of a sync come from.
//!
//! A source is an iterator of rows over a fixed [`Schema`], read as a stream: a file of ten
//! million rows costs the memory of one row at a time. Each row comes with its line number so
//! that any error about it can say where it is.
//!
//! - **NDJSON / JSON Lines** (`.ndjson`, `.jsonl`): one JSON object a line; values keep their
//!   JSON types. The schema is the first object's keys, in order; a later row may leave a
//!   column out (it reads as null) but may not bring a new one.
//! - **CSV** (`.csv`) with a header row: every value is a string, as written.
//!
//! ```
//! use kinesync_source::{NdjsonSource, RowSource};
//!
//! let text = "{\"id\": 1, \"name\": \"Ada\"}\n{\"id\": 2, \"name\": \"Grace\"}\n";
//! let mut source = NdjsonSource::new(text.as_bytes(), "users.ndjson", "id").unwrap();
//! assert_eq!(source.schema().columns(), ["id", "name"]);
//! assert_eq!(source.by_ref().count(), 2);
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kinesync_payload::{Object, Row, Schema, SchemaError, Value};

/// Why a source could not be read, with the file and line it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file could not be opened.
    #[error("cannot open model file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading failed part way.
    #[error("{path}:{line}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The line being read.
        line: u64,
        /// Why.
        source: std::io::Error,
    },
    /// The file's extension names no format kinesync reads.
    #[error("{path}: unknown model file type; use .ndjson, .jsonl or .csv")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// No rows (NDJSON) or no header (CSV), so there are no columns to check a spec against.
    #[error("{path}: the file is empty, so it has no columns")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A line is not JSON.
    #[error("{path}:{line}:{column}: not valid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: usize,
        /// serde_json's explanation.
        message: String,
    },
    /// A line holds JSON that is not an object.
    #[error("{path}:{line}: each line must be a JSON object, this one is {found}")]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What it is instead.
        found: &'static str,
    },
    /// A row has a column the schema (the first row's keys) does not.
    #[error("{path}:{line}: column {column:?} is not among the columns of line 1 ({known})")]
    NewColumn {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The new column.
        column: String,
        /// The known columns, comma-separated.
        known: String,
    },
    /// A CSV line could not be parsed.
    #[error("{path}:{line}: malformed CSV: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The csv crate's explanation.
        message: String,
    },
    /// The columns do not make a schema (duplicate names, unknown primary key).
    #[error("{path}: {source}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Why.
        source: SchemaError,
    },
}

/// A row read from a source, with where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    /// The 1-based line the row started on.
    pub line: u64,
    /// The row.
    pub row: Row,
}

/// A stream of rows over one schema.
pub trait RowSource: Iterator<Item = Result<SourceRow, SourceError>> + Send {
    /// The model's columns and primary key.
    fn schema(&self) -> &Arc<Schema>;
}

/// Opens a model file by its extension: `.ndjson` / `.jsonl` or `.csv`.
pub fn open(path: &Path, primary_key: &str) -> Result<Box<dyn RowSource>, SourceError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let file = || {
        File::open(path).map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })
    };
    match extension.as_deref() {
        Some("ndjson" | "jsonl") => Ok(Box::new(NdjsonSource::new(
            BufReader::new(file()?),
            path,
            primary_key,
        )?)),
        Some("csv") => Ok(Box::new(CsvSource::new(file()?, path, primary_key)?)),
        _ => Err(SourceError::UnknownFormat {
            path: path.to_owned(),
        }),
    }
}

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
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        match self.next_object() {
            Ok(Some((line, object))) => {
                Some(self.to_row(line, object).map(|row| SourceRow { line, row }))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl<R: BufRead + Send> RowSource for NdjsonSource<R> {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }
}

/// Rows from a CSV file with a header row; every value is a string.
#[derive(Debug)]
pub struct CsvSource<R> {
    reader: csv::Reader<R>,
    path: PathBuf,
    schema: Arc<Schema>,
    record: csv::StringRecord,
}

impl<R: Read> CsvSource<R> {
    /// Reads the header; `path` names the input in errors.
    pub fn new(
        reader: R,
        path: impl Into<PathBuf>,
        primary_key: &str,
    ) -> Result<Self, SourceError> {
        let path = path.into();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        let headers = reader.headers().map_err(|e| csv_error(&path, &e))?.clone();
        if headers.is_empty() {
            return Err(SourceError::Empty { path });
        }
        let schema = Schema::new(headers.iter(), primary_key).map_err(|e| SourceError::Schema {
            path: path.clone(),
            source: e,
        })?;
        Ok(Self {
            reader,
            path,
            schema,
            record: csv::StringRecord::new(),
        })
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> SourceError {
    SourceError::Csv {
        path: path.to_owned(),
        line: e.position().map_or(0, csv::Position::line),
        message: match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => {
                format!("{len} fields where the header has {expected_len}")
            }
            _ => e.to_string(),
        },
    }
}

impl<R: Read + Send> Iterator for CsvSource<R> {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, csv::Position::line);
                let row = Row::new(
                    self.record
                        .iter()
                        .map(|f| Value::String(f.to_owned()))
                        .collect(),
                );
                Some(Ok(SourceRow { line, row }))
            }
            Err(e) => Some(Err(csv_error(&self.path, &e))),
        }
    }
}

impl<R: Read + Send> RowSource for CsvSource<R> {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ndjson(text: &str) -> Result<Vec<SourceRow>, SourceError> {
        NdjsonSource::new(text.as_bytes(), "m.ndjson", "id")?.collect()
    }

    #[test]
    fn ndjson_rows_follow_the_first_rows_columns() {
        let rows =
            ndjson("{\"id\":1,\"a\":\"x\"}\n\n{\"a\":\"y\",\"id\":2}\n{\"id\":3}\n").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].line, 3, "blank lines still count");
        assert_eq!(rows[1].row.values(), [Value::Int(2), Value::from("y")]);
        assert_eq!(rows[2].row.values(), [Value::Int(3), Value::Null]);
    }

    #[test]
    fn ndjson_errors_name_file_line_and_column() {
        let err = ndjson("{\"id\":1}\n{\"id\":2,}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson:2:9: not valid JSON: trailing comma"
        );
        let err = ndjson("{\"id\":1}\n[1]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson:2: each line must be a JSON object, this one is array"
        );
        let err = ndjson("{\"id\":1}\n{\"id\":2,\"b\":1}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson:2: column \"b\" is not among the columns of line 1 (id)"
        );
        let err = ndjson("\n").unwrap_err();
        assert!(matches!(err, SourceError::Empty { .. }));
        let err = ndjson("{\"ID\":1}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson: primary key \"id\" is not a column of the model; did you mean \"ID\"?"
        );
    }

    #[test]
    fn csv_reads_strings_with_a_header() {
        let text = "id,name,note\n1,\"Ada, Countess\",\n2,Grace,\"multi\nline\"\n3,Ken,x\n";
        let rows: Vec<SourceRow> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows[0].row.values(),
            [
                Value::from("1"),
                Value::from("Ada, Countess"),
                Value::from("")
            ]
        );
        assert_eq!(rows[1].row.get(2), &Value::from("multi\nline"));
        assert_eq!((rows[0].line, rows[1].line, rows[2].line), (2, 3, 5));
    }

    #[test]
    fn csv_malformed_lines_say_where() {
        let text = "id,name\n1,Ada\n2,Grace,extra\n";
        let results: Vec<_> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .collect();
        let err = results[1].as_ref().unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.csv:3: malformed CSV: 3 fields where the header has 2"
        );
    }
}
