//! The state store as a run uses it: shared with the engine's caller, and worked on off the
//! async loop.
//!
//! Lookups and commits are blocking work (a SQLite query, a queue to the writer thread that
//! may be full). Done inline they would stop the loop, and with it the calls in flight and
//! the next calls. So each is handed to tokio's blocking pool and awaited: one at a time and
//! in order (commits must reach the store in the order the stream acknowledged them), while
//! the calls, spawned as tasks of their own, go on.

use std::sync::{Arc, Mutex, PoisonError};

use kinesync_state::StateStore;

use crate::error::Error;

/// A state store shared between the engine and its caller: lock it to look inside between
/// runs (a run holds the lock only while it works with the store).
pub type SharedState = Arc<Mutex<dyn StateStore>>;

/// Runs `work` on the store, on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(state: &SharedState, work: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn StateStore) -> Result<T, Error> + Send + 'static,
{
    let state = state.clone();
    let joined = tokio::task::spawn_blocking(move || {
        // A panic in an earlier piece of work poisons the lock; the store's own transactions
        // keep it consistent, so the next piece of work may go on.
        let mut store = state.lock().unwrap_or_else(PoisonError::into_inner);
        work(&mut *store)
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::RuntimeStopped),
    }
}

/// Locks the store on this thread, for work too small to hand over (or a caller outside a
/// run).
pub(crate) fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, dyn StateStore + 'static> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
