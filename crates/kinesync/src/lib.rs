//! kinesync: stream the rows of a data model into an Amazon Kinesis data stream.
//!
//! This crate is the orchestrator. It reads the configuration ([`Config`]), opens the model
//! (`kinesync-source`), compiles the payload (`kinesync-payload`) and the key columns
//! ([`KeySpec`], `kinesync-keys`), and turns each row into the exact [`Record`] that would be
//! sent: message bytes, partition key, explicit hash key and hash key. [`preview`] shows those
//! records, as JSON lines or as snapshot text for template tests.
//!
//! [`destination`] turns `[destination]` into a connected `KinesisSink` and runs `kinesync
//! check`. The data path, in order: source → payload → keys → (batcher → sender, in the
//! engine to come) → sink. Each stage is its own crate with one job; this one wires them.

pub mod config;
pub mod destination;
pub mod preview;
mod records;
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
