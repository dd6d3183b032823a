//! Seeing every call a sink makes: the ground truth for kinesync's debugger log.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::Operation;

/// One API call as it happened: no secrets, no payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// When the call started.
    pub started: SystemTime,
    /// The operation.
    pub operation: Operation,
    /// The stream, when the call named one.
    pub stream: Option<String>,
    /// Records sent (`PutRecords`), else 0.
    pub records: usize,
    /// Bytes of data and partition keys sent (`PutRecords`), else 0.
    pub bytes: usize,
    /// The HTTP status of the answer, when there was one.
    pub http_status: Option<u16>,
    /// How long the call took.
    pub duration: Duration,
    /// Per-record error codes in a successful `PutRecords`, counted.
    pub record_errors: BTreeMap<String, usize>,
    /// The call's error kind and code, when it failed as a whole.
    pub error: Option<String>,
    /// The service's request id, when known.
    pub request_id: Option<String>,
}

/// Receives a [`CallRecord`] for every call (every attempt: sinks make one attempt per call).
pub trait CallObserver: Send + Sync + fmt::Debug {
    /// Called once a call has its answer (or failed).
    fn on_call(&self, call: &CallRecord);
}
