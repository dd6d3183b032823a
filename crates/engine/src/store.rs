//! The state store as a run uses it: shared with the engine's caller, and worked on off the
//! async loop.
//!
//! Lookups and commits are blocking work (a SQLite query, a queue to the writer thread that
//! may be full). Done inline they would stop the loop, and with it the calls in flight and
//! the next calls. So each runs where tokio lets other tasks go on meanwhile (see
//! [`blocking`]), one at a time and in order (commits must reach the store in the order the
//! stream acknowledged them), while the calls, spawned as tasks of their own, go on.

use std::sync::{Arc, Mutex, PoisonError};

use kinesync_state::StateStore;

use crate::error::Error;

/// A state store shared between the engine and its caller: lock it to look inside between
/// runs (a run holds the lock only while it works with the store).
pub type SharedState = Arc<Mutex<dyn StateStore>>;

/// Runs `work` on the store, off the async loop: on a multi-threaded runtime in place, with
/// the runtime told to move this worker's other tasks (the calls) to another thread; on a
/// single-threaded one, on tokio's blocking pool. (In place, the store's allocations stay on
/// the thread that made them before; measured, handing every lookup to another thread held
/// about 40 MiB more at the peak of a million-row run.)
pub(crate) async fn blocking<T, F>(state: &SharedState, work: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn StateStore) -> Result<T, Error> + Send + 'static,
{
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(|| work(&mut *lock(state)));
    }
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
