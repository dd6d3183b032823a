//! One sync at a time per state store: an exclusive lock on a file beside it.
//!
//! Two runs on one state would each send every change, and each commit what the other already
//! sent: overlapping runs from a scheduler double every row. So a store opened for writing
//! takes an exclusive advisory lock (`flock` on Unix, `LockFileEx` on Windows) on
//! `STATE.lock`, and a second run is refused at once, told which run holds it. The operating
//! system releases the lock when its process ends, however it ends, so a lock left by a run
//! that was killed is simply taken over; the holder's note it left behind says so.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::StateError;

/// Who holds (or held) a state store's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// When it took the lock.
    pub since: SystemTime,
    /// What the holder said of itself (kinesync: the run's id).
    pub run: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = humantime::format_rfc3339_seconds(self.since);
        match self.run.as_str() {
            "" => write!(f, "process {} since {since}", self.pid),
            run => write!(f, "run {run} (process {}) since {since}", self.pid),
        }
    }
}

impl LockHolder {
    /// This process, now.
    fn this_process(run: &str) -> Self {
        Self {
            pid: std::process::id(),
            since: SystemTime::now(),
            run: run.to_owned(),
        }
    }

    /// The lock file's text: three lines, `pid`, `since` (Unix seconds), `run`.
    fn to_text(&self) -> String {
        let since = self
            .since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        format!("pid {}\nsince {since}\nrun {}\n", self.pid, self.run)
    }

    /// A holder from the lock file's text; `None` for an empty file (released cleanly) or
    /// text this module did not write.
    fn from_text(text: &str) -> Option<Self> {
        let mut pid = None;
        let mut since = None;
        let mut run = String::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", value)) => pid = value.parse().ok(),
                Some(("since", value)) => since = value.parse::<u64>().ok(),
                Some(("run", value)) => run = value.to_owned(),
                _ => {}
            }
        }
        Some(Self {
            pid: pid?,
            since: UNIX_EPOCH + Duration::from_secs(since?),
            run,
        })
    }
}

/// A held lock; released (and its note cleared) when dropped.
#[derive(Debug)]
pub(crate) struct StateLock {
    file: File,
    /// A holder whose note was left behind without the lock: a run that was killed. This
    /// lock took over from it.
    taken_over: Option<LockHolder>,
}

/// The lock file of the store at `store`: `STATE.lock` beside it.
pub(crate) fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StateLock {
    /// Takes the lock of the store at `store` for `run`, or says who holds it.
    pub(crate) fn acquire(store: &Path, run: &str) -> Result<Self, StateError> {
        let path = lock_path(store);
        let io = |source: std::io::Error| StateError::Lock {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: store.display().to_string(),
                    holder: read_holder(&mut file),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let taken_over = read_holder(&mut file);
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(LockHolder::this_process(run).to_text().as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io)?;
        Ok(Self { file, taken_over })
    }

    /// The killed run this lock took over from, if any.
    pub(crate) fn taken_over(&self) -> Option<&LockHolder> {
        self.taken_over.as_ref()
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // An empty file says the last holder let go; the lock itself goes with the file.
        self.file.set_len(0).ok();
        self.file.unlock().ok();
    }
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    LockHolder::from_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("state.db");
        let first = StateLock::acquire(&store, "20261130-120000-000").unwrap();
        assert!(first.taken_over().is_none());
        match StateLock::acquire(&store, "second") {
            Err(StateError::Locked {
                holder: Some(holder),
                ..
            }) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.run, "20261130-120000-000");
            }
            other => panic!("expected Locked with its holder, got {other:?}"),
        }
        drop(first);
        let again = StateLock::acquire(&store, "third").unwrap();
        assert!(
            again.taken_over().is_none(),
            "a clean release leaves no note"
        );
    }

    #[test]
    fn a_note_left_without_its_lock_is_a_killed_run_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("state.db");
        // What a killed run leaves: its note, and no lock (the OS released it).
        std::fs::write(
            lock_path(&store),
            "pid 4242\nsince 1700000000\nrun killed\n",
        )
        .unwrap();
        let lock = StateLock::acquire(&store, "next").unwrap();
        let killed = lock.taken_over().expect("the killed run's note");
        assert_eq!((killed.pid, killed.run.as_str()), (4242, "killed"));
    }
}
