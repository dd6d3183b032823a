//! kinesync: stream the rows of a data model into an Amazon Kinesis data stream.
//!
//! This crate is the orchestrator. It reads the configuration ([`Config`]), opens the model
//! (`kinesync-source`), compiles the payload (`kinesync-payload`) and the key columns
//! ([`KeySpec`], `kinesync-keys`), and turns each row into the exact [`Record`] that would be
//! sent: message bytes, partition key, explicit hash key and hash key. [`preview`] shows those
//! records, as JSON lines or as snapshot text for template tests.
//!
//! [`destination`] turns `[destination]` into a connected `KinesisSink` and runs `kinesync
//! check`; [`sync`] is the engine (change detection against the state store, batching,
//! sending, commits); [`run_config`] runs it from a config file; [`runs`] keeps past runs.
//! The data path, in order: source → payload → keys → sync engine (batcher → sender) → sink,
//! with the state store beside it. Each stage is its own crate with one job; this one wires
//! them.

pub mod config;
pub mod destination;
pub mod preview;
mod records;
pub mod runs;
pub mod sync;

use std::path::PathBuf;

pub use config::Config;
pub use kinesync_keys as keys;
pub use kinesync_payload as payload;
pub use kinesync_source as source;
pub use kinesync_state as state;
pub use kinesync_transport as transport;
pub use records::{KeySpec, Record, RecordBuilder, RowError};

use config::TemplateOrigin;

/// What can stop kinesync before any row is processed. Each says where and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file does not parse, or its settings do not fit together.
    #[error("{}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong (TOML errors include line and column).
        message: String,
    },
    /// A file could not be read.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What kinesync was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The model could not be read.
    #[error(transparent)]
    Source(#[from] kinesync_source::SourceError),
    /// The payload spec does not compile against the model.
    #[error("{}", render_compile_errors(errors, template.as_ref(), config))]
    Compile {
        /// Every problem found.
        errors: kinesync_payload::CompileErrors,
        /// The template's text and where it came from (template mode).
        template: Option<(String, TemplateOrigin)>,
        /// The config file.
        config: PathBuf,
    },
    /// A `[keys]` setting names a column the model does not have.
    #[error("{setting} names column {name:?}, which the model does not have{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    UnknownKeyColumn {
        /// `keys.partition_key` or `keys.explicit_hash_key`.
        setting: &'static str,
        /// The column named.
        name: String,
        /// The closest existing column.
        suggestion: Option<String>,
    },
    /// The simulated stream's shard count is unusable.
    #[error("cannot simulate the stream: {0}")]
    Shards(kinesync_keys::ShardMapError),
    /// A call to the stream failed; the message says what to check.
    #[error(transparent)]
    Transport(#[from] kinesync_transport::TransportError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] kinesync_state::StateError),
    /// The sync is not set up right.
    #[error("{0}")]
    Sync(String),
}

/// Compiles the config's payload and keys against `schema`; every problem is reported at once.
pub fn records_for(
    config: &Config,
    schema: &std::sync::Arc<kinesync_payload::Schema>,
) -> Result<RecordBuilder, Error> {
    let (spec, template) = config.payload_spec()?;
    let payload = kinesync_payload::Payload::compile(&spec, schema.clone()).map_err(|errors| {
        Error::Compile {
            errors,
            template: template.clone(),
            config: config.path.clone(),
        }
    })?;
    let keys = KeySpec::new(
        schema,
        config.keys.partition_key.as_deref(),
        config.keys.explicit_hash_key.as_deref(),
    )?;
    Ok(RecordBuilder::new(payload, keys))
}

/// How [`run_config`] runs, beyond what the config file says.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Do everything but send and commit.
    pub dry_run: bool,
    /// Where the run's debugger log goes.
    pub debug_log: Option<sync::DebugLog>,
    /// Counters to watch the run by.
    pub progress: Option<std::sync::Arc<sync::Progress>>,
}

/// One `kinesync sync` run from a config file: the model from `[source]` (read on a thread of
/// its own, see [`sync::Engine::run_source`]), the records from `[payload]` and `[keys]`, the stream from `[destination]`, the
/// state file, trigger and limits from `[sync]`. Gives the report and the destination (for a
/// simulated stream's shard counts).
pub async fn run_config(
    config: &Config,
    options: RunOptions,
) -> Result<(sync::RunReport, destination::Destination), Error> {
    let source = kinesync_source::open(&config.source()?.spec(config))?;
    let records = records_for(config, source.schema())?;
    let destination = destination::connect(config).await?;
    let events = match &config.sync.events {
        Some(names) => sync::Events::from_names(names)
            .map_err(|e| config.invalid(format!("[sync] events: {e}")))?,
        None => sync::Events::all(),
    };
    let initial = match config.sync.initial {
        Some(config::InitialConfig::Skip) => sync::Initial::Skip,
        _ => sync::Initial::Backfill,
    };
    let mut builder = sync::Engine::builder()
        .records(records)
        .sink(destination.sink.clone(), destination.stream.clone())
        .state_boxed(state_store(config, options.dry_run)?)
        .events(events)
        .initial(initial)
        .limits(config.sync.limits())
        .dry_run(options.dry_run);
    if let Some(log) = options.debug_log {
        builder = builder.debug_log(log);
    }
    if let Some(progress) = options.progress {
        builder = builder.progress(progress);
    }
    let mut engine = builder.build()?;
    let report = engine.run_source(source).await?;
    Ok((report, destination))
}

/// The `[sync] state` store. A dry run commits nothing, and does not create a state file
/// either: with none there yet, it diffs against an empty store. Nor does it upgrade a state
/// file an older kinesync wrote: it reads it as it is.
fn state_store(
    config: &Config,
    dry_run: bool,
) -> Result<Box<dyn kinesync_state::StateStore>, Error> {
    let path = config.state_path();
    if dry_run {
        if !path.exists() {
            return Ok(Box::new(kinesync_state::MemoryStore::new()));
        }
        return Ok(Box::new(kinesync_state::SqliteStore::open_without_upgrade(
            path,
        )?));
    }
    Ok(Box::new(kinesync_state::SqliteStore::open(path)?))
}

fn render_compile_errors(
    errors: &kinesync_payload::CompileErrors,
    template: Option<&(String, TemplateOrigin)>,
    config: &std::path::Path,
) -> String {
    let report = match template {
        Some((source, origin)) => errors.render(
            &origin.file.display().to_string(),
            Some(source),
            origin.line_offset,
            origin.column_offset,
        ),
        None => errors.render(&config.display().to_string(), None, 0, 0),
    };
    report.trim_end().to_owned()
}
