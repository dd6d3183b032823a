//! Seeing every call a sink makes: the ground truth for kinesync's debugger log.
//!
//! [`AwsKinesisSink`](crate::AwsKinesisSink) reports each API call it makes to its observer
//! itself (it alone sees the HTTP status, the request id, and each call a trait method makes:
//! `describe_stream` is `DescribeStreamSummary` then `ListShards`). [`ObservedSink`] reports
//! the calls of any other sink (the in-memory stream, the decorators) from outside, one record
//! per trait call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
// tokio's clock: the one paused test time moves.
use tokio::time::Instant;

use crate::{
    ErrorKind, KinesisSink, Operation, PutRecord, RecordOutcome, StreamDescription, StreamName,
    TransportError,
};

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
    /// How the call failed, when it failed as a whole.
    pub error: Option<CallFailure>,
    /// The service's request id, when known.
    pub request_id: Option<String>,
}

impl CallRecord {
    /// A call of `operation` on `stream` that started at `started`, before its answer is known.
    pub fn new(operation: Operation, stream: Option<&StreamName>, started: SystemTime) -> Self {
        Self {
            started,
            operation,
            stream: stream.map(|s| s.as_str().to_owned()),
            records: 0,
            bytes: 0,
            http_status: None,
            duration: Duration::ZERO,
            record_errors: BTreeMap::new(),
            error: None,
            request_id: None,
        }
    }

    /// The records a `PutRecords` call carries: how many, and their bytes.
    pub fn carrying(mut self, records: &[PutRecord]) -> Self {
        self.records = records.len();
        self.bytes = records.iter().map(PutRecord::size).sum();
        self
    }

    /// Counts a successful `PutRecords` answer's per-record failures by code.
    pub fn count_record_errors(&mut self, outcomes: &[RecordOutcome]) {
        for outcome in outcomes {
            if let RecordOutcome::Failed { failure, .. } = outcome {
                *self
                    .record_errors
                    .entry(failure.code().to_owned())
                    .or_default() += 1;
            }
        }
    }

    /// Notes a whole-call failure: its kind, code and message, and the request id when known.
    pub fn failed(&mut self, error: &TransportError) {
        self.error = Some(CallFailure {
            kind: error.kind(),
            code: error.code().map(str::to_owned),
            message: error.message().to_owned(),
        });
        if self.request_id.is_none() {
            self.request_id = error.request_id().map(str::to_owned);
        }
    }
}

/// How a call failed as a whole (secrets never appear: the message is the
/// [`TransportError`]'s, which never carries them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The service's error code, when it gave one.
    pub code: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// Receives a [`CallRecord`] for every call (every attempt: sinks make one attempt per call).
pub trait CallObserver: Send + Sync + fmt::Debug {
    /// Called once a call has its answer (or failed). `records` are the records a
    /// `PutRecords` call sent (empty for other calls), for an observer that was asked to keep
    /// messages; most ignore them.
    fn on_call(&self, call: &CallRecord, records: &[PutRecord]);
}

/// Any sink, with every call it is given reported to an observer: for sinks that do not report
/// their own calls.
#[derive(Debug)]
pub struct ObservedSink<S> {
    inner: S,
    observer: Arc<dyn CallObserver>,
}

impl<S: KinesisSink> ObservedSink<S> {
    /// `inner`'s calls, reported to `observer`.
    pub fn new(inner: S, observer: Arc<dyn CallObserver>) -> Self {
        Self { inner, observer }
    }

    /// The sink inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn report<T>(
        &self,
        mut call: CallRecord,
        clock: Instant,
        result: &Result<T, TransportError>,
        records: &[PutRecord],
        outcomes: impl FnOnce(&T) -> Option<&[RecordOutcome]>,
    ) {
        call.duration = clock.elapsed();
        match result {
            Ok(answer) => {
                if let Some(outcomes) = outcomes(answer) {
                    call.count_record_errors(outcomes);
                }
            }
            Err(error) => call.failed(error),
        }
        self.observer.on_call(&call, records);
    }
}

impl<S: KinesisSink> fmt::Display for ObservedSink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: KinesisSink> KinesisSink for ObservedSink<S> {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let call = CallRecord::new(Operation::PutRecords, Some(stream), SystemTime::now())
            .carrying(records);
        let clock = Instant::now();
        let result = self.inner.put_records(stream, records).await;
        self.report(call, clock, &result, records, |o| Some(o.as_slice()));
        result
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError> {
        let call = CallRecord::new(
            Operation::DescribeStreamSummary,
            Some(stream),
            SystemTime::now(),
        );
        let clock = Instant::now();
        let result = self.inner.describe_stream(stream).await;
        self.report(call, clock, &result, &[], |_| None);
        result
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        let call = CallRecord::new(Operation::ListStreams, None, SystemTime::now());
        let clock = Instant::now();
        let result = self.inner.list_streams().await;
        self.report(call, clock, &result, &[], |_| None);
        result
    }
}
