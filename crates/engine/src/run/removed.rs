//! Stage 3 of a run, removed rows: the keys the state has and the model lacks (found by the
//! walk over the state, or listed by a model diffed where it lives), held back past the
//! removal share, else sent page by page, each built from its last sent row.

use kinesync_payload::Event;
use kinesync_state::{Change, Unanswered};

use super::Run;
use crate::build::{BuildPool, ToBuild};
use crate::diff::{Gone, report_unreadable};
use crate::error::Error;
use crate::record_id;
use crate::report::Outcome;
use crate::store::blocking;

impl Run<'_> {
    /// Finds the keys the state has and the model does not, and sends their removals, page
    /// by page, built from their last sent rows.
    /// With `unsent`, the state's rows were recorded as a baseline and never sent (a first
    /// run with `initial = "skip"` that was stopped part way): they leave the state unsent.
    pub(super) async fn removed(
        &mut self,
        gone: Gone,
        pool: &mut BuildPool,
        unsent: bool,
    ) -> Result<(), Error> {
        let page_size = self.settings.limits.chunk_rows;
        if !unsent {
            // Decided before any is sent: past the share, none is. Every key the state had is
            // in the model or gone, so no pass over the keys is needed to count the gone ones.
            let removals = match &gone {
                Gone::Walk(_) => self.state_rows.saturating_sub(self.state_rows_in_model),
                Gone::Listed(listed) => listed.count,
            };
            let share = self.settings.limits.max_removed_share;
            let allowed = (share * self.state_rows as f64).floor() as u64;
            if removals > allowed && share < 1.0 {
                self.removals_held = Some(Outcome::RemovalsHeld {
                    removals,
                    state_rows: self.state_rows,
                    allowed,
                });
                return Ok(());
            }
        }
        let mut walk;
        let mut listed;
        let gone: Box<dyn Iterator<Item = Result<String, Error>> + Send + '_> = match gone {
            Gone::Walk(keys) => {
                walk = blocking(&self.state, move |s| keys.removal_walk(s, page_size)).await?;
                Box::new(walk.gone()?)
            }
            Gone::Listed(keys) => {
                listed = keys;
                listed.keys()?
            }
        };
        let mut page = Vec::with_capacity(page_size);
        for key in gone {
            page.push(key?);
            if page.len() == page_size {
                let full = std::mem::replace(&mut page, Vec::with_capacity(page_size));
                let to_build = self.removals(full, unsent).await?;
                self.build_and_send(pool, to_build).await?;
                if self.outbox.stopped().is_some() {
                    return Ok(());
                }
            }
        }
        if !page.is_empty() {
            let to_build = self.removals(page, unsent).await?;
            self.build_and_send(pool, to_build).await?;
        }
        Ok(())
    }

    /// The removed rows of `gone` keys to build, or (when the trigger leaves removals out)
    /// the state moved on without sending.
    async fn removals(&mut self, gone: Vec<String>, unsent: bool) -> Result<Vec<ToBuild>, Error> {
        let settings = self.settings;
        let deletes =
            |gone: Vec<String>| gone.into_iter().map(|key| Change::Delete { key }).collect();
        if unsent {
            self.commit_unsent(deletes(gone)).await?;
            return Ok(Vec::new());
        }
        self.report.events.removed += gone.len() as u64;
        if !settings.events.removed {
            self.report.events.not_triggered += gone.len() as u64;
            self.commit_unsent(deletes(gone)).await?;
            return Ok(Vec::new());
        }
        let (gone, stored) = blocking(&self.state, move |s| {
            let stored = s.seen_with_rows(&gone)?;
            Ok((gone, stored))
        })
        .await?;
        let mut to_build = Vec::with_capacity(gone.len());
        for (key, stored) in gone.into_iter().zip(stored) {
            let seen = stored.as_ref().map(|(seen, _)| *seen);
            match stored.and_then(|(_, row)| self.diff.codec.decode(settings.schema(), &row)) {
                Some(row) => to_build.push(ToBuild {
                    row,
                    event: Event::Removed,
                    previous: None,
                    change: Change::Delete { key },
                    // A removal in doubt goes out again with its id; the version it carries is
                    // the stored one either way.
                    record_id: record_id::id_for(seen, Unanswered::Removed, true),
                }),
                None => report_unreadable(&mut self.report, key),
            }
        }
        Ok(to_build)
    }
}
