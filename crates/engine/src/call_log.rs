//! The debugger log: one JSON line per API call attempt of a run.
//!
//! Each line has the time, operation, stream, attempt, records, bytes, status, duration,
//! per-record error codes counted, and for a failed call its kind, code, request id and
//! message. Secrets never appear (no sink hands them out); payload bytes only when the caller
//! asks for them.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use kinesync_transport::{StreamName, TransportError};
use serde::Serialize;

/// One call attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CallLine {
    time: String,
    operation: &'static str,
    stream: String,
    attempt: u32,
    records: usize,
    bytes: usize,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    duration_ms: f64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) record_errors: BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// The messages sent, only when the log was asked for payloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payloads: Option<Vec<String>>,
}

impl CallLine {
    pub(crate) fn put_records(
        stream: &StreamName,
        started: SystemTime,
        duration: Duration,
        attempt: u32,
        records: usize,
        bytes: usize,
    ) -> Self {
        Self {
            time: humantime::format_rfc3339_millis(started).to_string(),
            operation: "PutRecords",
            stream: stream.as_str().to_owned(),
            attempt,
            records,
            bytes,
            status: "ok".into(),
            code: None,
            duration_ms: (duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            record_errors: BTreeMap::new(),
            request_id: None,
            message: None,
            payloads: None,
        }
    }

    pub(crate) fn failed(&mut self, error: &TransportError) {
        self.status = error.kind().name().to_owned();
        self.code = error.code().map(str::to_owned);
        self.request_id = error.request_id().map(str::to_owned);
        self.message = Some(error.message().to_owned());
    }
}

/// Where a run's call lines go.
pub struct DebugLog {
    out: Option<Box<dyn Write + Send>>,
    failed: bool,
    payloads: bool,
}

impl std::fmt::Debug for DebugLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugLog")
            .field("enabled", &self.out.is_some())
            .finish()
    }
}

impl DebugLog {
    /// No log.
    pub fn disabled() -> Self {
        Self {
            out: None,
            failed: false,
            payloads: false,
        }
    }

    /// Lines to `out`.
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Some(Box::new(out)),
            failed: false,
            payloads: false,
        }
    }

    /// Also writes each call's messages (off by default: messages are the customers' data).
    pub fn with_payloads(mut self, on: bool) -> Self {
        self.payloads = on;
        self
    }

    /// Whether lines should carry the messages sent.
    pub(crate) fn wants_payloads(&self) -> bool {
        self.payloads && self.out.is_some()
    }

    pub(crate) fn write(&mut self, line: &CallLine) {
        let Some(out) = self.out.as_mut() else { return };
        if self.failed {
            return;
        }
        let written = serde_json::to_writer(&mut *out, line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if written.is_err() {
            // A debugger log that cannot be written must not stop a sync; stop writing it.
            self.failed = true;
        }
    }

    pub(crate) fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            self.failed |= out.flush().is_err();
        }
    }
}
