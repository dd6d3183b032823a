//! Model sources: where the rows of a sync come from.
//!
//! Where it sits in a sync (source → engine: prepare, diff, build, batch, send, commit → sink):
//! the start: the engine's prepare stage reads its rows, on a thread of their own.
//!
//! A source is an iterator of rows over a fixed [`Schema`], read as a stream: a model of ten
//! million rows costs the memory of a few hundred rows at a time. Each row comes with its
//! line (files) or row number (queries) so that any error about it can say where it is.
//!
//! - **NDJSON / JSON Lines** (`.ndjson`, `.jsonl`): one JSON object a line; values keep their
//!   JSON types. The schema is the first object's keys, in order; a later row may leave a
//!   column out (it reads as null) but may not bring a new one.
//! - **CSV** (`.csv`) with a header row: every value is a string, as written, unless the spec
//!   gives the column a [`ColumnType`] (integer, float, boolean, json); an empty field of a
//!   typed column is null.
//! - **SQLite** (`.db`, `.sqlite`, `.sqlite3`): a database file and a SQL query; the columns
//!   are the query's, each value typed as SQLite stored it. The query runs on its own thread.
//!
//! Every source refuses a row whose primary key is null, naming the file, the line and the
//! column; the run reports that row and goes on. (Duplicate keys are found by the sync
//! engine, which sees the whole model.)
//!
//! ```
//! use kinesync::source::{NdjsonSource, RowSource};
//!
//! let text = "{\"id\": 1, \"name\": \"Ada\"}\n{\"id\": 2, \"name\": \"Grace\"}\n";
//! let mut source = NdjsonSource::new(text.as_bytes(), "users.ndjson", "id").unwrap();
//! assert_eq!(source.schema().columns(), ["id", "name"]);
//! assert_eq!(source.by_ref().count(), 2);
//! ```

mod background;
mod csv_file;
mod ndjson;
mod postgres;
mod spool;
mod sqlite;

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kinesync_payload::{Row, Schema, SchemaError, Value};

pub use background::{BackgroundSource, ReadAhead, ReaderStopped, read_ahead};
pub use csv_file::CsvSource;
pub use ndjson::{NdjsonSource, scan_columns};
pub use postgres::{Connection, DiffPlace, PostgresDelta, PostgresSource, PostgresSpec};
pub use sqlite::SqliteSource;

/// Why a source could not be read, with the file and line (or query row) it concerns.
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
    #[error(
        "{path}: unknown model file type; use .ndjson, .jsonl, .csv or a SQLite file (.db, .sqlite, .sqlite3), or set format"
    )]
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
    /// A row's primary key is null (or, in a CSV file, empty).
    #[error(
        "{location}: the primary key (column {column:?}) is null; every row needs a primary key"
    )]
    NullKey {
        /// Where: `file:line`, or the query row.
        location: String,
        /// The primary key column.
        column: String,
    },
    /// A value does not parse as its column's declared type.
    #[error("{path}:{line}: column {column:?} is declared {expected}, but holds {found:?}")]
    Type {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The column.
        column: String,
        /// The declared type.
        expected: ColumnType,
        /// The text found.
        found: String,
    },
    /// A float column holds infinity, NaN, or a number beyond a 64-bit float (`1e400`): JSON
    /// has no such number, so every source refuses it, as the row's error.
    #[error(
        "{path}:{line}: column {column:?} holds {found:?}, which is not a finite number: JSON has none, so every source refuses it"
    )]
    NotFinite {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The column.
        column: String,
        /// The text found.
        found: String,
    },
    /// A line (or a JSON column's value) nests objects and arrays deeper than [`MAX_DEPTH`].
    #[error(
        "{path}:{line}: the JSON nests objects and arrays {depth} deep, more than the {MAX_DEPTH} levels kinesync reads (the line's own object is the first)"
    )]
    TooDeep {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// How deep it nests.
        depth: usize,
    },
    /// A column type was declared for a column the model does not have.
    #[error(
        "{path}: a type is declared for column {column:?}, which the model does not have (its columns: {known})"
    )]
    UnknownTypedColumn {
        /// The file.
        path: PathBuf,
        /// The column named.
        column: String,
        /// The model's columns, comma-separated.
        known: String,
    },
    /// Column types were given for a format whose values are already typed.
    #[error(
        "{path}: column types apply to CSV models only; NDJSON and SQLite values carry their own types"
    )]
    TypesNotApplicable {
        /// The file.
        path: PathBuf,
    },
    /// A SQLite model without a query, or a query given to a file model.
    #[error("{path}: {message}")]
    Query {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// PostgreSQL refused the connection or the query, or a read failed part way.
    #[error("{location}: {message}")]
    Postgres {
        /// The server and database (never the password), and the query row when the error came
        /// mid-read.
        location: String,
        /// What went wrong, and what to do.
        message: String,
    },
    /// SQLite refused to open the database, prepare the query or step through it.
    #[error("{location}: {message}")]
    Sqlite {
        /// The database, and the query row when the error came mid-query.
        location: String,
        /// SQLite's explanation, and what to do.
        message: String,
    },
}

/// A row read from a source, with where it was read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SourceRow {
    /// The 1-based line (files) or row of the query's result (SQLite) the row came from.
    pub line: u64,
    /// The row.
    pub row: Row,
    /// The row's fingerprint as the source computed it, used in place of the engine's own:
    /// a Postgres model's rows are fingerprinted by the server (see [`PostgresSource`]), so
    /// that the state's fingerprints are the ones a diff in the warehouse compares. `None`
    /// for the other sources.
    pub fingerprint: Option<u128>,
}

impl SourceRow {
    /// `row`, read at `line` (0 when unknown).
    pub fn new(line: u64, row: Row) -> Self {
        Self {
            line,
            row,
            fingerprint: None,
        }
    }

    /// The row with the fingerprint its source computed.
    pub fn with_fingerprint(mut self, fingerprint: u128) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }
}

/// What a model diffed in the warehouse gives: the rows that may need sending, and the keys
/// that left it (see [`DeltaSource`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaItem {
    /// A model row whose key the state lacks, whose fingerprint differs from the state's, or
    /// whose last record is in doubt.
    Row(SourceRow),
    /// A key the state has and the model no longer does.
    Removed(String),
}

/// A model whose diff against the state ran where the model lives: only the rows that may
/// need sending come, and the keys gone from the model, each once. Rows the state holds
/// unchanged never leave the warehouse. Read from a snapshot taken while the sync held its
/// state's lock, so that what the state held then is what the diff compared with.
pub trait DeltaSource: Iterator<Item = Result<DeltaItem, SourceError>> + Send {
    /// The model's columns and primary key.
    fn schema(&self) -> &Arc<Schema>;

    /// How to name the place of a row in messages.
    fn locator(&self) -> Locator;

    /// What to keep in the state if the run over this diff completes (every row sent or
    /// moved on, none in error, nothing pending), for the next diff to start from: for a
    /// Postgres table, the snapshot it read and the rows it counted (see
    /// [`PostgresDelta::open_since`]). `None`: nothing. The engine asks once the iterator has
    /// ended (a diff may know it only then), and forgets the last one whenever a run starts.
    fn watermark(&self) -> Option<String> {
        None
    }

    /// How many keys the state holds, when the diff knows it without counting them (a
    /// Postgres table diffed from the last complete run's mark: the rows it counted then, the
    /// state unchanged since). Spares the engine a count of every key the state holds.
    fn state_keys(&self) -> Option<u64> {
        None
    }
}

/// Says where a row numbered by [`SourceRow::line`] is, for messages about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    path: PathBuf,
    query: bool,
}

impl Locator {
    /// Rows numbered by line of `path`.
    pub fn lines(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            query: false,
        }
    }

    /// Rows numbered by their place in a query's result over the database `path`.
    pub fn query_rows(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            query: true,
        }
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `line 57`, or `query row 57`: a place in this model, for a message that has already
    /// named it.
    pub fn place(&self, line: u64) -> String {
        if self.query {
            format!("query row {line}")
        } else {
            format!("line {line}")
        }
    }

    /// `users.ndjson:57`, or `model.db, query row 57`.
    pub fn at(&self, line: u64) -> String {
        if self.query {
            format!("{}, query row {line}", self.path.display())
        } else {
            format!("{}:{line}", self.path.display())
        }
    }
}

/// A stream of rows over one schema.
pub trait RowSource: Iterator<Item = Result<SourceRow, SourceError>> + Send {
    /// The model's columns and primary key.
    fn schema(&self) -> &Arc<Schema>;

    /// How to name the place of a row in messages.
    fn locator(&self) -> Locator;
}

/// How deep a model's JSON may nest objects and arrays (a line's own object is the first
/// level): deep enough for any document a row holds, and shallow enough that every later step
/// (the state's copy, the message, a template's view) reads it back.
pub const MAX_DEPTH: usize = 100;

/// How deep `text` nests objects and arrays, and whether it has a number outside strings that
/// may be one no 64-bit type holds exactly (20 digits or more, or 16 with a fraction), found
/// without parsing it.
pub(crate) fn json_scan(text: &str) -> (usize, bool) {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    let (mut digits, mut long_digits, mut fraction) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if byte.is_ascii_digit() {
            digits += 1;
            // An integer of 20 digits may be beyond 64 bits; a fraction of 16 may be beyond
            // what a float holds.
            long_digits |= digits >= 20 || (fraction && digits >= 16);
            continue;
        }
        if byte == b'.' && digits > 0 {
            fraction = true;
            continue;
        }
        digits = 0;
        fraction = false;
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest, long_digits)
}

/// A declared type for a CSV column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// The text as written (the default).
    String,
    /// A 64-bit signed integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// `true`/`false` (also `t`/`f`, `yes`/`no`, `1`/`0`, any case).
    Boolean,
    /// A JSON value, kept as parsed.
    Json,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::String => "string",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Boolean => "boolean",
            ColumnType::Json => "json",
        })
    }
}

/// A model's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object a line.
    Ndjson,
    /// Comma-separated values with a header row.
    Csv,
    /// A SQLite database and a query.
    Sqlite,
}

impl Format {
    /// The format a file's extension names, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            "db" | "sqlite" | "sqlite3" => Some(Format::Sqlite),
            _ => None,
        }
    }
}

/// What to open: the file, its primary key, and what its format needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// The model file.
    pub path: PathBuf,
    /// The column that identifies a row.
    pub primary_key: String,
    /// The format; from the extension when not given.
    pub format: Option<Format>,
    /// The SQL query (SQLite models).
    pub query: Option<String>,
    /// Declared column types (CSV models), in any order.
    pub types: Vec<(String, ColumnType)>,
}

impl SourceSpec {
    /// A model file whose format is named by its extension.
    pub fn new(path: impl Into<PathBuf>, primary_key: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            primary_key: primary_key.into(),
            format: None,
            query: None,
            types: Vec::new(),
        }
    }

    /// The query a SQLite model runs.
    #[must_use]
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Declares a CSV column's type.
    #[must_use]
    pub fn with_type(mut self, column: impl Into<String>, ty: ColumnType) -> Self {
        self.types.push((column.into(), ty));
        self
    }
}

/// Opens a model: NDJSON and CSV files by extension (or `format`), SQLite with its query.
pub fn open(spec: &SourceSpec) -> Result<Box<dyn RowSource>, SourceError> {
    let path = &spec.path;
    let format = spec
        .format
        .or_else(|| Format::from_path(path))
        .ok_or_else(|| SourceError::UnknownFormat {
            path: path.to_owned(),
        })?;
    if format != Format::Csv && !spec.types.is_empty() {
        return Err(SourceError::TypesNotApplicable {
            path: path.to_owned(),
        });
    }
    if format != Format::Sqlite && spec.query.is_some() {
        return Err(SourceError::Query {
            path: path.to_owned(),
            message: "a query applies to SQLite models only; this file is read whole".into(),
        });
    }
    let file = || {
        File::open(path).map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })
    };
    Ok(match format {
        Format::Ndjson => {
            // Every key of every line is a column: a line may leave a key out (it is null
            // there). Finding them is a first pass, of keys only.
            let columns = ndjson::scan_columns(BufReader::with_capacity(1 << 16, file()?))
                .map_err(|source| SourceError::Read {
                    path: path.to_owned(),
                    line: 0,
                    source,
                })?;
            let reader = BufReader::with_capacity(1 << 16, file()?);
            if columns.is_empty() {
                // No line is an object: reading them says why.
                Box::new(NdjsonSource::new(reader, path, &spec.primary_key)?)
            } else {
                Box::new(NdjsonSource::with_columns(
                    reader,
                    path,
                    &spec.primary_key,
                    columns,
                )?)
            }
        }
        Format::Csv => {
            Box::new(CsvSource::new(file()?, path, &spec.primary_key)?.with_types(&spec.types)?)
        }
        Format::Sqlite => {
            let query = spec.query.as_deref().ok_or_else(|| SourceError::Query {
                path: path.to_owned(),
                message: "a SQLite model needs a query, e.g. query = \"SELECT * FROM users\""
                    .into(),
            })?;
            Box::new(SqliteSource::open(path, query, &spec.primary_key)?)
        }
    })
}

/// The error for a row whose primary key is null, or `Ok` with the row.
fn check_key(
    schema: &Schema,
    locator: impl FnOnce() -> String,
    read: SourceRow,
) -> Result<SourceRow, SourceError> {
    if matches!(read.row.get(schema.primary_key_index()), Value::Null) {
        return Err(SourceError::NullKey {
            location: locator(),
            column: schema.primary_key().to_owned(),
        });
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            Format::from_path(Path::new("a/B.JSONL")),
            Some(Format::Ndjson)
        );
        assert_eq!(
            Format::from_path(Path::new("m.sqlite3")),
            Some(Format::Sqlite)
        );
        assert_eq!(Format::from_path(Path::new("m.parquet")), None);
    }

    #[test]
    fn specs_that_do_not_fit_their_format_are_refused() {
        let err = open(&SourceSpec::new("m.ndjson", "id").with_type("a", ColumnType::Integer))
            .err()
            .unwrap();
        assert!(
            matches!(err, SourceError::TypesNotApplicable { .. }),
            "{err}"
        );
        let err = open(&SourceSpec::new("m.csv", "id").with_query("SELECT 1"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("SQLite models only"), "{err}");
        let err = open(&SourceSpec::new("m.parquet", "id")).err().unwrap();
        assert!(matches!(err, SourceError::UnknownFormat { .. }), "{err}");
        let err = open(&SourceSpec::new("/nonexistent/m.ndjson", "id"))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("cannot open model file /nonexistent/m.ndjson"),
            "{err}"
        );
    }
}
