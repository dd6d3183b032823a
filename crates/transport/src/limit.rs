//! The per-shard write limits of the service, around any sink, on a clock the caller controls.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesync_keys::{HashKey, ShardMap};

use crate::{
    KinesisSink, PutRecord, RecordFailure, RecordOutcome, StreamDescription, StreamName,
    TransportError, complete_through, validate_batch,
};

/// Where time comes from, so tests can step it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time since some fixed start.
    fn now(&self) -> Duration;
}

/// tokio's clock: real time, or paused and advanced in tests with `tokio::time::pause`.
#[derive(Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<Mutex<Duration>>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A shard's write limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardLimits {
    /// Records per second.
    pub records_per_second: f64,
    /// Bytes (data plus partition key) per second.
    pub bytes_per_second: f64,
}

impl Default for ShardLimits {
    /// The service's: 1,000 records/s and 1 MiB/s per shard.
    fn default() -> Self {
        Self {
            records_per_second: 1000.0,
            bytes_per_second: 1024.0 * 1024.0,
        }
    }
}

/// One shard's allowance: up to a second's worth, refilled continuously.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    records: f64,
    bytes: f64,
    at: Duration,
}

/// Wraps a sink with the service's per-shard write limits: records over a shard's allowance
/// fail with `ProvisionedThroughputExceededException`, exactly as the service fails them
/// (inside a successful call, the rest of the call going through). The shard map is read
/// again every second, and at once after a call whose records landed on shards it does not
/// have, so a reshard of the stream underneath is followed, each new shard with a full bucket
/// of its own.
pub struct LimitSink<S> {
    inner: S,
    clock: Arc<dyn Clock>,
    limits: ShardLimits,
    state: Mutex<LimitState>,
}

#[derive(Default)]
struct LimitState {
    /// Per stream: its open shards and maximum record size, and when they were read.
    described: HashMap<String, (ShardMap, usize, Duration)>,
    /// Per stream and shard id: a shard that opens (a split's child) starts with a full
    /// bucket, as the service's do.
    buckets: HashMap<(String, String), Bucket>,
}

/// How long a stream's shard map is used before it is read again (it changes on a reshard).
const MAP_READ_EVERY: Duration = Duration::from_secs(1);

impl<S: fmt::Debug> fmt::Debug for LimitSink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitSink")
            .field("inner", &self.inner)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<S: fmt::Display> fmt::Display for LimitSink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (shard limits)", self.inner)
    }
}

impl<S: KinesisSink> LimitSink<S> {
    /// The service's limits on `clock`.
    pub fn new(inner: S, clock: Arc<dyn Clock>) -> Self {
        Self::with_limits(inner, clock, ShardLimits::default())
    }

    /// Custom limits on `clock`.
    pub fn with_limits(inner: S, clock: Arc<dyn Clock>, limits: ShardLimits) -> Self {
        Self {
            inner,
            clock,
            limits,
            state: Mutex::new(LimitState::default()),
        }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Takes `record`'s allowance from its shard's bucket, if there is enough.
    fn admit(&self, state: &mut LimitState, stream: &str, shard: &str, size: usize) -> bool {
        let now = self.clock.now();
        let limits = self.limits;
        let bucket = state
            .buckets
            .entry((stream.to_owned(), shard.to_owned()))
            .or_insert(Bucket {
                records: limits.records_per_second,
                bytes: limits.bytes_per_second,
                at: now,
            });
        let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
        bucket.records =
            (bucket.records + elapsed * limits.records_per_second).min(limits.records_per_second);
        bucket.bytes =
            (bucket.bytes + elapsed * limits.bytes_per_second).min(limits.bytes_per_second);
        bucket.at = now;
        let size = size as f64;
        if bucket.records >= 1.0 && bucket.bytes >= size {
            bucket.records -= 1.0;
            bucket.bytes -= size;
            true
        } else {
            false
        }
    }
}

#[async_trait]
impl<S: KinesisSink> KinesisSink for LimitSink<S> {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let now = self.clock.now();
        let known = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .described
            .get(stream.as_str())
            .filter(|(_, _, read)| now.saturating_sub(*read) < MAP_READ_EVERY)
            .cloned();
        let (map, max_record_bytes) = match known {
            Some((map, max, _)) => (map, max),
            None => {
                let d = self.inner.describe_stream(stream).await?;
                self.state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .described
                    .insert(
                        stream.as_str().to_owned(),
                        (d.shards.clone(), d.max_record_bytes, now),
                    );
                (d.shards, d.max_record_bytes)
            }
        };
        validate_batch(stream, records, max_record_bytes)?;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
        {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, record) in records.iter().enumerate() {
                let shard = map.shard_for(HashKey::for_record(
                    &record.partition_key,
                    record.explicit_hash_key,
                ));
                if !self.admit(&mut state, stream.as_str(), shard.id(), record.size()) {
                    outcomes[i] = Some(RecordOutcome::Failed {
                        failure: RecordFailure::Throttled,
                        message: format!(
                            "Rate exceeded for shard {} in stream {stream} under account 000000000000.",
                            shard.id()
                        ),
                    });
                }
            }
        }
        let answered = complete_through(&self.inner, stream, records, outcomes).await?;
        // A record that landed on a shard the map does not have: the stream was resharded, and
        // the next call reads the map again.
        let resharded = answered.iter().any(|outcome| {
            matches!(outcome, RecordOutcome::Accepted { shard_id, .. }
                if !map.shards().iter().any(|s| s.id() == shard_id))
        });
        if resharded {
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .described
                .remove(stream.as_str());
        }
        Ok(answered)
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
