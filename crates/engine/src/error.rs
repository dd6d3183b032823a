//! What can stop a run (as opposed to a row error, which a run reports and goes on from).

use std::path::PathBuf;

use crate::settings::{EventsError, LimitError};

/// What stops the engine from starting or finishing a run. Row errors are not here: a row
/// that cannot become a record is reported in [`crate::RunReport::row_errors`] and the run goes
/// on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`crate::EngineBuilder::build`] was called without a part the engine cannot run
    /// without.
    #[error("the engine needs {part}: call EngineBuilder::{method} before build()")]
    MissingPart {
        /// What is missing, in words.
        part: &'static str,
        /// The builder method that supplies it.
        method: &'static str,
    },
    /// A limit is out of its range.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The events to send are not usable.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// A key column is not in the model.
    #[error("the {role} column {name:?} is not in the model{}", suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    UnknownKeyColumn {
        /// Which key the column was to give.
        role: KeyRole,
        /// The column named.
        name: String,
        /// The closest existing column.
        suggestion: Option<String>,
    },
    /// A call to the stream failed in a way retrying cannot mend (or the calls a run starts
    /// with failed).
    #[error(transparent)]
    Transport(#[from] kinesync_transport::TransportError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] kinesync_state::StateError),
    /// The run's primary keys could not be spilled to (or read back from) a temporary file.
    #[error("cannot spill the run's primary keys to a temporary file in {}: {source}", dir.display())]
    Spill {
        /// The temporary directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The operating system would not start a thread the run needs.
    #[error("cannot start the thread that {job}: {source}")]
    Thread {
        /// What the thread was for.
        job: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The engine runs on tokio, and was not called from within a tokio runtime (with its
    /// time driver: `Builder::enable_all()` or `enable_time()`).
    #[error(
        "kinesync's engine needs a tokio runtime with time enabled: call it from within one (#[tokio::main], or Runtime::block_on)"
    )]
    NoRuntime,
    /// The tokio runtime the engine was called from has no timers (the engine waits on them
    /// between retries and to pace each shard).
    #[error(
        "kinesync's engine needs tokio's timers, and this runtime has none: build it with enable_all() or enable_time() (#[tokio::main] and #[tokio::test] enable them)"
    )]
    NoTimers,
    /// The tokio runtime shut down while the run was using it.
    #[error("the tokio runtime shut down while the run was working")]
    RuntimeStopped,
    /// A thread building records ended without handing its work back: a bug.
    #[error("a thread building records stopped unexpectedly (a bug: please report it)")]
    BuildThreadStopped,
    /// The primary key column is not the one the state's rows are keyed by: every row would
    /// look removed and added again.
    #[error(
        "the primary key is {now:?}, but the state's rows are keyed by {was:?} (the primary key of the runs before): every row would look removed and added again, so nothing was sent. Set the primary key back to {was:?}, or start over with an empty state (`kinesync reset`), after which every row is sent as added"
    )]
    PrimaryKeyChanged {
        /// The primary key column of the state's rows.
        was: String,
        /// The primary key column now.
        now: String,
    },
    /// The state store's list of stored column layouts is not what kinesync wrote.
    #[error(
        "the state store's column lists ({name:?}) cannot be read ({reason}); the store was changed by something other than kinesync: start over with a new state (everything is then sent again)"
    )]
    ColumnLists {
        /// The meta value's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// [`crate::Engine::run_delta`] on an engine built to resync: a resync sends every row,
    /// and a model diffed where it lives leaves the unchanged ones out.
    #[error(
        "a resync sends every row of the model, and a model diffed where it lives gives only the changed ones: run the resync with Engine::run_source over the whole model"
    )]
    ResyncNeedsWholeModel,
}

/// Which of a record's keys a column gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// The partition key.
    PartitionKey,
    /// The explicit hash key.
    ExplicitHashKey,
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRole::PartitionKey => "partition key",
            KeyRole::ExplicitHashKey => "explicit hash key",
        })
    }
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn spill_error(source: std::io::Error) -> Error {
    Error::Spill {
        dir: std::env::temp_dir(),
        source,
    }
}
