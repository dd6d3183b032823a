//! The mark a diff in the warehouse leaves for the next one ([`DeltaSource::watermark`]):
//! kept in the state only by a run that completed, and forgotten as soon as any other run
//! starts, so that a mark found in the state always describes it as the last run left it.
//!
//! [`DeltaSource::watermark`]: kinesync_source::DeltaSource::watermark

use kinesync_state::{StateError, StateStore};

use crate::report::{Outcome, RunReport};

/// Where the mark is kept in the state.
const META: &str = "diff_watermark";

/// The mark the last run left in `state`, to open the next diff with (for a Postgres table:
/// `PostgresDelta::open_since`). `None` when the last run did not complete, or read its model
/// otherwise.
pub fn diff_watermark(state: &mut dyn StateStore) -> Result<Option<String>, StateError> {
    Ok(state.meta(META)?.filter(|mark| !mark.is_empty()))
}

/// Forgets the mark, before a run changes anything: written (and so durable) before the run's
/// first commit.
pub(crate) fn forget(state: &mut dyn StateStore) -> Result<(), StateError> {
    if diff_watermark(state)?.is_some() {
        state.set_meta(META, "")?;
    }
    Ok(())
}

/// Whether a run that ended with `report` leaves the state holding exactly the model it
/// diffed: every row sent and acknowledged, or moved on unsent as the trigger says; no row in
/// error or unreadable, nothing pending, no removal held back.
pub(crate) fn earned(report: &RunReport) -> bool {
    matches!(report.outcome, Outcome::Complete | Outcome::Baseline)
        && report.records.pending == 0
        && report.row_errors.total == 0
        && report.unreadable_rows == 0
}

/// Keeps `mark` for the next run (after every commit of this one).
pub(crate) fn keep(state: &mut dyn StateStore, mark: &str) -> Result<(), StateError> {
    state.set_meta(META, mark)
}
