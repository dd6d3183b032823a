//! The writer: a thread with its own connection that writes commits in the background, fed
//! through a bounded queue of jobs.
//!
//! A thread of its own so that a sync goes on building and sending records while SQLite
//! writes the last acknowledged batch; the queue is bounded ([`COMMITS_AHEAD`]) so that a
//! slow disk slows the sync down instead of piling batches up in memory. Jobs run in the
//! order queued, which is what keeps a commit from ever landing without the `meta` value set
//! before it. A failure is reported on the next commit or flush, and stops every later write.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};

use super::{COMMITS_AHEAD, checkpoint, commit};
use crate::{Change, StateError};

/// The writing side: a thread with its own connection, fed through a bounded queue.
pub(super) struct Writer {
    jobs: SyncSender<Job>,
    /// The writer's or the checkpointer's failure, reported by the next commit or flush.
    failures: Receiver<StateError>,
    thread: Option<JoinHandle<()>>,
    /// Ends once the writer's connection is closed.
    checkpointer: Option<JoinHandle<()>>,
    /// Set once the writer failed: every later write fails too.
    failed: Option<String>,
}

pub(super) enum Job {
    Commit(Vec<Change>),
    /// A row of `meta`: the store's own (`baseline`) or a caller's (prefixed, apart from
    /// the store's own), and its value.
    SetMeta(String, String),
    /// Answered once every job before it is done.
    Flush(SyncSender<()>),
    /// Every row and every meta value removed, in one transaction.
    Clear,
}

impl Writer {
    /// Starts the writer thread on `writer`, and the checkpointer beside it.
    pub(super) fn start(mut writer: Connection, path: &Path) -> Result<Self, StateError> {
        let name = path.display().to_string();
        let sql = |source| StateError::Sqlite {
            path: name.clone(),
            source,
        };
        let checkpoints = checkpoint::open(path).map_err(sql)?;
        let (jobs, queue) = sync_channel(COMMITS_AHEAD);
        let (report, failures) = sync_channel(2);
        // Asks for a checkpoint; one pending request stands for any number.
        let (ask, asked) = sync_channel::<()>(1);
        checkpoint::ask_when_due(&mut writer, ask).map_err(sql)?;
        let spawn = |role: &str, name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map_err(|e| StateError::Thread {
                    path: path.display().to_string(),
                    message: format!("cannot start the thread that {role}: {e}"),
                })
        };
        let checkpoint_path = name.clone();
        let checkpoint_report = report.clone();
        let checkpointer = spawn(
            "checkpoints it",
            "kinesync-checkpoint",
            Box::new(move || {
                checkpoint::run(&checkpoints, &checkpoint_path, &asked, &checkpoint_report)
            }),
        )?;
        let thread_path = name.clone();
        let thread = spawn(
            "writes it",
            "kinesync-state",
            Box::new(move || write_jobs(writer, &thread_path, &queue, &report)),
        )?;
        Ok(Self {
            jobs,
            failures,
            thread: Some(thread),
            checkpointer: Some(checkpointer),
            failed: None,
        })
    }

    /// Queues `job`, first reporting a failure the writer had. Waits while the queue is full.
    pub(super) fn send(&mut self, path: &str, job: Job) -> Result<(), StateError> {
        self.check(path)?;
        if self.jobs.send(job).is_err() {
            return Err(self.stopped(path));
        }
        Ok(())
    }

    /// Waits until every job queued so far is done, and reports a failure among them.
    pub(super) fn flush(&mut self, path: &str) -> Result<(), StateError> {
        let (done, answer) = sync_channel(1);
        self.send(path, Job::Flush(done))?;
        if answer.recv().is_err() {
            return Err(self.stopped(path));
        }
        self.check(path)
    }

    /// Writes every queued job, then ends both threads. Waiting for them is what lets a store
    /// opened again on the same file (the next run) see every commit.
    pub(super) fn close(mut self) {
        let threads = [self.thread.take(), self.checkpointer.take()];
        drop(self);
        // The writer first: closing its connection ends the checkpointer's requests.
        for thread in threads.into_iter().flatten() {
            thread.join().ok();
        }
    }

    /// The writer's failure, if it had one.
    fn check(&mut self, path: &str) -> Result<(), StateError> {
        if let Ok(failure) = self.failures.try_recv() {
            self.failed = Some(failure.to_string());
            return Err(failure);
        }
        match &self.failed {
            Some(message) => Err(StateError::Thread {
                path: path.to_owned(),
                message: format!("an earlier commit failed ({message}); nothing more is written"),
            }),
            None => Ok(()),
        }
    }

    /// The error for a writer thread that is gone.
    fn stopped(&mut self, path: &str) -> StateError {
        self.check(path)
            .err()
            .unwrap_or_else(|| StateError::Thread {
                path: path.to_owned(),
                message: "the thread writing it stopped".into(),
            })
    }
}

/// The writer thread: runs jobs in order until the store is dropped. After a failure it
/// reports it and writes nothing more.
fn write_jobs(
    mut conn: Connection,
    path: &str,
    queue: &Receiver<Job>,
    report: &SyncSender<StateError>,
) {
    let mut failed = false;
    for job in queue {
        let result = match job {
            Job::Flush(done) => {
                done.send(()).ok();
                continue;
            }
            _ if failed => continue,
            Job::Commit(changes) => commit::write_changes(&mut conn, path, &changes),
            Job::Clear => conn
                .execute_batch(
                    "BEGIN; DELETE FROM rows; DELETE FROM doubt; DELETE FROM meta; COMMIT;",
                )
                .map_err(|source| StateError::Sqlite {
                    path: path.to_owned(),
                    source,
                }),
            Job::SetMeta(name, value) => conn
                .execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )
                .map(drop)
                .map_err(|source| StateError::Sqlite {
                    path: path.to_owned(),
                    source,
                }),
        };
        if let Err(e) = result {
            failed = true;
            report.send(e).ok();
        }
    }
}
