//! The debugger log: one JSON line per API call a run makes, as the sink observed it.
//!
//! The sink is the one place that sees every call (`DescribeStreamSummary`, `ListShards`,
//! `PutRecords`, and STS's `AssumeRole` when a role is assumed), so the log is a
//! [`CallObserver`] the destination is connected with, not something the engine writes. Each
//! line is a [`LoggedCall`]; `kinesync runs show` reads the lines back as that same type.
//! Secrets never appear (no sink hands them out); messages only when the caller asks.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

use kinesync_transport::{CallObserver, CallRecord, PutRecord};
use serde::{Deserialize, Serialize};

/// One API call, as a line of the debugger log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedCall {
    /// When it started (RFC 3339, UTC).
    pub time: String,
    /// The API operation (`PutRecords`, `DescribeStreamSummary`, ...).
    pub operation: String,
    /// The stream, when the call named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Records sent (`PutRecords`).
    #[serde(default)]
    pub records: usize,
    /// Bytes of data and partition keys sent (`PutRecords`).
    #[serde(default)]
    pub bytes: usize,
    /// `ok`, or the kind of failure (`throttled`, `stream_not_found`, ...).
    pub status: String,
    /// The service's error code, for a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The HTTP status of the answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// How long the call took, in milliseconds.
    pub duration_ms: f64,
    /// Per-record error codes of a `PutRecords` answer, counted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub record_errors: BTreeMap<String, usize>,
    /// The service's request id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What went wrong, for a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The messages sent, only when the log was asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payloads: Option<Vec<String>>,
}

impl LoggedCall {
    /// The line for an observed call; `records` are its messages, kept only when `payloads`.
    pub fn new(call: &CallRecord, records: &[PutRecord], payloads: bool) -> Self {
        let failure = call.error.as_ref();
        Self {
            time: humantime::format_rfc3339_millis(call.started).to_string(),
            operation: call.operation.as_str().to_owned(),
            stream: call.stream.clone(),
            records: call.records,
            bytes: call.bytes,
            status: failure.map_or_else(|| "ok".to_owned(), |f| f.kind.name().to_owned()),
            code: failure.and_then(|f| f.code.clone()),
            http_status: call.http_status,
            duration_ms: (call.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            record_errors: call.record_errors.clone(),
            request_id: call.request_id.clone(),
            message: failure.map(|f| f.message.clone()),
            payloads: (payloads && !records.is_empty()).then(|| {
                records
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.data).into_owned())
                    .collect()
            }),
        }
    }
}

/// Where a run's calls go: a [`CallObserver`] writing a [`LoggedCall`] line per call.
pub struct CallLog {
    out: Mutex<Output>,
    payloads: bool,
}

struct Output {
    writer: Box<dyn Write + Send>,
    /// A write failed: the log stops, the sync goes on.
    failed: bool,
}

impl std::fmt::Debug for CallLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallLog")
            .field("payloads", &self.payloads)
            .finish_non_exhaustive()
    }
}

impl CallLog {
    /// Lines to `out`.
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Mutex::new(Output {
                writer: Box::new(out),
                failed: false,
            }),
            payloads: false,
        }
    }

    /// Also writes each call's messages (off by default: messages are the customers' data).
    pub fn with_payloads(mut self, on: bool) -> Self {
        self.payloads = on;
        self
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.failed |= out.writer.flush().is_err();
    }
}

impl CallObserver for CallLog {
    fn on_call(&self, call: &CallRecord, records: &[PutRecord]) {
        let line = LoggedCall::new(call, records, self.payloads);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if out.failed {
            return;
        }
        let written = serde_json::to_writer(&mut out.writer, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.writer.write_all(b"\n"));
        if written.is_err() {
            // A debugger log that cannot be written must not stop a sync; stop writing it.
            out.failed = true;
        }
    }
}
