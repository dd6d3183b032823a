//! Past runs, kept on disk so that a user can see what each run did and every call it made.
//!
//! A runs directory (`[sync] runs`, by default `kinesync-runs` beside the config file) holds
//! one directory per run, named by its start time (`20261122-093355-123`, UTC, so that names
//! sort in time order):
//!
//! - `calls.jsonl`: the debugger log, one JSON line per API call (each attempt is a call of
//!   its own), as the destination observed it ([`crate::call_log`]), written as the run
//!   goes (a run killed part way still has the calls it made);
//! - `report.json`: the run report, written when the run ends. A run without one was
//!   interrupted.
//!
//! Only the newest runs are kept (`[sync] keep_runs`, 50 by default).

use std::fs;
use std::io::{BufRead, BufReader, LineWriter};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::Error;
use crate::call_log::{CallLog, LoggedCall};
use crate::engine::RunReport;

/// A run asked for by id that the history cannot give.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunLookupError {
    /// `latest` was asked for, and there are no runs yet.
    #[error("no runs in {}", dir.display())]
    NoRuns {
        /// The runs directory.
        dir: PathBuf,
    },
    /// No run's id is or starts with the id given.
    #[error("no run {id:?} in {}; `kinesync runs` lists them", dir.display())]
    NoSuchRun {
        /// The id given.
        id: String,
        /// The runs directory.
        dir: PathBuf,
    },
    /// More than one run's id starts with the id given.
    #[error("{id:?} matches {} runs ({}); give more of the id", matches.len(), matches.join(", "))]
    Ambiguous {
        /// The id given.
        id: String,
        /// The ids it matches.
        matches: Vec<String>,
    },
}

/// The directory of past runs.
#[derive(Debug, Clone)]
pub struct Runs {
    dir: PathBuf,
}

/// One run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The run's id: its start time, `YYYYMMDD-HHMMSS-mmm` (UTC).
    pub id: String,
    /// Its directory.
    pub path: PathBuf,
}

/// A past run as `kinesync runs` lists it.
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// The run.
    pub run: RunDir,
    /// Its report; `None` when the run did not finish (it was killed or crashed, or stopped
    /// on an error: see [`RunDir::error`]).
    pub report: Option<RunReport>,
}

/// Whether a directory name is a run id (`20261122-093355-123`, maybe with a `.N` suffix):
/// only those are listed, and only those are ever deleted.
fn is_run_id(name: &str) -> bool {
    let (stamp, suffix) = name.split_once('.').unwrap_or((name, "0"));
    let bytes = stamp.as_bytes();
    bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 15 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

impl Runs {
    /// The runs kept in `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the directory of a run starting now.
    pub fn start(&self) -> Result<RunDir, Error> {
        fs::create_dir_all(&self.dir).map_err(io_error("create the runs directory", &self.dir))?;
        let stamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // 2026-11-22T09:33:55.123Z → 20261122-093355-123
        let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
        let base = format!("{}-{}-{}", &digits[..8], &digits[8..14], &digits[14..17]);
        for n in 0u32.. {
            let id = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = self.dir.join(&id);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { id, path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create the run directory", &path)(e)),
            }
        }
        unreachable!("some suffix is free")
    }

    /// Every run, oldest first.
    pub fn list(&self) -> Result<Vec<RunEntry>, Error> {
        let mut runs = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(runs),
            Err(e) => return Err(io_error("read the runs directory", &self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("read the runs directory", &self.dir))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            if !is_run_id(&id) {
                continue;
            }
            let run = RunDir { id, path };
            runs.push(RunEntry {
                report: run.report(),
                run,
            });
        }
        runs.sort_by(|a, b| a.run.id.cmp(&b.run.id));
        Ok(runs)
    }

    /// The run with this id, or the only one whose id starts with it; `latest` is the newest.
    pub fn find(&self, id: &str) -> Result<RunDir, Error> {
        let runs = self.list()?;
        if id == "latest" {
            return runs.into_iter().next_back().map(|e| e.run).ok_or_else(|| {
                RunLookupError::NoRuns {
                    dir: self.dir.clone(),
                }
                .into()
            });
        }
        if let Some(exact) = runs.iter().find(|e| e.run.id == id) {
            return Ok(exact.run.clone());
        }
        let matching: Vec<&RunEntry> = runs.iter().filter(|e| e.run.id.starts_with(id)).collect();
        match matching.as_slice() {
            [one] => Ok(one.run.clone()),
            [] => Err(RunLookupError::NoSuchRun {
                id: id.to_owned(),
                dir: self.dir.clone(),
            }
            .into()),
            many => Err(RunLookupError::Ambiguous {
                id: id.to_owned(),
                matches: many.iter().map(|e| e.run.id.clone()).collect(),
            }
            .into()),
        }
    }

    /// Deletes all but the newest `keep` runs, never `current` (a clock set back could make
    /// the run that just finished look oldest).
    pub fn prune(&self, keep: usize, current: &RunDir) -> Result<(), Error> {
        let runs: Vec<RunEntry> = self
            .list()?
            .into_iter()
            .filter(|e| e.run.id != current.id)
            .collect();
        let excess = runs.len().saturating_sub(keep.saturating_sub(1));
        for entry in &runs[..excess] {
            fs::remove_dir_all(&entry.run.path)
                .map_err(io_error("delete an old run", &entry.run.path))?;
        }
        Ok(())
    }
}

impl RunDir {
    /// The debugger log's file.
    pub fn calls_path(&self) -> PathBuf {
        self.path.join("calls.jsonl")
    }

    /// The report's file.
    pub fn report_path(&self) -> PathBuf {
        self.path.join("report.json")
    }

    /// The file that says why a run stopped without a report.
    pub fn error_path(&self) -> PathBuf {
        self.path.join("error.txt")
    }

    /// Notes why the run stopped before it could report (a bad template found late, the state
    /// store failing).
    pub fn write_error(&self, error: &Error) -> Result<(), Error> {
        let path = self.error_path();
        fs::write(&path, format!("{error}\n")).map_err(io_error("write the run's error", &path))
    }

    /// Why the run stopped without a report, if it said.
    pub fn error(&self) -> Option<String> {
        fs::read_to_string(self.error_path()).ok()
    }

    /// API calls in the debugger log, counted by line without parsing them.
    pub fn call_count(&self) -> usize {
        fs::read(self.calls_path()).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
    }

    /// A debugger log writing to this run's `calls.jsonl`, a line at a time (so that a run
    /// killed part way keeps every call it finished).
    pub fn call_log(&self, payloads: bool) -> Result<CallLog, Error> {
        let path = self.calls_path();
        let file = fs::File::create(&path).map_err(io_error("create the debugger log", &path))?;
        Ok(CallLog::to_writer(LineWriter::new(file)).with_payloads(payloads))
    }

    /// Stores the report.
    pub fn write_report(&self, report: &RunReport) -> Result<(), Error> {
        let path = self.report_path();
        let json = serde_json::to_string_pretty(report).expect("reports serialize");
        fs::write(&path, json).map_err(io_error("write the run report", &path))
    }

    /// The report, if the run finished (and the file reads).
    pub fn report(&self) -> Option<RunReport> {
        let text = fs::read_to_string(self.report_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The debugger log's lines, parsed (a torn last line, from a kill mid-write, is skipped).
    pub fn calls(&self) -> Result<Vec<LoggedCall>, Error> {
        let path = self.calls_path();
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read the debugger log", &path)(e)),
        };
        let mut calls = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io_error("read the debugger log", &path))?;
            if let Ok(call) = serde_json::from_str(&line) {
                calls.push(call);
            }
        }
        Ok(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_sort_by_time_find_by_prefix_and_prune_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::new(dir.path().join("runs"));
        assert!(
            runs.list().unwrap().is_empty(),
            "a missing directory has no runs"
        );
        let ids: Vec<String> = (0..3).map(|_| runs.start().unwrap().id).collect();
        assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
        let listed: Vec<String> = runs.list().unwrap().into_iter().map(|e| e.run.id).collect();
        assert_eq!(listed, ids);
        assert_eq!(runs.find("latest").unwrap().id, ids[2]);
        assert_eq!(runs.find(&ids[1]).unwrap().id, ids[1]);
        let err = runs.find("1999").unwrap_err().to_string();
        assert!(err.contains("kinesync runs"), "{err}");
        // Only run directories are listed, or ever deleted.
        fs::create_dir(dir.path().join("runs/keep-me")).unwrap();
        fs::create_dir(dir.path().join("runs/2026")).unwrap();
        let current = runs.find(&ids[0]).unwrap();
        runs.prune(2, &current).unwrap();
        let listed: Vec<String> = runs.list().unwrap().into_iter().map(|e| e.run.id).collect();
        assert_eq!(
            listed,
            [ids[0].clone(), ids[2].clone()],
            "the current run stays, whatever its name says"
        );
        assert!(dir.path().join("runs/keep-me").exists() && dir.path().join("runs/2026").exists());
    }

    #[test]
    fn run_ids_are_recognised_exactly() {
        for id in [
            "20261122-093355-123",
            "20261122-093355-123.1",
            "20261122-093355-123.12",
        ] {
            assert!(is_run_id(id), "{id}");
        }
        for name in [
            "",
            "keep-me",
            "20261122-093355",
            "20261122-093355-12x",
            "20261122-093355-123.",
            "x20261122-093355-123",
        ] {
            assert!(!is_run_id(name), "{name}");
        }
    }
}
