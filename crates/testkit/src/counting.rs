//! A sink wrapper the engine's tests and benchmarks measure runs with: it counts calls and
//! Kinesis record attempts on their way to the sink it wraps, and can hold each call back for
//! a round trip, as a region's network would.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use kinesync_transport::{
    KinesisSink, PutRecord, RecordOutcome, StreamDescription, StreamName, TransportError,
};

/// Counts what goes through to `inner`.
#[derive(Debug)]
pub struct CountingSink<S> {
    /// The sink the calls go to.
    pub inner: S,
    calls: AtomicU64,
    attempts: AtomicU64,
    smallest: AtomicUsize,
    delay: Duration,
}

impl<S> CountingSink<S> {
    /// Counts calls to `inner`, passing them straight on.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            smallest: AtomicUsize::new(usize::MAX),
            delay: Duration::ZERO,
        }
    }

    /// Each `PutRecords` call waits `delay` (on tokio's clock) before it reaches `inner`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// `PutRecords` calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Kinesis records sent so far, each attempt counted.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// The fewest records a call carried (`usize::MAX` before the first call).
    pub fn smallest_call(&self) -> usize {
        self.smallest.load(Ordering::SeqCst)
    }
}

impl<S> std::fmt::Display for CountingSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("counting sink")
    }
}

#[async_trait::async_trait]
impl<S: KinesisSink> KinesisSink for CountingSink<S> {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.attempts
            .fetch_add(records.len() as u64, Ordering::SeqCst);
        self.smallest.fetch_min(records.len(), Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.put_records(stream, records).await
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError> {
        self.inner.describe_stream(stream).await
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        self.inner.list_streams().await
    }
}
