//! Stage 6, commit: what the state store is told, and when.
//!
//! - Changes the stream **acknowledged** are committed after each call, in one transaction per
//!   call: a crash then loses no acknowledged progress, and nothing unacknowledged is ever
//!   committed.
//! - Changes the trigger does **not send** are still the model's history: the state moves on
//!   to them, so that a later change is measured against this version.
//! - A first run that read the whole model records the **baseline**: from then on, keys the
//!   model lacks are removed rows.
//!
//! A dry run commits nothing.

use kinesync_state::{Change, StateError, StateStore};

/// Commits the changes of acknowledged records.
pub(crate) fn acknowledged(
    store: &mut dyn StateStore,
    changes: Vec<Change>,
) -> Result<(), StateError> {
    if changes.is_empty() {
        return Ok(());
    }
    store.commit(changes)
}

/// Moves the state on to changes that were found but not sent (not triggered, or a first run
/// that only records the model), unless this is a dry run.
pub(crate) fn without_sending(
    store: &mut dyn StateStore,
    changes: Vec<Change>,
    dry_run: bool,
) -> Result<(), StateError> {
    if changes.is_empty() || dry_run {
        return Ok(());
    }
    store.commit(changes)
}

/// Ends a run: every acknowledged change written, then the baseline recorded when this was a
/// first run that read the whole model.
pub(crate) fn close_run(
    store: &mut dyn StateStore,
    record_baseline: bool,
) -> Result<(), StateError> {
    store.close_run()?;
    if record_baseline {
        store.set_baseline()?;
    }
    Ok(())
}
