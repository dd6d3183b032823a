//! kinesync: stream the rows of a data model into an Amazon Kinesis data stream.
//!
//! This crate is the orchestrator: it wires the other crates together and owns none of their
//! jobs. It reads the configuration ([`Config`]), opens the model ([`source`]), compiles the
//! payload ([`payload`]) and the key columns ([`KeySpec`]) into a [`RecordBuilder`], connects
//! the destination ([`destination`], a [`transport`] sink), opens the [`state`] store, and hands
//! them to the sync [`engine`]; [`run_config`] does all of that from a config file. [`preview`]
//! shows the exact records a model would become, as JSON lines or as snapshot text for
//! template tests; [`runs`] keeps past runs and their debugger logs.
//!
//! The data path, in order: source → engine (prepare → diff → build → batch → send → commit)
//! → sink, with the state store beside it. Each stage is its own crate with one job.

pub mod call_log;
pub mod config;
pub mod destination;
pub mod model;
pub mod preview;
pub mod runs;

use std::path::PathBuf;

pub use config::Config;
pub use kinesync_engine as engine;
pub use kinesync_engine::{KeySpec, Record, RecordBuilder, RowError};
pub use kinesync_keys as keys;
pub use kinesync_payload as payload;
pub use kinesync_source as source;
pub use kinesync_state as state;
pub use kinesync_transport as transport;

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
    /// The engine could not start or finish a run.
    #[error(transparent)]
    Engine(kinesync_engine::Error),
    /// A past run asked for is not in the run history.
    #[error(transparent)]
    Run(#[from] runs::RunLookupError),
}

impl From<kinesync_engine::Error> for Error {
    /// Errors that have a place of their own in a config file's terms keep it; the rest are
    /// the engine's.
    fn from(error: kinesync_engine::Error) -> Self {
        match error {
            kinesync_engine::Error::UnknownKeyColumn {
                role,
                name,
                suggestion,
            } => Error::UnknownKeyColumn {
                setting: match role {
                    kinesync_engine::KeyRole::PartitionKey => "keys.partition_key",
                    kinesync_engine::KeyRole::ExplicitHashKey => "keys.explicit_hash_key",
                },
                name,
                suggestion,
            },
            kinesync_engine::Error::Transport(e) => Error::Transport(e),
            kinesync_engine::Error::State(e) => Error::State(e),
            other => Error::Engine(other),
        }
    }
}

/// Compiles the config's payload and keys against `schema`; every problem is reported at once.
pub fn records_for(
    config: &Config,
    schema: &std::sync::Arc<kinesync_payload::Schema>,
) -> Result<RecordBuilder, Error> {
    let (spec, template) = config.payload_spec()?;
    let compile_error = |errors| Error::Compile {
        errors,
        template: template.clone(),
        config: config.path.clone(),
    };
    let mut payload =
        kinesync_payload::Payload::compile(&spec, schema.clone()).map_err(compile_error)?;
    if let Some(field) = config.record_id_field() {
        payload = payload.with_record_id_field(field).map_err(compile_error)?;
    }
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
    /// Where the run's debugger log goes: every API call the destination makes.
    pub call_log: Option<std::sync::Arc<call_log::CallLog>>,
    /// The run's id, noted in the state store's lock so that a run refused the store is told
    /// which run holds it.
    pub run_id: Option<String>,
    /// Send the removals this run finds however many they are (`--allow-removals`): the
    /// model really lost those rows.
    pub allow_removals: bool,
    /// Send every row again (`--resync`, see [`engine::EngineBuilder::resync`]).
    pub resync: bool,
    /// Row errors quote the rendered message where it stopped being JSON
    /// (`--debug-payloads`, see [`engine::EngineBuilder::message_excerpts`]).
    pub message_excerpts: bool,
    /// A handle that stops the run early and cleanly (a signal handler holds its clone).
    pub interrupt: Option<engine::Interrupt>,
    /// Counters to watch the run by.
    pub progress: Option<std::sync::Arc<engine::Progress>>,
}

/// One `kinesync sync` run from a config file: the model from `[source]` (read on a thread of
/// its own, see [`engine::Engine::run_source`]), the records from `[payload]` and `[keys]`, the stream from `[destination]`, the
/// state file, trigger and limits from `[sync]`. Gives the report and the destination (for a
/// simulated stream's shard counts).
pub async fn run_config(
    config: &Config,
    options: RunOptions,
) -> Result<(engine::RunReport, destination::Destination), Error> {
    // The state first: a run that another run holds it from stops before it reads anything.
    let (mut state, diff_against) =
        state_store(config, options.dry_run, options.run_id.as_deref())?;
    // The diff runs in the warehouse when the state is there, except on a resync (every row
    // goes again: there is nothing to leave in the warehouse); from the last complete run's
    // mark, when it left one.
    let model = match diff_against.filter(|_| !options.resync) {
        Some(state_rows) => {
            let since = engine::diff_watermark(&mut *state)?;
            model::open_diffed(config, &state_rows, since.as_deref())?
        }
        None => model::Model::Whole(model::open(config)?),
    };
    let records = records_for(config, model.schema())?;
    let observer = options
        .call_log
        .clone()
        .map(|log| log as std::sync::Arc<dyn kinesync_transport::CallObserver>);
    let destination = destination::connect_observed(config, observer).await?;
    let events = match &config.sync.events {
        Some(names) => engine::Events::from_names(names)
            .map_err(|e| config.invalid(format!("[sync] events: {e}")))?,
        None => engine::Events::all(),
    };
    let initial = match config.sync.initial {
        Some(config::InitialConfig::Skip) => engine::Initial::Skip,
        _ => engine::Initial::Backfill,
    };
    if let Some(share) = config.sync.shard_share
        && !(share > 0.0 && share <= 1.0)
    {
        return Err(config.invalid(format!(
            "[sync] shard_share must be more than 0 and at most 1 (a share of each shard's limits), not {share}"
        )));
    }
    let mut limits = config.sync.limits();
    if options.allow_removals {
        limits.max_removed_share = 1.0;
    }
    if config
        .destination()?
        .simulated
        .is_some_and(|simulated| simulated.unlimited)
    {
        // A stream without limits is sent as fast as it takes.
        limits.shard_records_per_second = f64::INFINITY;
    }
    let mut builder = engine::Engine::builder()
        .records(records)
        .sink(destination.sink.clone(), destination.stream.clone())
        .state(state)
        .events(events)
        .initial(initial)
        .limits(limits)
        .dry_run(options.dry_run)
        .resync(options.resync)
        .message_excerpts(options.message_excerpts);
    if let Some(run_id) = &options.run_id {
        builder = builder.run_id(run_id.clone());
    }
    if let Some(progress) = options.progress {
        builder = builder.progress(progress);
    }
    if let Some(interrupt) = options.interrupt {
        builder = builder.interrupt(interrupt);
    }
    match config.sync.aggregation() {
        Some(aggregation) => builder = builder.aggregate(aggregation),
        None if config.sync.aggregate_max_bytes.is_some() => {
            return Err(config.invalid(
                "[sync] aggregate_max_bytes is set but aggregate is not: add aggregate = true to pack records, or remove aggregate_max_bytes".to_owned(),
            ));
        }
        None => {}
    }
    let mut engine = builder.build().map_err(|e| match e {
        kinesync_engine::Error::Limit(limit) => config.invalid(format!("[sync] {limit}")),
        other => other.into(),
    })?;
    // Logged once everything the run needs was found valid and reachable.
    tracing::info!(
        config = %config.path.display(),
        run = options.run_id.as_deref().unwrap_or("dry run"),
        "sync starting"
    );
    let report = match model {
        model::Model::Whole(source) => engine.run_source(source).await,
        model::Model::Diffed(source) => engine.run_delta(source).await,
    };
    if let Some(log) = &options.call_log {
        log.flush();
    }
    Ok((report?, destination))
}

/// The `[sync] state` store. A dry run commits nothing, and does not create a state file
/// either: with none there yet, it diffs against an empty store. Nor does it upgrade a state
/// file an older kinesync wrote: it reads it as it is, and takes no lock (it only reads). A
/// run takes the store's lock: one sync at a time per state.
///
/// With it, for a state in the warehouse, the table a diff there joins the model with.
fn state_store(
    config: &Config,
    dry_run: bool,
    run_id: Option<&str>,
) -> Result<(Box<dyn kinesync_state::StateStore>, Option<String>), Error> {
    if let Some(schema) = &config.sync.state_schema {
        return model::warehouse_state(config, schema, dry_run);
    }
    Ok((state_file(config, dry_run, run_id)?, None))
}

/// The `[sync] state` file (see [`state_store`]).
fn state_file(
    config: &Config,
    dry_run: bool,
    run_id: Option<&str>,
) -> Result<Box<dyn kinesync_state::StateStore>, Error> {
    let path = config.state_path();
    if config
        .sync
        .state
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(config.invalid(
            "[sync] state is empty: name the state file, or leave the setting out for kinesync-state.db beside the config",
        ));
    }
    if path.is_dir() {
        return Err(config.invalid(format!(
            "[sync] state names {}, which is a directory: name a file in it (such as kinesync-state.db)",
            path.display()
        )));
    }
    if dry_run {
        if !path.exists() {
            return Ok(Box::new(kinesync_state::MemoryStore::new()));
        }
        return Ok(Box::new(kinesync_state::SqliteStore::open_without_upgrade(
            path,
        )?));
    }
    let store = kinesync_state::SqliteStore::open_for_run(path, run_id.unwrap_or_default())?;
    if let Some(killed) = store.took_over_from() {
        tracing::warn!(
            "the state store's lock was left by {killed}, which no longer runs (killed?): taken over"
        );
    }
    Ok(Box::new(store))
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
