//! Opening the model `[source]` names: a file (NDJSON, CSV, SQLite) or a Postgres query.
//!
//! Where it sits: config → **the model's rows** → engine. A Postgres model's connection string
//! comes from the environment variable the config names (never from the file, and never
//! printed), with libpq's `PG*` variables filling in the rest.

use std::path::Path;
use std::time::Duration;

use kinesync_source::{Connection, PostgresSource, PostgresSpec, RowSource};

use crate::Error;
use crate::config::{Config, SourceConfig};

/// The model of `config`'s `[source]`.
pub fn open(config: &Config) -> Result<Box<dyn RowSource>, Error> {
    let source = config.source()?;
    if source.is_postgres() {
        return Ok(Box::new(PostgresSource::open(&postgres_spec(
            config, source,
        )?)?));
    }
    Ok(kinesync_source::open(&source.spec(config)?)?)
}

/// The rows of the file `rows` (its format from its extension), keyed as `[source]` says: for
/// previews and snapshot tests that bring their own rows.
pub fn open_file(config: &Config, rows: &Path) -> Result<Box<dyn RowSource>, Error> {
    let source = config.source()?;
    let mut spec = source.spec_of(rows.to_owned());
    spec.format = None;
    let format = kinesync_source::Format::from_path(rows);
    if format != Some(kinesync_source::Format::Sqlite) {
        spec.query = None;
    }
    if format != Some(kinesync_source::Format::Csv) {
        spec.types.clear();
    }
    Ok(kinesync_source::open(&spec)?)
}

/// What a Postgres `[source]` reads, checked.
fn postgres_spec(config: &Config, source: &SourceConfig) -> Result<PostgresSpec, Error> {
    if source.path.is_some() {
        return Err(config.invalid(
            "[source] is a Postgres model and has a path: remove path (the model is the query's rows)",
        ));
    }
    if !source.types.is_empty() {
        return Err(config.invalid(
            "[source.types] applies to CSV models only; Postgres columns carry their own types (cast in the query to change one)",
        ));
    }
    let query = match (&source.query, &source.table) {
        (Some(query), None) => query.clone(),
        (None, Some(table)) => format!("SELECT * FROM {}", table_name(config, table)?),
        (Some(_), Some(_)) => {
            return Err(config.invalid(
                "[source] has both query and table: keep one (table = \"schema.name\" reads it whole)",
            ));
        }
        (None, None) => {
            return Err(config.invalid(
                "[source] is a Postgres model and needs query = \"SELECT ...\" or table = \"schema.name\"",
            ));
        }
    };
    let connection = match &source.connection_env {
        None => Connection::new(""),
        Some(name) if !crate::config::looks_like_a_variable(name) => {
            // Not echoed: a connection string put here by mistake may hold a password.
            return Err(config.invalid(
                "[source] connection_env must name an environment variable (such as WAREHOUSE_URL), not hold the connection string itself; the value is not shown",
            ));
        }
        Some(name) => Connection::new(std::env::var(name).map_err(|_| {
            config.invalid(format!(
                "[source] connection_env names {name}, which is not set: export it with the connection string (postgres://user@host:5432/database)"
            ))
        })?),
    };
    let mut spec = PostgresSpec::new(connection, query, source.primary_key.clone());
    spec.statement_timeout = source.statement_timeout_seconds.map(Duration::from_secs);
    Ok(spec)
}

/// `table` as a quoted SQL name: `schema.name` or `name`, each part an identifier.
fn table_name(config: &Config, table: &str) -> Result<String, Error> {
    let parts: Vec<&str> = table.split('.').collect();
    let valid = parts.len() <= 3
        && parts.iter().all(|part| {
            !part.is_empty() && !part.contains(['"', '\0', ';']) && part.trim() == *part
        });
    if !valid {
        return Err(config.invalid(format!(
            "[source] table = {table:?} is not a table name: write schema.name (or a query)"
        )));
    }
    Ok(parts
        .iter()
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join("."))
}
