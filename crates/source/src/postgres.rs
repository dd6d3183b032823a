//! A model in PostgreSQL: a query's rows, streamed through a cursor, each value mapped to the
//! payload's values exactly.
//!
//! Where it sits: warehouse → **this source** → the engine's reader thread → diff. Like the
//! file sources, it is an iterator read on a thread of its own; it never holds the whole
//! result: rows come [`FETCH_ROWS`] at a time from a cursor, in one read-only transaction, so
//! the model is read as one snapshot however long the read takes.
//!
//! How values arrive exactly: before anything is read, the query is prepared (which checks it
//! and gives its columns' types without running it) and each column is given the SQL that
//! makes PostgreSQL write it in the one text form this file reads: integers as digits,
//! `numeric` as its exact digits (kept as they are where no 64-bit type holds them), floats as the shortest text that reads back the same,
//! `json`/`jsonb` as JSON text, arrays through `to_json` (so their elements are JSON too),
//! timestamps as ISO 8601 (`timestamptz` in UTC). A column of a type not mapped is an error
//! naming it and the cast to write, before any row is read.
//!
//! The connection string holds a password: it is never printed; errors name the host, port,
//! user and database.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kinesync_payload::{Row, Schema, Value};
use postgres::types::{Kind, Type};
use postgres::{Client, Config, NoTls, SimpleQueryMessage, SimpleQueryRow};

use crate::{Locator, RowSource, SourceError, SourceRow};

/// Rows fetched from the cursor per round trip.
pub const FETCH_ROWS: usize = 10_000;

/// The cursor's name.
const CURSOR: &str = "kinesync_model";

/// Connection settings as libpq takes them: a URL (`postgres://user@host:5432/db`) or
/// `key=value` pairs. What they leave out comes from libpq's environment variables (`PGHOST`,
/// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`). It may
/// hold a password, so it is never printed, `Debug` included.
#[derive(Clone)]
pub struct Connection(String);

impl Connection {
    /// Settings from `text` (a URL or `key=value` pairs; empty for the environment's alone).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connection(<not shown: may hold a password>)")
    }
}

/// What to read: where, the query, and its primary key.
#[derive(Debug, Clone)]
pub struct PostgresSpec {
    /// The server and database.
    pub connection: Connection,
    /// The query whose rows are the model (`SELECT id, email FROM users`).
    pub query: String,
    /// The column that identifies a row.
    pub primary_key: String,
    /// The longest one statement (the query's preparation, a fetch) may run; none by default.
    pub statement_timeout: Option<Duration>,
}

impl PostgresSpec {
    /// `query`'s rows over `connection`, keyed by `primary_key`.
    pub fn new(
        connection: Connection,
        query: impl Into<String>,
        primary_key: impl Into<String>,
    ) -> Self {
        Self {
            connection,
            query: query.into(),
            primary_key: primary_key.into(),
            statement_timeout: None,
        }
    }
}

/// How one column's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    Integer,
    Numeric,
    Float,
    Bool,
    Text,
    Json,
}

/// The conversion for a column of type `ty`, and the SQL that writes `column` (already
/// quoted) in its form; `None` for a type not mapped.
fn conversion(ty: &Type, column: &str) -> Option<(Conversion, String)> {
    if let Kind::Array(_) = ty.kind() {
        return Some((Conversion::Json, format!("to_json({column})::text")));
    }
    let same = column.to_owned();
    Some(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => (Conversion::Integer, same),
        Type::NUMERIC => (Conversion::Numeric, same),
        Type::FLOAT4 | Type::FLOAT8 => (Conversion::Float, same),
        Type::BOOL => (Conversion::Bool, same),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UUID => {
            (Conversion::Text, same)
        }
        // ISO 8601, as JSON writes them: `2026-11-30`, `2026-11-30T21:04:19.5`, and with the
        // session in UTC, `2026-11-30T21:04:19.5+00:00`.
        Type::DATE | Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            (Conversion::Text, format!("to_json({column}) #>> '{{}}'"))
        }
        Type::JSON | Type::JSONB => (Conversion::Json, format!("{column}::text")),
        _ if ty.name() == "citext" => (Conversion::Text, same),
        _ => return None,
    })
}

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The rows of a query, streamed from a PostgreSQL server.
pub struct PostgresSource {
    client: Client,
    schema: Arc<Schema>,
    conversions: Vec<Conversion>,
    /// `postgres://user@host:port/database`: where, without the password.
    place: String,
    batch: std::vec::IntoIter<SimpleQueryRow>,
    /// Rows handed out so far.
    row: u64,
    /// The cursor gave its last row, or a fetch failed: nothing more comes.
    done: bool,
    fetch: String,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("place", &self.place)
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// Connects, checks the query and its columns' types, and opens the cursor; no row is
    /// read yet.
    ///
    /// The client blocks on a runtime of its own, which tokio forbids on a thread that drives
    /// a runtime; so opening happens on a thread of its own, and may be called from async
    /// code. Reading the rows must happen off the async threads, as the engine's reader thread
    /// does.
    pub fn open(spec: &PostgresSpec) -> Result<Self, SourceError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| Self::open_here(spec))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn open_here(spec: &PostgresSpec) -> Result<Self, SourceError> {
        let config = config(&spec.connection)?;
        let place = describe(&config);
        let error = |message: String| SourceError::Postgres {
            location: place.clone(),
            message,
        };
        let mut client = config
            .connect(NoTls)
            .map_err(|e| error(connect_error(&config, &e)))?;
        let mut setup = String::from(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 1; SET IntervalStyle = 'iso_8601'; ",
        );
        if let Some(timeout) = spec.statement_timeout {
            setup.push_str(&format!(
                "SET statement_timeout = {}; ",
                timeout.as_millis().max(1)
            ));
        }
        client
            .batch_execute(&setup)
            .map_err(|e| error(query_error(&spec.query, &e)))?;
        let query = spec.query.trim().trim_end_matches(';').trim_end();
        let statement = client
            .prepare(query)
            .map_err(|e| error(query_error(query, &e)))?;
        let names: Vec<String> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let schema = Schema::new(names.clone(), &spec.primary_key).map_err(|source| {
            SourceError::Schema {
                path: place.clone().into(),
                source,
            }
        })?;
        let mut conversions = Vec::with_capacity(names.len());
        let mut projection = Vec::with_capacity(names.len());
        let mut unmapped = Vec::new();
        for column in statement.columns() {
            let name = quoted(column.name());
            match conversion(column.type_(), &format!("{CURSOR}.{name}")) {
                Some((conversion, sql)) => {
                    conversions.push(conversion);
                    projection.push(sql);
                }
                None => unmapped.push(format!(
                    "column {:?} is of type {}, which kinesync does not map: cast it in the query, e.g. {}::text",
                    column.name(),
                    column.type_().name(),
                    name
                )),
            }
        }
        if !unmapped.is_empty() {
            return Err(error(unmapped.join("; ")));
        }
        let declare = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; DECLARE {CURSOR} NO SCROLL CURSOR FOR SELECT {} FROM ({query}) AS {CURSOR}",
            projection.join(", ")
        );
        client
            .batch_execute(&declare)
            .map_err(|e| error(query_error(query, &e)))?;
        Ok(Self {
            client,
            schema,
            conversions,
            place,
            batch: Vec::new().into_iter(),
            row: 0,
            done: false,
            fetch: format!("FETCH {FETCH_ROWS} FROM {CURSOR}"),
        })
    }

    /// The next rows from the cursor; an empty batch at the end.
    fn fetch(&mut self) -> Result<Vec<SimpleQueryRow>, SourceError> {
        let messages =
            self.client
                .simple_query(&self.fetch)
                .map_err(|e| SourceError::Postgres {
                    location: format!("{}, query row {}", self.place, self.row + 1),
                    message: read_error(&e),
                })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .collect())
    }

    /// The values of one fetched row.
    fn values(&self, row: &SimpleQueryRow) -> Result<Row, SourceError> {
        let mut values = Vec::with_capacity(self.conversions.len());
        for (index, conversion) in self.conversions.iter().enumerate() {
            let value = match row.get(index) {
                None => Value::Null,
                Some(text) => {
                    convert(*conversion, text).map_err(|message| SourceError::Postgres {
                        location: format!("{}, query row {}", self.place, self.row),
                        message: format!("column {:?}: {message}", self.schema.columns()[index]),
                    })?
                }
            };
            values.push(value);
        }
        let key = self.schema.primary_key_index();
        if values[key] == Value::Null {
            return Err(SourceError::NullKey {
                location: format!("{}, query row {}", self.place, self.row),
                column: self.schema.columns()[key].clone(),
            });
        }
        Ok(Row::new(values))
    }
}

/// A column's text as its value.
fn convert(conversion: Conversion, text: &str) -> Result<Value, String> {
    match conversion {
        Conversion::Integer => text
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("{text:?} is not an integer")),
        Conversion::Numeric => numeric(text),
        Conversion::Float => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(format!(
                "{text:?} is not a finite number: JSON has none, so every source refuses it"
            )),
        },
        Conversion::Bool => match text {
            "t" => Ok(Value::Bool(true)),
            "f" => Ok(Value::Bool(false)),
            other => Err(format!("{other:?} is not a boolean")),
        },
        Conversion::Text => Ok(Value::String(text.to_owned())),
        Conversion::Json => Value::from_json_exact(text).map_err(|e| e.to_string()),
    }
}

/// A `numeric` as its exact value: an integer of any size and a fraction of any precision
/// digit for digit ([`Value::Decimal`] where no 64-bit type holds it exactly).
fn numeric(text: &str) -> Result<Value, String> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Err(format!(
            "{text:?} is not a finite number: JSON has none, so every source refuses it"
        ));
    }
    Value::from_json_exact(text).map_err(|_| format!("{text:?} is not a number"))
}

impl Iterator for PostgresSource {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.batch.next() {
                self.row += 1;
                return Some(self.values(&row).map(|row| SourceRow {
                    line: self.row,
                    row,
                }));
            }
            if self.done {
                return None;
            }
            match self.fetch() {
                Ok(rows) if rows.is_empty() => {
                    self.done = true;
                    // The snapshot is no longer needed; a failure here changes nothing read.
                    self.client.batch_execute("COMMIT").ok();
                    return None;
                }
                Ok(rows) => self.batch = rows.into_iter(),
                Err(e) => {
                    // A connection lost mid-read ends the rows with its error: the engine
                    // then decides nothing about removed rows.
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl RowSource for PostgresSource {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> Locator {
        Locator::query_rows(&self.place)
    }
}

/// The settings of `connection`, with libpq's environment variables filling in what it leaves
/// out.
fn config(connection: &Connection) -> Result<Config, SourceError> {
    let mut config: Config = if connection.0.trim().is_empty() {
        Config::new()
    } else {
        connection.0.parse().map_err(|e: postgres::Error| {
            // The parser's message quotes no value, only what it expected.
            SourceError::Postgres {
                location: "the Postgres connection string".to_owned(),
                message: format!(
                    "{e} (a URL postgres://user@host:5432/database, or key=value pairs)"
                ),
            }
        })?
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        config.host(&env("PGHOST").unwrap_or_else(|| "localhost".to_owned()));
    }
    if config.get_ports().is_empty()
        && let Some(port) = env("PGPORT").and_then(|p| p.parse().ok())
    {
        config.port(port);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".to_owned());
        config.user(&user);
    }
    if config.get_password().is_none()
        && let Some(password) = env("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_dbname().is_none()
        && let Some(database) = env("PGDATABASE")
    {
        config.dbname(&database);
    }
    if config.get_application_name().is_none() {
        config.application_name(&env("PGAPPNAME").unwrap_or_else(|| "kinesync".to_owned()));
    }
    if config.get_connect_timeout().is_none() {
        let seconds = env("PGCONNECT_TIMEOUT")
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        config.connect_timeout(Duration::from_secs(seconds));
    }
    Ok(config)
}

/// `postgres://user@host:port/database`, never with the password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let database = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{database}")
}

/// Why connecting failed, in words that say what to check.
fn connect_error(config: &Config, error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return match db.code().code() {
            "28P01" | "28000" => format!(
                "authentication failed for user {:?}: check the user and password (the password is not shown)",
                config.get_user().unwrap_or("?")
            ),
            "3D000" => format!("{}: check the database name", db.message()),
            _ => db.message().to_owned(),
        };
    }
    let io =
        std::error::Error::source(error).and_then(|source| source.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "connection refused: is the server running, and listening on that host and port?"
                .to_owned()
        }
        Some(std::io::ErrorKind::TimedOut) => {
            "no answer within the connect timeout: check the host, port and firewall".to_owned()
        }
        _ => format!("cannot connect: {error}"),
    }
}

/// Why the query failed: PostgreSQL's message, its place in the query, and its hint.
fn query_error(query: &str, error: &postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        return read_error(error);
    };
    let mut message = db.message().to_owned();
    if db.code().code() == "57014" {
        message = format!("{message} (the statement timeout stopped it)");
    }
    if let Some(postgres::error::ErrorPosition::Original(position)) = db.position() {
        let before: String = query
            .chars()
            .take((*position as usize).saturating_sub(1))
            .collect();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        message = format!("query line {line}, column {column}: {message}");
    }
    if let Some(hint) = db.hint() {
        message = format!("{message} (hint: {hint})");
    }
    message
}

/// Why a read failed part way.
fn read_error(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) if db.code().code() == "57014" => {
            format!("{} (the statement timeout stopped it)", db.message())
        }
        Some(db) => db.message().to_owned(),
        None if error.is_closed() => {
            "the connection was lost while reading the model; nothing was decided about removed rows"
                .to_owned()
        }
        None => format!("{error}; nothing was decided about removed rows"),
    }
}
