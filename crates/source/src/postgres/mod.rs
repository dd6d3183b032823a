//! A model in PostgreSQL: a query's rows, streamed through `COPY`, each value mapped to the
//! payload's values exactly. This file opens the query and reads its rows; `connection.rs`
//! reaches the server, `values.rs` maps the types.
//!
//! Where it sits: warehouse → **this source** → the engine's reader thread → diff. Like the
//! file sources, it is an iterator read on a thread of its own; it never holds the whole
//! result: the rows come through one `COPY ... TO STDOUT` in a read-only transaction (so the
//! model is read as one snapshot), drained as fast as the server sends them into a spool (see
//! `spool.rs`), so that the statement ends when the server is done, however long the sync
//! then takes. One statement run to its end is also what lets the server plan it in parallel,
//! which it never does for a cursor.
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
//!
//! TLS is rustls's, and always verifies the server's certificate against the system's roots
//! plus the file `sslrootcert` (or `PGSSLROOTCERT`) names: `sslmode=prefer` (the default)
//! uses TLS when the server offers it, `require` (and libpq's `verify-ca`, `verify-full`)
//! refuses a server without it, `disable` never uses it.

mod connection;
mod copy_text;
mod delta;
mod values;
mod watermark;

use std::fmt;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kinesync_payload::{Row, Schema, Value};
use postgres::Client;

pub use self::connection::Connection;
use self::copy_text::TextRow;
pub use self::delta::{DiffPlace, PostgresDelta};
use self::values::{Conversion, conversion, convert, quoted};

use crate::spool::{SpoolReader, spool};
use crate::{Locator, RowSource, SourceError, SourceRow};

/// Bytes of rows the spool keeps in memory while the sync has not reached them; more wait in
/// a temporary file (in `TMPDIR`).
const ROWS_IN_MEMORY: usize = 8 * 1024 * 1024;

/// Bytes of rows the spool's file holds at most: beyond them, the server waits for the sync.
const ROWS_ON_DISK: u64 = 1024 * 1024 * 1024;

/// Bytes taken from the server at a time.
const CHUNK: u64 = 256 * 1024;

/// The model's alias in the statements kinesync runs.
const ALIAS: &str = "kinesync_model";

/// What to read: where, the query, and its primary key.
#[derive(Debug, Clone)]
pub struct PostgresSpec {
    /// The server and database.
    pub connection: Connection,
    /// The query whose rows are the model (`SELECT id, email FROM users`).
    pub query: String,
    /// The column that identifies a row.
    pub primary_key: String,
    /// The longest one statement may run (the query's preparation; the read of its rows, which
    /// the server runs at its own pace, not the sync's); none by default.
    pub statement_timeout: Option<Duration>,
    /// The table the query reads whole (`"public"."users"`, quoted), when the model is one: a
    /// diff in the warehouse trusts a unique index on its key column instead of counting
    /// the keys (see [`PostgresDelta`]).
    pub table: Option<String>,
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
            table: None,
        }
    }
}

/// The rows of a query, streamed from a PostgreSQL server.
///
/// Each row's fingerprint is computed by the server (`hashtextextended`, the 64-bit hash
/// PostgreSQL's hash partitioning uses, of the row's text after its columns' names and how
/// each is read), so that a state written from these rows can later be diffed in the
/// warehouse ([`PostgresDelta`]), whichever store kept it.
pub struct PostgresSource {
    /// The rows as `COPY` writes them, from the thread that holds the connection.
    rows: SpoolReader<String>,
    /// The line being read.
    line: Vec<u8>,
    schema: Arc<Schema>,
    conversions: Vec<Conversion>,
    /// `postgres://user@host:port/database`: where, without the password.
    place: String,
    /// Rows handed out so far.
    row: u64,
    /// Bytes of the values read so far.
    bytes: u64,
    /// The rows ended, or their read failed: nothing more comes.
    done: bool,
    /// Whether the rows are the diff's (rows and removed keys) or the whole model's.
    delta: bool,
    /// Stops the statement on the server, if the source is dropped before its end.
    cancel: Option<Box<dyn FnOnce() + Send>>,
    /// Set by the thread that reads the rows once the statement has ended on the server.
    statement_ended: Arc<AtomicBool>,
}

/// The longest a source dropped before its end waits for its cancel request to reach the
/// server (a process that exits at once would otherwise never send it).
const CANCEL_WAIT: Duration = Duration::from_secs(2);

impl Drop for PostgresSource {
    /// A read given up (a preview that wanted a few rows, a run that failed) stops the server
    /// at once, rather than when its next rows come (a diff may compute for a while first).
    fn drop(&mut self) {
        let Some(cancel) = self.cancel.take() else {
            return;
        };
        if self.done || self.statement_ended.load(Ordering::Acquire) {
            return;
        }
        // On a thread of its own: its client blocks on a runtime of its own, which tokio
        // forbids on a thread driving a runtime.
        let (sent, waited) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("kinesync-postgres-cancel".to_owned())
            .spawn(move || {
                cancel();
                sent.send(()).ok();
            });
        if spawned.is_ok() {
            waited.recv_timeout(CANCEL_WAIT).ok();
        }
    }
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("place", &self.place)
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

/// A prepared model query: its columns, and the SQL that reads each one.
struct Prepared {
    client: Client,
    /// Where the client is connected: what a cancel request goes to.
    connection: Connection,
    place: String,
    /// The query, trimmed of a final `;`.
    query: String,
    schema: Arc<Schema>,
    conversions: Vec<Conversion>,
    /// Each column's SQL over the alias [`ALIAS`].
    projection: Vec<String>,
    /// The key column's type.
    key_type: postgres::types::Type,
    /// What a row's fingerprint hashes before the row's text: the columns' names and how
    /// each is read, as an SQL literal.
    fingerprint_prefix: String,
}

impl Prepared {
    /// Connects, sets the session up and prepares the query (which checks it and gives its
    /// columns' types without running it); a column of a type not mapped is an error naming
    /// it and the cast to write.
    fn open(spec: &PostgresSpec) -> Result<Self, SourceError> {
        let (mut client, place) = spec.connection.connect_here()?;
        let error = |message: String| SourceError::Postgres {
            location: place.clone(),
            message,
        };
        // One text form for every value, whatever the server's defaults: the rows'
        // fingerprints (computed from their text) must not change with the session.
        let mut setup = String::from(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 1; SET IntervalStyle = 'iso_8601'; SET standard_conforming_strings = on; SET bytea_output = 'hex'; ",
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
        let query = spec
            .query
            .trim()
            .trim_end_matches(';')
            .trim_end()
            .to_owned();
        let statement = client
            .prepare(&query)
            .map_err(|e| error(query_error(&query, &e)))?;
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
        let mut described = String::from("kinesync 1");
        for column in statement.columns() {
            let name = quoted(column.name());
            match conversion(column.type_(), &format!("{ALIAS}.{name}")) {
                Some((conversion, sql)) => {
                    // How the value is read, not the type's name: a type change that leaves
                    // every message as it was (int4 to int8) sends nothing again.
                    described.push_str(&format!(" {name} {conversion:?}"));
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
        let key_type = statement.columns()[schema.primary_key_index()]
            .type_()
            .clone();
        Ok(Self {
            client,
            connection: spec.connection.clone(),
            place,
            query,
            schema,
            conversions,
            projection,
            key_type,
            // The columns' names and how each is read come first, so that a renamed column,
            // or one read another way (text for an integer), changes every fingerprint, as it
            // changes every message.
            fingerprint_prefix: literal(&format!("{described}: ")),
        })
    }

    /// The SQL of the fingerprint of the row aliased `alias`: `hashtextextended` of its
    /// text, after the columns' names and how each is read, as a signed 64-bit integer.
    ///
    /// That function is the one PostgreSQL's hash partitioning keys rows with (with a seed of
    /// its own), so it is kept the same from one server version to the next; the text is
    /// hashed as bytes (the "C" collation), in the server's encoding and byte order, so a
    /// warehouse moved to another encoding or byte order sends its rows once more. With it
    /// the diff's statement costs a third less than with `md5()` (measured over a million
    /// rows), which a server in FIPS mode also refuses. 64 bits are plenty: a fingerprint is
    /// only ever compared with the same key's previous one, so a change goes unseen with
    /// odds of 2^-64.
    fn fingerprint(&self, alias: &str) -> String {
        format!(
            "hashtextextended(({} || ROW({alias}.*)::text) COLLATE \"C\", 0)",
            self.fingerprint_prefix
        )
    }

    /// Begins a read-only snapshot, runs `first` in it (which gives the statement to read),
    /// then that statement; gives the source that reads its rows.
    fn start_read(
        mut self,
        delta: bool,
        first: impl FnOnce(&mut Client) -> Result<Reading, SourceError>,
    ) -> Result<PostgresSource, SourceError> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(|e| SourceError::Postgres {
                location: self.place.clone(),
                message: query_error(&self.query, &e),
            })?;
        let reading = first(&mut self.client)?;
        let (token, connection) = (self.client.cancel_token(), self.connection);
        let statement_ended = Arc::new(AtomicBool::new(false));
        Ok(PostgresSource {
            rows: copying(self.client, reading, statement_ended.clone())?,
            line: Vec::new(),
            schema: self.schema,
            conversions: self.conversions,
            place: self.place,
            row: 0,
            bytes: 0,
            done: false,
            delta,
            cancel: Some(Box::new(move || connection.cancel(&token))),
            statement_ended,
        })
    }
}

/// What a read runs, in its transaction: a `SELECT` whose rows come, then, once they have all
/// come, `then` (given the client), which may name a second `SELECT` whose rows come after
/// them (a diff's removed keys, say); `Err` with what went wrong.
pub(crate) struct Reading {
    pub(crate) select: String,
    pub(crate) then: Option<FollowUp>,
}

/// What runs after a read's first statement (see [`Reading`]).
pub(crate) type FollowUp = Box<dyn FnOnce(&mut Client) -> Result<Option<String>, String> + Send>;

impl Reading {
    fn only(select: String) -> Self {
        Self { select, then: None }
    }
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Starts the thread that runs `COPY (select) TO STDOUT` over `client` (in the transaction
/// begun there), then what the reading says follows, and drains their rows into a spool, as
/// fast as the server sends them; the transaction ends with them. The connection lives and
/// closes on that thread (its client blocks on a runtime of its own, which tokio forbids on a
/// thread driving a runtime); once the source is dropped, the thread stops at its next chunk.
fn copying(
    mut client: Client,
    reading: Reading,
    ended: Arc<AtomicBool>,
) -> Result<SpoolReader<String>, SourceError> {
    let (mut spooled, rows) = spool(ROWS_IN_MEMORY, ROWS_ON_DISK);
    std::thread::Builder::new()
        .name("kinesync-postgres-copy".to_owned())
        .spawn(move || {
            let end = copy_all(&mut client, reading, &mut spooled);
            ended.store(true, Ordering::Release);
            spooled.finish(end);
        })
        .map_err(|e| SourceError::Postgres {
            location: "the Postgres model".to_owned(),
            message: format!("cannot start the thread that reads the rows: {e}"),
        })?;
    Ok(rows)
}

/// Runs the reading's statements in turn, keeping their rows in `spooled`, then ends the
/// transaction; `Err` with what went wrong.
fn copy_all(
    client: &mut Client,
    reading: Reading,
    spooled: &mut crate::spool::SpoolWriter<String>,
) -> Result<(), String> {
    let mut whole = copy_rows(client, &reading.select, spooled)?;
    if whole
        && let Some(then) = reading.then
        && let Some(next) = then(client)?
    {
        whole = copy_rows(client, &next, spooled)?;
    }
    if whole {
        // The snapshot is no longer needed; a failure here changes nothing read (the server
        // reports a statement's errors, its parallel workers' too, before the end of its
        // rows).
        client.batch_execute("COMMIT").ok();
    }
    Ok(())
}

/// Runs `COPY (select) TO STDOUT` and keeps its rows in `spooled`: `Ok(false)` when the source
/// was dropped before their end (nothing more is wanted); `Err` with what went wrong.
fn copy_rows(
    client: &mut Client,
    select: &str,
    spooled: &mut crate::spool::SpoolWriter<String>,
) -> Result<bool, String> {
    let statement = format!("COPY ({select}) TO STDOUT");
    let mut copy = client.copy_out(&statement).map_err(|e| read_error(&e))?;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK as usize);
        // A chunk short of full is the last: the reader must not be read past its end.
        let read = (&mut copy).take(CHUNK).read_to_end(&mut chunk);
        if let Err(e) = read {
            // The rows before the error are the sync's too: its place is then the right row.
            spooled.write(chunk).ok();
            return Err(match e.get_ref().and_then(|e| e.downcast_ref()) {
                Some(e) => read_error(e),
                None => format!("{e}; nothing was decided about removed rows"),
            });
        }
        let last = (chunk.len() as u64) < CHUNK;
        match spooled.write(chunk) {
            Ok(true) if last => return Ok(true),
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                return Err(format!(
                    "cannot keep the rows not yet sent in a temporary file: {e}; nothing was decided about removed rows"
                ));
            }
        }
    }
}

impl PostgresSource {
    /// Connects, checks the query and its columns' types, and starts the read of its rows.
    ///
    /// The client blocks on a runtime of its own, which tokio forbids on a thread that drives
    /// a runtime; so opening happens on a thread of its own, and may be called from async
    /// code. Reading the rows must happen off the async threads, as the engine's reader thread
    /// does.
    pub fn open(spec: &PostgresSpec) -> Result<Self, SourceError> {
        off_the_runtime(|| Self::whole(Prepared::open(spec)?))
    }

    /// Every row of the prepared query.
    fn whole(prepared: Prepared) -> Result<Self, SourceError> {
        let select = format!(
            // The query ends its own line: a comment closing it ends there.
            "SELECT {}, {} FROM ({}\n) AS {ALIAS}",
            prepared.projection.join(", "),
            prepared.fingerprint(ALIAS),
            prepared.query
        );
        prepared.start_read(false, |_| Ok(Reading::only(select)))
    }

    /// Rows read so far, and the bytes of their values.
    pub fn read_so_far(&self) -> (u64, u64) {
        (self.row, self.bytes)
    }

    /// The next row, as the server wrote it; `None` at the end.
    fn next_text_row(&mut self) -> Option<Result<TextRow, SourceError>> {
        if self.done {
            return None;
        }
        self.line.clear();
        let read = self.rows.read_until(b'\n', &mut self.line);
        let location = || format!("{}, query row {}", self.place, self.row + 1);
        if let Err(e) = read {
            self.done = true;
            return Some(Err(SourceError::Postgres {
                location: location(),
                message: format!(
                    "cannot read back the rows kept in a temporary file: {e}; nothing was decided about removed rows"
                ),
            }));
        }
        if self.line.pop() != Some(b'\n') {
            // The end: of the rows, or of what came before an error.
            self.done = true;
            let location = location();
            let message = match self.rows.end() {
                Some(Ok(())) if self.line.is_empty() => {
                    tracing::info!(
                        model = %self.place,
                        rows = self.row,
                        bytes = self.bytes,
                        diff = if self.delta { "in the warehouse" } else { "by kinesync" },
                        "model read"
                    );
                    return None;
                }
                Some(Ok(())) => "the rows ended part way through a row; nothing was decided about removed rows".to_owned(),
                // A connection lost mid-read ends the rows with its error: the engine then
                // decides nothing about removed rows.
                Some(Err(message)) => message,
                None => "the thread reading the model stopped before the end; nothing was decided about removed rows".to_owned(),
            };
            return Some(Err(SourceError::Postgres { location, message }));
        }
        self.row += 1;
        Some(match TextRow::parse(&self.line) {
            Ok(row) => {
                self.bytes += row.value_bytes() as u64;
                Ok(row)
            }
            Err(message) => Err(self.row_error(message)),
        })
    }

    /// An error about the row just read.
    fn row_error(&self, message: String) -> SourceError {
        SourceError::Postgres {
            location: format!("{}, query row {}", self.place, self.row),
            message,
        }
    }

    /// The model row of one row read, with the fingerprint the server computed.
    fn source_row(&self, row: &TextRow) -> Result<SourceRow, SourceError> {
        let columns = self.conversions.len();
        let mut values = Vec::with_capacity(columns);
        for (index, conversion) in self.conversions.iter().enumerate() {
            let value = match row.get(index) {
                None => Value::Null,
                Some(text) => convert(*conversion, text).map_err(|message| {
                    self.row_error(format!(
                        "column {:?}: {message}",
                        self.schema.columns()[index]
                    ))
                })?,
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
        let fingerprint = row
            .get(columns)
            .and_then(|text| text.parse::<i64>().ok())
            .map(fingerprint_of)
            .ok_or_else(|| self.row_error("the server gave no fingerprint".to_owned()))?;
        Ok(SourceRow::new(self.row, Row::new(values)).with_fingerprint(fingerprint))
    }
}

/// A row's fingerprint as kinesync keeps it, from the server's signed 64-bit hash: its
/// bytes as an unsigned number, so that the 16 bytes the state stores (big-endian) are 8
/// zeros and then the bytes PostgreSQL's `int8send` gives, which the diff compares with.
fn fingerprint_of(hash: i64) -> u128 {
    u128::from(u64::from_be_bytes(hash.to_be_bytes()))
}

impl Iterator for PostgresSource {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        debug_assert!(!self.delta, "a diff's rows are read by PostgresDelta");
        let row = self.next_text_row()?;
        Some(row.and_then(|row| self.source_row(&row)))
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

/// Runs `work` on a thread of its own and gives its result: the client blocks on a runtime of
/// its own, which tokio forbids on a thread that drives a runtime.
fn off_the_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
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

#[cfg(test)]
mod tests {
    /// The state stores a fingerprint as its 16 big-endian bytes, and the diff in the
    /// warehouse compares them with 8 zero bytes and then `int8send` of the server's hash (its
    /// 8 bytes, big-endian, two's complement): negative hashes included.
    #[test]
    fn a_fingerprint_is_stored_as_the_diff_compares_it() {
        let cases: [(i64, [u8; 8]); 3] = [
            (1, [0, 0, 0, 0, 0, 0, 0, 1]),
            (-1, [0xff; 8]),
            (i64::MIN, [0x80, 0, 0, 0, 0, 0, 0, 0]),
        ];
        for (hash, sent) in cases {
            let mut stored = [0u8; 16];
            stored[8..].copy_from_slice(&sent);
            assert_eq!(super::fingerprint_of(hash).to_be_bytes(), stored, "{hash}");
        }
    }
}
