//! Opening the model `[source]` names: a file (NDJSON, CSV, SQLite) or a Postgres query.
//!
//! Where it sits: config → **the model's rows** → engine. A Postgres model's connection string
//! comes from the environment variable the config names (never from the file, and never
//! printed), with libpq's `PG*` variables filling in the rest.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use kinesync_payload::Schema;
use kinesync_source::{
    Connection, DeltaSource, DiffPlace, PostgresDelta, PostgresSource, PostgresSpec, RowSource,
};
use kinesync_state::{MemoryStore, PostgresStore, StateStore};

use std::path::PathBuf;

use serde::Deserialize;

use crate::Error;
use crate::config::{Config, DestinationConfig, SourceConfig};

/// What kind of model `[source]` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// One JSON object a line.
    Ndjson,
    /// Comma-separated values with a header row.
    Csv,
    /// A SQLite database and a query.
    Sqlite,
    /// A PostgreSQL query or table.
    Postgres,
}

impl SourceConfig {
    /// What to open, for a model file, with the path resolved against the config file's
    /// directory.
    pub fn spec(&self, config: &Config) -> Result<kinesync_source::SourceSpec, Error> {
        let path = self.path.as_ref().ok_or_else(|| {
            config.invalid("[source] has no path: name the model's file or SQLite database, or set format = \"postgres\"")
        })?;
        Ok(self.spec_of(config.resolve(path)))
    }

    /// What to open, the model being the file at `path` (already resolved).
    pub fn spec_of(&self, path: PathBuf) -> kinesync_source::SourceSpec {
        kinesync_source::SourceSpec {
            path,
            primary_key: self.primary_key.clone(),
            format: match self.format {
                Some(ModelFormat::Ndjson) => Some(kinesync_source::Format::Ndjson),
                Some(ModelFormat::Csv) => Some(kinesync_source::Format::Csv),
                Some(ModelFormat::Sqlite) => Some(kinesync_source::Format::Sqlite),
                Some(ModelFormat::Postgres) | None => None,
            },
            query: self.query.clone(),
            types: self.types.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// Whether the model is in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.format == Some(ModelFormat::Postgres) || self.connection_env.is_some()
    }
}

/// A model as a run reads it.
pub enum Model {
    /// Every row, diffed by kinesync.
    Whole(Box<dyn RowSource>),
    /// Diffed where it lives: only the rows that may need sending, and the keys gone.
    Diffed(Box<dyn DeltaSource>),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Whole(_) => "Model::Whole",
            Self::Diffed(_) => "Model::Diffed",
        })
    }
}

impl Model {
    /// The model's columns and primary key.
    pub fn schema(&self) -> &Arc<Schema> {
        match self {
            Self::Whole(source) => source.schema(),
            Self::Diffed(source) => source.schema(),
        }
    }
}

/// The Postgres model of `config`'s `[source]`, diffed in the warehouse against the state
/// table `state_rows` (see [`PostgresDelta`]), from the mark the last complete run left
/// (`since`, see [`PostgresDelta::open_since`]); read whole when the diff cannot run there
/// (a key whose type the join cannot match), with a warning saying why.
pub fn open_diffed(config: &Config, state_rows: &str, since: Option<&str>) -> Result<Model, Error> {
    let spec = postgres_spec(config, config.source()?)?;
    Ok(match PostgresDelta::open_since(&spec, state_rows, since)? {
        DiffPlace::Warehouse(delta) => {
            if delta.since_last_complete_run() {
                tracing::info!("the diff reads only the rows written since the last complete run");
            }
            tracing::debug!("the diff runs in the warehouse: {}", delta.statements());
            Model::Diffed(Box::new(delta))
        }
        DiffPlace::Kinesync { source, why } => {
            tracing::warn!("the diff runs in kinesync, over the whole model: {why}");
            Model::Whole(Box::new(source))
        }
    })
}

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
    let mut whole_table = None;
    let query = match (&source.query, &source.table) {
        (Some(query), None) => query.clone(),
        (None, Some(table)) => {
            let table = table_name(config, table)?;
            let query = format!("SELECT * FROM {table}");
            whole_table = Some(table);
            query
        }
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
    let connection = connection(config, source)?;
    let mut spec = PostgresSpec::new(connection, query, source.primary_key.clone());
    spec.statement_timeout = source.statement_timeout_seconds.map(Duration::from_secs);
    spec.table = whole_table;
    Ok(spec)
}

/// The Postgres connection settings of `[source]`: the string in the variable
/// `connection_env` names (never echoed), or libpq's `PG*` variables alone.
fn connection(config: &Config, source: &SourceConfig) -> Result<Connection, Error> {
    match &source.connection_env {
        None => Ok(Connection::new("")),
        Some(name) if !crate::config::looks_like_a_variable(name) => {
            // Not echoed: a connection string put here by mistake may hold a password.
            Err(config.invalid(
                "[source] connection_env must name an environment variable (such as WAREHOUSE_URL), not hold the connection string itself; the value is not shown",
            ))
        }
        Some(name) => Ok(Connection::new(std::env::var(name).map_err(|_| {
            config.invalid(format!(
                "[source] connection_env names {name}, which is not set: export it with the connection string (postgres://user@host:5432/database)"
            ))
        })?)),
    }
}

/// The state `[sync] state_schema` keeps in the warehouse: tables in the Postgres model's
/// database. A dry run reads it as it is (an empty state when no run made it yet), writes
/// nothing and takes no lock.
///
/// With it, the table a diff in the warehouse joins the model with, once a first run has
/// recorded its baseline (until then every row is sent, and the model is read whole).
pub(crate) fn warehouse_state(
    config: &Config,
    schema: &str,
    dry_run: bool,
) -> Result<(Box<dyn StateStore>, Option<String>), Error> {
    let (client, place, name) = warehouse_connection(config)?;
    let store = if dry_run {
        match PostgresStore::open_read_only(client, place, schema, &name)? {
            Some(store) => store,
            None => return Ok((Box::new(MemoryStore::new()), None)),
        }
    } else {
        PostgresStore::open(client, place, schema, &name)?
    };
    let diff_against = store.has_baseline()?.then(|| store.rows_table().to_owned());
    Ok((Box::new(store), diff_against))
}

/// The state `[sync] state_schema` keeps in the warehouse, opened to write (and locked);
/// `None` when the config keeps its state in a SQLite file.
pub fn open_warehouse_state(config: &Config) -> Result<Option<PostgresStore>, Error> {
    let Some(schema) = &config.sync.state_schema else {
        return Ok(None);
    };
    let (client, place, name) = warehouse_connection(config)?;
    Ok(Some(PostgresStore::open(client, place, schema, &name)?))
}

/// A client for the warehouse state, where it is, and the state's name.
fn warehouse_connection(config: &Config) -> Result<(postgres::Client, String, String), Error> {
    let source = config.source()?;
    if !source.is_postgres() {
        return Err(config.invalid(
            "[sync] state_schema keeps the state in the Postgres model's database, and [source] is not a Postgres model: remove state_schema (the state then lives in a SQLite file)",
        ));
    }
    if config.sync.state.is_some() {
        return Err(config.invalid(
            "[sync] has both state (a SQLite file) and state_schema (tables in the warehouse): keep one",
        ));
    }
    let name = match &config.sync.state_name {
        Some(name) => name.clone(),
        None => default_state_name(config.destination()?),
    };
    let (client, place) = connection(config, source)?.connect()?;
    Ok((client, place, name))
}

/// A sync's state name when `[sync] state_name` is not set: its stream's name, and the
/// stream's region for a real one, in lowercase letters, digits and `_`. With the region, the
/// syncs of a multi-region deployment (one config per region, the same stream name in each)
/// keep their states apart in one warehouse schema: sharing one, the second region's first
/// run would find the first's baseline, and never send it the rows the first had sent.
fn default_state_name(destination: &DestinationConfig) -> String {
    let mut name = destination.stream.clone();
    if let (None, Some(region)) = (&destination.simulated, &destination.region) {
        name = format!("{name}_{region}");
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::default_state_name;
    use crate::config::DestinationConfig;

    fn destination(stream: &str, region: Option<&str>, simulated: bool) -> DestinationConfig {
        let mut text = format!("stream = {stream:?}\n");
        if let Some(region) = region {
            text.push_str(&format!("region = {region:?}\n"));
        }
        if simulated {
            text.push_str("simulated = { shards = 1 }\n");
        }
        toml::from_str(&text).expect("a destination")
    }

    /// The same stream name in two regions (one config per region, one warehouse schema)
    /// gives two states; a simulated stream has no region.
    #[test]
    fn the_default_state_name_tells_regions_apart() {
        let east = default_state_name(&destination("Orders-EU", Some("us-east-1"), false));
        let west = default_state_name(&destination("Orders-EU", Some("eu-west-1"), false));
        assert_eq!(east, "orders_eu_us_east_1");
        assert_eq!(west, "orders_eu_eu_west_1");
        assert_eq!(
            default_state_name(&destination("Orders-EU", None, true)),
            "orders_eu"
        );
    }
}
