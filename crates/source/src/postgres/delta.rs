//! The diff in the warehouse: the model query joined with the state's table on the primary
//! key, in one statement, so that only the rows that may need sending (added, changed, in
//! doubt) and the keys gone from the model leave the server.
//!
//! The statement, for a model `q` keyed by `id` and the state table `s`:
//!
//! ```sql
//! SELECT <q's columns, each as PostgresSource reads it>, m.fingerprint, m.key,
//!        CASE WHEN m.present IS NULL THEN s.key END       -- a removed key
//! FROM (SELECT q.*, hashtextextended((<names, how read> || ROW(q.*)::text) COLLATE "C", 0)
//!                     AS fingerprint,
//!              to_json(q.id)::text AS key, true AS present   -- q.id::text for integers
//!       FROM (<query>) AS q) AS m
//! FULL JOIN s ON s.key = m.key COLLATE "C"
//! WHERE m.present IS NULL OR s.key IS NULL OR s.doubt IS NOT NULL
//!    OR s.fingerprint <> (decode('0000000000000000', 'hex') || int8send(m.fingerprint))
//! ```
//!
//! For a table with a unique index on its key, two joins instead: the same rows through a
//! `LEFT JOIN`, then `UNION ALL` the state's keys the table's keys lack (`NOT EXISTS`, an anti
//! join over the table's keys as their JSON text). PostgreSQL (before 16) runs a full join on
//! one core and these two in parallel (measured on 2 cores over 10M rows: 17 s instead of
//! 31 s). Any other model keeps the full join, which runs its query once: run twice, a query with `LIMIT`, `random()` or another
//! volatile part could give two sets of rows, and a row of one missing from the other would
//! be sent as removed.
//!
//! The statement runs to its end in one `COPY`, which the server may plan in parallel (it
//! never does for a cursor); and since its planner cannot know how few rows pass the filter,
//! it would price every row as crossing between its processes: the transaction sets
//! `parallel_tuple_cost` to 0.01, a tenth of its default.
//!
//! It compares what the state holds with what [`PostgresSource`] would give: the state keeps
//! each key as its JSON text and the fingerprint the server computed for the row last sent
//! (every Postgres model's rows carry it, whichever store keeps the state). So the join is
//! exact only for keys whose JSON text the server writes as kinesync does: integers, text
//! and UUIDs. A key of another type is diffed by kinesync, the model read whole
//! ([`DiffPlace::Kinesync`]); and every row that comes back has its key checked against the
//! server's text, so that a mismatch stops the run instead of sending wrong removals.
//!
//! A key read twice would hide in the join (two rows equal to the stored one come back as
//! none). A model that is a table with a unique index on its key column cannot have one; any
//! other model's keys are counted first, in the same snapshot, and a duplicate stops the run
//! before anything is sent.

use std::fmt;
use std::sync::Arc;

use kinesync_payload::Schema;
use postgres::types::Type;

use super::{
    ALIAS, PostgresSource, PostgresSpec, Prepared, Reading, off_the_runtime, query_error, quoted,
    watermark,
};
use crate::{DeltaItem, DeltaSource, Locator, SourceError};

/// The key types whose JSON text the server writes as kinesync does.
const JOINABLE_KEYS: [Type; 6] = [
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::VARCHAR,
    Type::UUID,
];

/// The columns the diff's statement adds beside the model's.
const HELPER_COLUMNS: [&str; 3] = ["kinesync fingerprint", "kinesync key", "kinesync present"];

/// Where a sync's diff runs.
#[derive(Debug)]
pub enum DiffPlace {
    /// In the warehouse: only what may need sending comes.
    Warehouse(PostgresDelta),
    /// In kinesync, from the whole model: the diff cannot run in the warehouse, for the
    /// reason given.
    Kinesync {
        /// The whole model.
        source: PostgresSource,
        /// Why not in the warehouse.
        why: String,
    },
}

/// A Postgres model diffed against the state's table in the warehouse (see the module's
/// documentation).
pub struct PostgresDelta {
    source: PostgresSource,
    /// The diff's statement, and the mark to keep for the next.
    plan: watermark::Plan,
}

impl fmt::Debug for PostgresDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDelta")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PostgresDelta {
    /// The model of `spec`, diffed against the state table `state_rows` (its quoted, schema
    /// qualified name: a [`PostgresStore`]'s rows), read by the same role; or the whole model
    /// when the diff cannot run there. Like [`PostgresSource::open`], callable from async code.
    ///
    /// Open it after the state is opened (and so locked): the diff compares the model with
    /// the state as it was then.
    ///
    /// [`PostgresStore`]: https://docs.rs/kinesync-state
    pub fn open(spec: &PostgresSpec, state_rows: &str) -> Result<DiffPlace, SourceError> {
        Self::open_since(spec, state_rows, None)
    }

    /// [`open`](Self::open), given the mark the last complete run left (the engine keeps it
    /// in the state: `kinesync_engine::diff_watermark`): a table with a unique key then has
    /// only the rows written since fingerprinted, and its keys matched only when some were
    /// removed. The diff's [`watermark`](DeltaSource::watermark) is the mark this run leaves
    /// if it completes.
    pub fn open_since(
        spec: &PostgresSpec,
        state_rows: &str,
        watermark: Option<&str>,
    ) -> Result<DiffPlace, SourceError> {
        off_the_runtime(|| Self::open_here(spec, state_rows, watermark))
    }

    fn open_here(
        spec: &PostgresSpec,
        state_rows: &str,
        previous: Option<&str>,
    ) -> Result<DiffPlace, SourceError> {
        let mut prepared = Prepared::open(spec)?;
        if let Some(taken) = prepared
            .schema
            .columns()
            .iter()
            .find(|c| HELPER_COLUMNS.contains(&c.as_str()))
        {
            let why = format!(
                "the model has a column named {taken:?}, a name the diff's statement uses for its own; rename it in the query to diff in the warehouse"
            );
            return Ok(DiffPlace::Kinesync {
                source: PostgresSource::whole(prepared)?,
                why,
            });
        }
        if !JOINABLE_KEYS.contains(&prepared.key_type) {
            let why = format!(
                "the primary key {:?} is of type {}, whose JSON text the server does not write as kinesync does; to diff in the warehouse, cast it in the query to a type that keeps each key's JSON (::int8 for integers). A cast that changes it (::text makes a number a string; char(n) loses its padding) makes every row look removed and added once",
                spec.primary_key,
                prepared.key_type.name()
            );
            return Ok(DiffPlace::Kinesync {
                source: PostgresSource::whole(prepared)?,
                why,
            });
        }
        // An integer's JSON is its decimal text, which `::text` writes for half the cost
        // (measured over 5M keys: 0.43 s against 0.88 to 0.99 s); the join pays it for
        // every key, twice for a table.
        let column = format!("kinesync_row.{}", quoted(&spec.primary_key));
        let key = if [Type::INT2, Type::INT4, Type::INT8].contains(&prepared.key_type) {
            format!("{column}::text")
        } else {
            format!("to_json({column})::text")
        };
        let unique = match &spec.table {
            Some(table) => key_is_unique(&mut prepared, table, &spec.primary_key)?,
            None => false,
        };
        let model = Model::of(&prepared);
        let statement = if unique {
            two_joins(&model, &model.query, &key, state_rows, true)
        } else {
            full_join(&model, &key, state_rows)
        };
        // The statement over a table's fresh rows (see the `watermark` module).
        let over = |query: &str, removed: bool| two_joins(&model, query, &key, state_rows, removed);
        let removed_keys = removed_keys(&model, &key, state_rows);
        let fresh_statement = match (&spec.table, unique) {
            (Some(table), true) => Some((table.clone(), over)),
            _ => None,
        };
        let duplicates = format!(
            "SELECT k FROM (SELECT {key} AS k FROM ({}\n) AS kinesync_row) AS keys
             WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1 LIMIT 1",
            prepared.query
        );
        let (place, query, primary_key) = (
            prepared.place.clone(),
            prepared.query.clone(),
            spec.primary_key.clone(),
        );
        let mut plan = None;
        let source = prepared.start_read(true, |client| {
            // Few rows leave the diff, which its planner cannot know (see the module's docs).
            client
                .batch_execute("SET LOCAL parallel_tuple_cost = 0.01")
                .map_err(|e| SourceError::Postgres {
                    location: place.clone(),
                    message: query_error(&query, &e),
                })?;
            if let Some((table, over)) = &fresh_statement {
                let statements = watermark::Statements {
                    full: &statement,
                    over,
                    removed: &removed_keys,
                    table,
                    key: &key,
                    state_rows,
                };
                let mut planned = watermark::plan(client, &place, &statements, previous)?;
                let reading = Reading {
                    select: planned.statement.clone(),
                    then: planned.then.take(),
                };
                plan = Some(planned);
                return Ok(reading);
            }
            let found = client
                .query_opt(&duplicates, &[])
                .map_err(|e| SourceError::Postgres {
                    location: place.clone(),
                    message: query_error(&query, &e),
                })?;
            match found {
                Some(row) => Err(SourceError::Postgres {
                    location: place,
                    message: format!(
                        "primary key {} (column {primary_key:?}) appears more than once in the model; primary keys must be unique. Nothing was sent",
                        row.get::<_, String>(0)
                    ),
                }),
                None => Ok(Reading::only(statement.clone())),
            }
        })?;
        let plan = plan.unwrap_or_else(|| watermark::Plan::whole(&statement));
        Ok(DiffPlace::Warehouse(Self { source, plan }))
    }

    /// The diff's statement, as the server runs it (to time it alone, say).
    pub fn statement(&self) -> &str {
        &self.plan.statement
    }

    /// Every statement the diff runs that takes the server time, `;` after each, with the
    /// settings they run with (to time them alone in psql): when only the rows written since
    /// the last complete run are read, the sample that tells how many there are; then
    /// [`statement`](Self::statement); then, for a table that can keep a mark, the count of
    /// its rows for the next one, run once the statement's rows have come (from a mark, it
    /// also tells whether keys were removed: only then does a statement that finds them
    /// follow).
    pub fn statements(&self) -> String {
        let before = self.plan.before.as_deref().unwrap_or_default();
        let after = self.plan.after.as_deref().unwrap_or_default();
        format!("{before}{};\n{after}", self.plan.statement)
    }

    /// Whether the diff reads only the rows written since the last complete run (see
    /// [`open_since`](Self::open_since)).
    pub fn since_last_complete_run(&self) -> bool {
        self.plan.since_mark
    }

    /// Rows read so far (rows that may need sending and removed keys), and the bytes of their
    /// values.
    pub fn read_so_far(&self) -> (u64, u64) {
        self.source.read_so_far()
    }
}

/// What the diff's statements select from the model: its columns as read, each row's
/// fingerprint, and its query.
struct Model {
    /// Each column's SQL over the alias [`ALIAS`].
    projection: Vec<String>,
    /// A row's fingerprint over the alias `kinesync_row`.
    fingerprint: String,
    query: String,
}

impl Model {
    fn of(prepared: &Prepared) -> Self {
        Self {
            projection: prepared.projection.clone(),
            fingerprint: prepared.fingerprint("kinesync_row"),
            query: prepared.query.clone(),
        }
    }
}

/// From `FROM` on, what both forms of the statement share: the model's rows (with each one's
/// fingerprint and key's text) `join`ed with the state's, kept when they may need sending
/// (added, changed, in doubt) or when `also` (a condition, `OR`) holds.
fn rows_to_send(
    model: &Model,
    query: &str,
    key: &str,
    state_rows: &str,
    join: &str,
    also: &str,
) -> String {
    // The query ends its own line: a comment closing it ends there.
    format!(
        "FROM (SELECT kinesync_row.*, {fingerprint} AS \"kinesync fingerprint\", \
         {key} AS \"kinesync key\", true AS \"kinesync present\" \
         FROM ({query}\n) AS kinesync_row) AS {ALIAS} \
         {join} JOIN {state_rows} AS kinesync_state \
         ON kinesync_state.key = {ALIAS}.\"kinesync key\" COLLATE \"C\" \
         WHERE {also}kinesync_state.key IS NULL OR kinesync_state.doubt IS NOT NULL \
         OR kinesync_state.fingerprint <> (decode('0000000000000000', 'hex') || int8send({ALIAS}.\"kinesync fingerprint\"))",
        fingerprint = model.fingerprint,
    )
}

/// The statement for a table with a unique key: the rows to send, of the rows `query` gives
/// (the table's, or those written since the last complete run), then, with `removed`, the
/// state's keys the table's keys lack (two joins the server runs in parallel; the table read
/// twice in one snapshot gives the same rows both times).
fn two_joins(model: &Model, query: &str, key: &str, state_rows: &str, removed: bool) -> String {
    let rows = format!(
        "SELECT {projection}, {ALIAS}.\"kinesync fingerprint\", {ALIAS}.\"kinesync key\", NULL::text \
         {rows}",
        projection = model.projection.join(", "),
        rows = rows_to_send(model, query, key, state_rows, "LEFT", ""),
    );
    if !removed {
        return rows;
    }
    format!("{rows} UNION ALL {}", removed_keys(model, key, state_rows))
}

/// The keys the state has and the table's rows (`model`'s query) lack.
fn removed_keys(model: &Model, key: &str, state_rows: &str) -> String {
    format!(
        "SELECT {nulls}, NULL, NULL, kinesync_state.key FROM {state_rows} AS kinesync_state \
         WHERE NOT EXISTS (SELECT FROM ({query}\n) AS kinesync_row \
         WHERE {key} COLLATE \"C\" = kinesync_state.key)",
        nulls = vec!["NULL"; model.projection.len()].join(", "),
        query = model.query,
    )
}

/// The statement for any other model: one full join, so that the query runs once (run twice,
/// a query with `LIMIT`, `random()` or another volatile part could give two sets of rows, and
/// a row of one missing from the other would be sent as removed).
fn full_join(model: &Model, key: &str, state_rows: &str) -> String {
    let removed = format!("{ALIAS}.\"kinesync present\" IS NULL OR ");
    let rows = rows_to_send(model, &model.query, key, state_rows, "FULL", &removed);
    format!(
        "SELECT {projection}, {ALIAS}.\"kinesync fingerprint\", {ALIAS}.\"kinesync key\", \
         CASE WHEN {ALIAS}.\"kinesync present\" IS NULL THEN kinesync_state.key END {rows}",
        projection = model.projection.join(", "),
    )
}

/// Whether `table` has a valid unique index on exactly its column `column` (no expression, no
/// predicate), and no child tables that index does not cover: then its keys cannot repeat. (A
/// unique index built `CONCURRENTLY` that failed, on keys that repeat, is left invalid.)
fn key_is_unique(prepared: &mut Prepared, table: &str, column: &str) -> Result<bool, SourceError> {
    let found = prepared.client.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
           WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid
             AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL
             AND a.attname = $2
             AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = i.indrelid))",
        &[&table, &column],
    );
    found
        .map(|row| row.get(0))
        .map_err(|e| SourceError::Postgres {
            location: prepared.place.clone(),
            message: query_error(table, &e),
        })
}

impl Iterator for PostgresDelta {
    type Item = Result<DeltaItem, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = match self.source.next_text_row()? {
            Ok(row) => row,
            Err(e) => return Some(Err(e)),
        };
        let columns = self.source.conversions.len();
        if let Some(removed) = row.get(columns + 2) {
            return Some(Ok(DeltaItem::Removed(removed.to_owned())));
        }
        let read = match self.source.source_row(&row) {
            Ok(read) => read,
            Err(e) => return Some(Err(e)),
        };
        // The join matched the server's text of the key; the state holds kinesync's.
        let ours = read
            .row
            .get(self.source.schema.primary_key_index())
            .to_json_string();
        let theirs = row.get(columns + 1).unwrap_or_default();
        if ours != theirs {
            return Some(Err(self.source.row_error(format!(
                "the server writes this row's key as {theirs} and kinesync as {ours}, so the diff in the warehouse cannot match it with the state; nothing was decided about removed rows (report this, with the key's type)"
            ))));
        }
        Some(Ok(DeltaItem::Row(read)))
    }
}

impl DeltaSource for PostgresDelta {
    fn schema(&self) -> &Arc<Schema> {
        &self.source.schema
    }

    fn locator(&self) -> Locator {
        Locator::query_rows(&self.source.place)
    }

    /// Known once the rows have ended: the rows are counted after the diff's.
    fn watermark(&self) -> Option<String> {
        watermark::lock(&self.plan.watermark).clone()
    }

    fn state_keys(&self) -> Option<u64> {
        self.plan.state_keys
    }
}
