//! Reading only the rows written since the last complete run, for a table diffed in the
//! warehouse.
//!
//! Every row version PostgreSQL stores carries the id of the transaction that wrote it
//! (`xmin`), and a transaction that commits after a snapshot was taken has an id at least
//! that snapshot's `xmin`. So when a run completes (every row of its diff sent and
//! acknowledged, or moved on unsent as the trigger says, no row in error, nothing pending:
//! the state then holds exactly the table as the diff's snapshot saw it), its snapshot's
//! `xmin` marks what the state covers. The next run's diff needs to fingerprint only the rows
//! written at or after that mark ("fresh"): any other row is a version the state already
//! holds. Removed rows leave no version behind, so they are counted: the state held the
//! table's row count then (kept with the mark); every row not fresh is one of those keys, and
//! so is every fresh row whose key the state has; what is left over is the number of keys
//! removed since, and only when it is above zero does the diff look for them (the anti join
//! over every key, as without a mark). The count runs after the fresh rows have come, in the
//! same snapshot, while kinesync sends them; the removed keys, when there are any, come after
//! it, from a statement of their own.
//!
//! The mark (a [`Watermark`], kept in the state by the engine) holds only when nothing else
//! could change what a row reads as: it is tied to the cluster (its system identifier), the
//! table (its oid: a table renamed into its place is another table), the server's version,
//! the columns' names and types (a type changed without rewriting the table) and the whole
//! diff statement (any column added, dropped or renamed, or another projection, changes it).
//! Only an ordinary table without row-level security qualifies, whose columns are all of
//! types whose text is a function of the stored bytes ([`STABLE_TYPES`]: an enum's label can
//! be renamed, a user type's output redefined, a `regclass` follow a rename, without writing
//! any row) and none a virtual generated column. The engine forgets the mark when any run starts and keeps the new one
//! only when that run completes: a run that stopped, failed or left rows pending leaves none,
//! and the next diff reads the whole table.
//!
//! A mark more than 2^30 transactions old is not used (row ids are 32 bits, compared around
//! a circle); nor one ahead of the server (a cluster restored elsewhere).

use std::sync::{Arc, Mutex};

use postgres::Client;

use super::{FollowUp, query_error, read_error};
use crate::SourceError;

/// What a complete run leaves for the next diff of the same table (see the module's docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Watermark {
    /// The cluster, table, server, settings and statement the mark holds for, hashed.
    identity: String,
    /// The snapshot's `xmin`, with its epoch (a 64-bit transaction id).
    xmin: i64,
    /// The table's rows in that snapshot.
    rows: i64,
}

impl Watermark {
    /// The text kept in the state: a version, then the fields.
    fn to_text(&self) -> String {
        format!("1 {} {} {}", self.identity, self.xmin, self.rows)
    }

    /// A mark written by [`to_text`](Self::to_text); `None` for any other text (from an
    /// older or newer kinesync, say), which the diff then does without.
    fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split(' ');
        if fields.next()? != "1" {
            return None;
        }
        let identity = fields.next()?.to_owned();
        let xmin = fields.next()?.parse().ok()?;
        let rows = fields.next()?.parse().ok()?;
        fields.next().is_none().then_some(Self {
            identity,
            xmin,
            rows,
        })
    }
}

/// The types (or arrays' element types) of the columns a table read from a mark may have:
/// those the source maps whose text is a function of the stored bytes alone, with the
/// session's settings fixed (not an enum's label, nor a user type's output, which can change
/// without a row written): `int2`, `int4`, `int8`, `oid`, `numeric`, `float4`, `float8`,
/// `bool`, `text`, `varchar`, `bpchar`, `name`, `char`, `uuid`, `date`, `timestamp`,
/// `timestamptz`, `json`, `jsonb`, by their fixed oids.
const STABLE_TYPES: &str =
    "21, 23, 20, 26, 1700, 700, 701, 16, 25, 1043, 1042, 19, 18, 2950, 1082, 1114, 1184, 114, 3802";

/// Fresh rows are joined with the state by its index when at most one in this many rows is
/// fresh.
const FEW_FRESH: i64 = 20;

/// The oldest mark used, in transactions.
const MAX_AGE: i64 = 1 << 30;

/// How a table's diff reads: the statement, what runs once its rows have come, the mark to
/// keep if the run completes, and whether only the fresh rows are read.
pub(super) struct Plan {
    pub statement: String,
    /// What runs before it in the transaction (settings, and the sample that chose how fresh
    /// rows are joined), `;` after each, when only the fresh rows are read: to log.
    pub before: Option<String>,
    /// What runs once its rows have come (the count for the next mark), `;` after each: to
    /// log.
    pub after: Option<String>,
    /// That, to run: it may give a second statement, whose rows come after the first's.
    pub then: Option<FollowUp>,
    /// The mark to keep if the run completes, once known (the rows counted, after the
    /// statement's rows).
    pub watermark: Arc<Mutex<Option<String>>>,
    pub since_mark: bool,
    /// The keys the state holds, when only the fresh rows are read (the mark's row count).
    pub state_keys: Option<u64>,
}

impl Plan {
    /// The whole diff, leaving no mark.
    pub(super) fn whole(statement: &str) -> Self {
        Self {
            statement: statement.to_owned(),
            before: None,
            after: None,
            then: None,
            watermark: Arc::default(),
            since_mark: false,
            state_keys: None,
        }
    }
}

/// The statements a table's diff can run.
pub(super) struct Statements<'a> {
    /// The whole diff (every row fingerprinted, every key matched).
    pub full: &'a str,
    /// The diff over the rows of the query given, with (`true`) or without the keys the
    /// table lacks.
    pub over: &'a dyn Fn(&str, bool) -> String,
    /// Only the keys the state has and the table lacks.
    pub removed: &'a str,
    /// The quoted table.
    pub table: &'a str,
    /// A row's key as the state keeps it, over the alias `kinesync_row`.
    pub key: &'a str,
    /// The quoted state table.
    pub state_rows: &'a str,
}

/// About this many of a table's pages are sampled to tell whether few of its rows are fresh.
const SAMPLED_PAGES: f64 = 256.0;

/// Plans the diff of a table with a unique key, in the read's transaction (whose snapshot
/// this takes), given the mark the last complete run left, if any.
///
/// The rows are counted after the diff's rows have come, while kinesync sends them (the
/// count is a pass over the table, as long as the diff's own at 1% fresh): so which join
/// the fresh rows take is chosen from a sample of the table's pages, and the removed keys,
/// which the count tells of, are looked for by a second statement, whose keys come after the
/// rows.
pub(super) fn plan(
    client: &mut Client,
    place: &str,
    statements: &Statements<'_>,
    previous: Option<&str>,
) -> Result<Plan, SourceError> {
    let error = |e: postgres::Error| SourceError::Postgres {
        location: place.to_owned(),
        message: query_error(statements.table, &e),
    };
    let here = client
        .query_opt(
            &format!(
                "SELECT txid_snapshot_xmin(s), txid_snapshot_xmax(s),
                   c.relkind = 'r' AND NOT c.relrowsecurity
                     AND has_function_privilege('pg_control_system()', 'EXECUTE')
                     AND NOT EXISTS (SELECT FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                         AND (CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
                                NOT IN ({STABLE_TYPES})
                              OR coalesce(to_jsonb(a) ->> 'attgenerated', '') NOT IN ('', 's'))),
                   hashtextextended(concat_ws(' ',
                     CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
                       THEN (SELECT system_identifier FROM pg_control_system())::text END,
                     c.oid::text, current_setting('server_version_num'),
                     (SELECT string_agg(a.attname || ':' || a.atttypid || ':' || a.atttypmod, ','
                                        ORDER BY a.attnum)
                        FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                     $2::text), 0)::text,
                   c.relpages::float8
                 FROM txid_current_snapshot() AS s, pg_class AS c
                 WHERE c.oid = to_regclass($1)"
            ),
            &[&statements.table, &statements.full],
        )
        .map_err(error)?;
    let Some(here) = here else {
        return Ok(Plan::whole(statements.full));
    };
    let (xmin, xmax, eligible, identity, pages): (i64, i64, bool, String, f64) = (
        here.get(0),
        here.get(1),
        here.get(2),
        here.get(3),
        here.get(4),
    );
    if !eligible {
        return Ok(Plan::whole(statements.full));
    }
    let previous = previous
        .and_then(Watermark::parse)
        .filter(|w| w.identity == identity && w.xmin <= xmin && xmax - w.xmin < MAX_AGE);
    let (table, key, state_rows) = (statements.table, statements.key, statements.state_rows);
    let watermark: Arc<Mutex<Option<String>>> = Arc::default();
    let Some(previous) = previous else {
        // The whole diff; its rows counted after, for the next mark.
        let counting = format!("SELECT count(*) FROM {table}");
        let after = format!("{counting};\n");
        let slot = watermark.clone();
        let then: FollowUp = Box::new(move |client| {
            let counted = client
                .query_one(&counting, &[])
                .map_err(|e| read_error(&e))?;
            let mark = Watermark {
                identity,
                xmin,
                rows: counted.get(0),
            };
            *lock(&slot) = Some(mark.to_text());
            Ok(None)
        });
        return Ok(Plan {
            after: Some(after),
            then: Some(then),
            watermark,
            ..Plan::whole(statements.full)
        });
    };
    // `age` counts back from one id fixed for the transaction: a row's is at most the
    // mark's when the row was written at or after it.
    let mark = previous.xmin.rem_euclid(1 << 32);
    let fresh = |alias: &str| format!("age({alias}.xmin) <= age('{mark}'::xid)");
    // Few rows are fresh, which the planner cannot know: compiling the statements would
    // cost more than running them.
    client.batch_execute("SET LOCAL jit = off").map_err(error)?;
    // The planner guesses a third of the rows fresh, and would hash the whole state to join
    // them; a few are joined faster by the state's index (measured on 10M rows, 1% fresh:
    // 4.2 s hashed, under 1 s by the index). How many are fresh is told by a sample of the
    // table's pages (its rows in them, a few thousand, not its pages' order).
    let percent = (100.0 * SAMPLED_PAGES / pages.max(1.0)).min(100.0);
    let sampling = format!(
        "SELECT count(*), count(*) FILTER (WHERE {fresh}) \
         FROM {table} AS kinesync_row TABLESAMPLE SYSTEM ({percent}) REPEATABLE (0)",
        fresh = fresh("kinesync_row"),
    );
    let sampled = client.query_one(&sampling, &[]).map_err(error)?;
    let (sampled_rows, sampled_fresh): (i64, i64) = (sampled.get(0), sampled.get(1));
    let mut before = format!("SET jit = off;\n{sampling};\n");
    let by_index = sampled_fresh * FEW_FRESH <= sampled_rows;
    if by_index {
        let joins = "SET enable_hashjoin = off; SET enable_mergejoin = off;";
        client
            .batch_execute(&joins.replace("SET ", "SET LOCAL "))
            .map_err(error)?;
        before.push_str(joins);
        before.push('\n');
    }
    let counting = format!(
        "SELECT count(*), count(*) FILTER (WHERE {fresh}),
           count(*) FILTER (WHERE {fresh} AND EXISTS (SELECT FROM {state_rows} AS kinesync_state
             WHERE kinesync_state.key = {key} COLLATE \"C\"))
         FROM {table} AS kinesync_row",
        fresh = fresh("kinesync_row"),
    );
    let after = format!("{counting};\n");
    let fresh_query = format!(
        "SELECT * FROM {table} AS kinesync_table WHERE {}",
        fresh("kinesync_table")
    );
    let stale_query = format!(
        "SELECT * FROM {table} AS kinesync_table WHERE NOT {}",
        fresh("kinesync_table")
    );
    let (removed_keys, the_rest) = (
        statements.removed.to_owned(),
        (statements.over)(&stale_query, true),
    );
    let slot = watermark.clone();
    let then: FollowUp = Box::new(move |client| {
        let counted = client
            .query_one(&counting, &[])
            .map_err(|e| read_error(&e))?;
        let (rows, fresh_rows, fresh_in_state): (i64, i64, i64) =
            (counted.get(0), counted.get(1), counted.get(2));
        *lock(&slot) = Some(
            Watermark {
                identity,
                xmin,
                rows,
            }
            .to_text(),
        );
        // The keys the state held that are neither a row not fresh nor a fresh row it has.
        let removed = previous.rows - (rows - fresh_rows) - fresh_in_state;
        if removed == 0 {
            return Ok(None);
        }
        if by_index {
            // Keys matched with every key of the table: a hash or merge join does that well.
            client
                .batch_execute("SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on")
                .map_err(|e| read_error(&e))?;
        }
        if removed < 0 {
            // More rows than the state held can only be a state changed since (it never is
            // while a mark is kept): the rest of the table is diffed too.
            tracing::warn!(
                removed,
                "the table's rows do not add up to the state's, so its diff reads every row"
            );
            return Ok(Some(the_rest));
        }
        Ok(Some(removed_keys))
    });
    Ok(Plan {
        statement: (statements.over)(&fresh_query, false),
        before: Some(before),
        after: Some(after),
        then: Some(then),
        watermark,
        since_mark: true,
        state_keys: u64::try_from(previous.rows).ok(),
    })
}

/// The mark's slot, locked (a thread that panicked holding it left a mark or none).
pub(super) fn lock(slot: &Mutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_as_written_and_other_text_reads_as_none() {
        let mark = Watermark {
            identity: "-42".to_owned(),
            xmin: 1 << 40,
            rows: 10_000_000,
        };
        assert_eq!(Watermark::parse(&mark.to_text()), Some(mark));
        for text in [
            "",
            "1",
            "2 -42 1 1",
            "1 -42 x 1",
            "1 -42 1 1 extra",
            "1 -42 1",
        ] {
            assert_eq!(Watermark::parse(text), None, "{text:?}");
        }
    }
}
