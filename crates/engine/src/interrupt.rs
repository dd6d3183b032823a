//! Asking a run to stop early, and cleanly: what a scheduler's SIGTERM or a user's Ctrl-C
//! becomes.
//!
//! A run that is interrupted reads no further row, starts no new call, lets the calls in flight
//! finish, commits what they got acknowledged, and reports [`Outcome::Interrupted`]: the next
//! run sends the rest, and nothing acknowledged is sent again. (Killing the process instead
//! costs the records in flight: they are sent again by the next run.)
//!
//! [`Outcome::Interrupted`]: crate::Outcome::Interrupted

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A handle that asks a run to stop; clone it to a signal handler.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// A handle that has not asked for anything yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop at the next chunk of rows (and every later run of the engine to
    /// stop at once, until [`reset`](Self::reset)).
    pub fn interrupt(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_interrupted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Forgets the request, for the engine's next run.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
