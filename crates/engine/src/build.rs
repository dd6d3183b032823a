//! Stage 3, build: records rendered on threads of their own.
//!
//! Rendering a message is most of a sync's work per row. Done on the sync's own thread, it
//! would leave that thread the slowest stage of the pipeline, while it also diffs chunks,
//! sends calls and completes them. So the sync hands each chunk's rows to a few builder
//! threads and goes on with its other work; it takes the built chunks back in the order it
//! handed them over, so records are queued, and sent, in model order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use kinesync_payload::{Event, RecordInfo, RenderError, RenderErrorKind, RenderInput, Row};
use kinesync_state::Change;

use crate::error::Error;
use crate::record::{Record, RecordBuilder, RowError};
use crate::record_id::format_id;

/// A row to build a record for, with what the state store is told once it is acknowledged.
/// Removed rows come this way too, built from their last sent version.
#[derive(Debug)]
pub(crate) struct ToBuild {
    pub(crate) row: Row,
    pub(crate) event: Event,
    /// The last version sent, for a changed row.
    pub(crate) previous: Option<Row>,
    pub(crate) change: Change,
    /// The id of the record (see [`crate::record_id`]).
    pub(crate) record_id: u128,
}

/// One row's record (or why it has none), with its event and the change to commit once the
/// record is acknowledged.
#[derive(Debug)]
pub(crate) struct BuiltRow {
    pub(crate) change: Change,
    pub(crate) event: Event,
    pub(crate) record_id: u128,
    pub(crate) record: Result<Record, RowError>,
}

/// A chunk's records, in the chunk's order. The rows themselves are dropped on the building
/// thread once rendered.
pub(crate) type Built = Vec<BuiltRow>;

struct Job {
    rows: Vec<ToBuild>,
    done: SyncSender<Built>,
}

/// The builder threads, and the chunks handed to them, oldest first.
pub(crate) struct BuildPool {
    jobs: Option<SyncSender<Job>>,
    /// Set when the sync no longer wants what is being built (it ended early, or its future
    /// was dropped): the threads stop at the next row instead of finishing their chunks.
    abandoned: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    building: VecDeque<Receiver<Built>>,
}

impl BuildPool {
    /// `threads` builder threads (at least one), building the records of run `run_id`, each
    /// message at most `max_message_bytes` (a template stops rendering past it).
    pub(crate) fn start(
        records: Arc<RecordBuilder>,
        threads: usize,
        run_id: Arc<str>,
        max_message_bytes: usize,
    ) -> Result<Self, Error> {
        let threads = threads.max(1);
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let abandoned = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|i| {
                let queue = queue.clone();
                let records = records.clone();
                let abandoned = abandoned.clone();
                let run_id = run_id.clone();
                std::thread::Builder::new()
                    .name(format!("kinesync-build-{i}"))
                    .spawn(move || {
                        build_jobs(&records, &run_id, max_message_bytes, &queue, &abandoned);
                    })
                    .map_err(|source| Error::Thread {
                        job: "builds records",
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            jobs: Some(jobs),
            abandoned,
            threads: workers,
            building: VecDeque::new(),
        })
    }

    /// Chunks handed over and not yet taken back.
    pub(crate) fn in_progress(&self) -> usize {
        self.building.len()
    }

    /// Hands a chunk's rows over; waits only while every thread is busy and as many chunks
    /// as there are threads already wait for one.
    pub(crate) fn submit(&mut self, rows: Vec<ToBuild>) -> Result<(), Error> {
        let (done, built) = sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Job { rows, done }).map_err(|_| stopped())?;
        self.building.push_back(built);
        Ok(())
    }

    /// The oldest chunk, if it is built.
    pub(crate) fn try_next(&mut self) -> Result<Option<Built>, Error> {
        let Some(oldest) = self.building.front() else {
            return Ok(None);
        };
        let built = match oldest.try_recv() {
            Ok(built) => built,
            Err(TryRecvError::Empty) => return Ok(None),
            Err(TryRecvError::Disconnected) => return Err(stopped()),
        };
        self.building.pop_front();
        Ok(Some(built))
    }

    /// The oldest chunk, once it is built; `None` when no chunk is being built. The wait is
    /// on tokio's blocking pool, so that calls in flight go on meanwhile.
    pub(crate) async fn next(&mut self) -> Result<Option<Built>, Error> {
        let Some(oldest) = self.building.pop_front() else {
            return Ok(None);
        };
        match tokio::task::spawn_blocking(move || oldest.recv()).await {
            Ok(Ok(built)) => Ok(Some(built)),
            Ok(Err(_)) => Err(stopped()),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::RuntimeStopped),
        }
    }
}

impl Drop for BuildPool {
    fn drop(&mut self) {
        // Closing the queue ends the threads; what they hold is abandoned at the next row.
        self.abandoned.store(true, Ordering::Relaxed);
        self.jobs = None;
        self.building.clear();
        for thread in self.threads.drain(..) {
            thread.join().ok();
        }
    }
}

fn stopped() -> Error {
    Error::BuildThreadStopped
}

/// Builds one row's record; a panic while building (a bug in kinesync or a library under it,
/// met by some value) is that row's error, and the thread goes on with the next row.
fn build_caught(records: &RecordBuilder, input: RenderInput<'_>) -> Result<Record, RowError> {
    let primary_key = || {
        input
            .row
            .get(records.payload().schema().primary_key_index())
            .to_json_string()
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| records.build(input))).unwrap_or_else(
        |panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            Err(RowError::Render(RenderError {
                primary_key: primary_key(),
                kind: RenderErrorKind::Template {
                    message: format!(
                        "building this row's record stopped on a bug ({what}); the run went on without it: please report it"
                    ),
                    location: None,
                },
            }))
        },
    )
}

/// A builder thread: takes chunks until the queue closes or the sync abandons them.
fn build_jobs(
    records: &RecordBuilder,
    run_id: &str,
    max_message_bytes: usize,
    queue: &Mutex<std::sync::mpsc::Receiver<Job>>,
    abandoned: &AtomicBool,
) {
    // The record's id, run and time are written out only for messages that show them.
    let wants_record = records.payload().wants_record();
    loop {
        // The lock is held only to take a job, never while building.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(Job { rows, done }) = job else { return };
        let mut built = Vec::with_capacity(rows.len());
        let sent_at = if wants_record {
            humantime::format_rfc3339_millis(SystemTime::now()).to_string()
        } else {
            String::new()
        };
        for row in rows {
            if abandoned.load(Ordering::Relaxed) {
                return;
            }
            let input = RenderInput::new(&row.row, row.event).with_max_bytes(max_message_bytes);
            let input = match &row.previous {
                Some(previous) => input.with_previous(previous),
                None => input,
            };
            let id = if wants_record {
                format_id(row.record_id)
            } else {
                String::new()
            };
            let input = if wants_record {
                input.with_record(RecordInfo {
                    id: &id,
                    run_id,
                    sent_at: &sent_at,
                })
            } else {
                input
            };
            let record = build_caught(records, input);
            built.push(BuiltRow {
                change: row.change,
                event: row.event,
                record_id: row.record_id,
                record,
            });
        }
        // The sync may have stopped and no longer want it.
        done.send(built).ok();
    }
}
