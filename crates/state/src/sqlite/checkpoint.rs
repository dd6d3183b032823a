//! The checkpointer: the thread that copies the write-ahead log back into the database.
//!
//! Apart from the writer because a checkpoint takes long enough (tens of megabytes, then an
//! fsync) that a writer doing it itself would stop taking commits, and the sync would wait
//! for it. SQLite lets a passive checkpoint run beside a writer, on a connection of its own,
//! so commits go on being appended meanwhile. The writer only asks, through the hook
//! [`ask_when_due`] installs; the checkpointer does the work.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use crate::StateError;

/// Log pages (4 KiB each) after which the writer asks for a checkpoint: fewer, larger
/// checkpoints, since rows arrive in bulk.
const CHECKPOINT_PAGES: i32 = 16_384;

/// The checkpointer's connection to the file at `path`.
pub(super) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let checkpoints = Connection::open(path)?;
    // A connection finds the log only once it has read the file; until then its
    // checkpoints do nothing.
    checkpoints.query_row("SELECT COUNT(*) FROM meta", [], |_| Ok(()))?;
    Ok(checkpoints)
}

/// Makes each commit on `writer` that leaves the log at [`CHECKPOINT_PAGES`] or more ask for
/// a checkpoint on `ask`. Replaces SQLite's own checkpoint-on-commit, which would run on the
/// writer's thread.
pub(super) fn ask_when_due(writer: &mut Connection, ask: SyncSender<()>) -> rusqlite::Result<()> {
    writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages >= CHECKPOINT_PAGES {
            // A request already pending stands for this one too.
            ask.try_send(()).ok();
        }
        Ok(())
    }))
}

/// The checkpointer thread: a passive checkpoint each time the writer asks, until the writer
/// is gone. A checkpoint that fails is reported like a failed commit: the rows are safe in the
/// log, but a store that cannot write its file will not take the next commit either.
pub(super) fn run(
    conn: &Connection,
    path: &str,
    asked: &Receiver<()>,
    report: &SyncSender<StateError>,
) {
    for () in asked {
        match conn.wal_checkpoint_v2(Some(rusqlite::MAIN_DB), CheckpointMode::PASSIVE) {
            Ok(_) => {}
            // A passive checkpoint never waits: one that meets the writer mid-commit is
            // refused as busy. It is tried again at the next commit the writer asks after.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) => {}
            Err(source) => {
                report
                    .send(StateError::Sqlite {
                        path: path.to_owned(),
                        source,
                    })
                    .ok();
                return;
            }
        }
    }
    // The store is closing: what is left goes into the database and the log is emptied, so
    // that no large log outlives the run. Nobody is left to hear a failure, and none loses
    // anything: the next open reads the log. Another process reading the file makes it
    // wait, briefly: closing the store must not hang on it.
    conn.busy_timeout(std::time::Duration::from_millis(100))
        .ok();
    conn.wal_checkpoint_v2(Some(rusqlite::MAIN_DB), CheckpointMode::TRUNCATE)
        .ok();
}
