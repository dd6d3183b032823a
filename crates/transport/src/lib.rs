//! kinesync's one seam to Kinesis.
//!
//! Where it sits in a sync (source → engine: prepare, diff, build, batch, send, commit → sink):
//! the end: the engine's send stage hands it calls; what it answers decides what the commit
//! stage commits.
//!
//! [`KinesisSink`] is a small, object-safe async trait, used as `Arc<dyn KinesisSink>`: put a
//! batch of records to a stream and get one [`RecordOutcome`] per record, in input order;
//! describe a stream; list streams. No AWS SDK type crosses it.
//!
//! | sink | what it is |
//! |---|---|
//! | [`InMemorySink`] | a simulated stream that behaves like the service: shards and hash ranges, sequence numbers, the same validation and limits, read-back for tests |
//! | [`LimitSink`] | wraps any sink with the per-shard write limits (1,000 records/s, 1 MiB/s) on a clock the caller controls |
//! | [`FaultySink`] | wraps any sink with injected faults: per-record throttles and internal failures, whole-call errors, lost answers, latency; scripted or from a seed |
//! | `AwsKinesisSink` (feature `aws`, on by default) | the real service through `aws-sdk-kinesis` |
//!
//! # What a sink promises
//!
//! - `put_records` answers `Ok` with exactly one outcome per input record, in input order, or
//!   `Err` when the whole call failed. A record whose outcome is
//!   [`RecordOutcome::Accepted`] is in the stream.
//! - A sink makes **one attempt per call**. Retrying (failed records, retryable call errors)
//!   is the caller's job, so that per-record and whole-call retries share one backoff and one
//!   budget, and so that the caller can keep records of one partition key in order across
//!   retries. `TransportError::is_retryable` says which call failures are worth retrying.
//! - Within one call, the service does not promise order between records of the same key when
//!   some fail; callers that need per-key order send one record per key per call, or wait for
//!   the outcome before sending the next.
//!
//! ```
//! # tokio_test_block_on(async {
//! use kinesync::keys::PartitionKey;
//! use kinesync::transport::{InMemorySink, KinesisSink, PutRecord, StreamConfig, StreamName};
//!
//! let sink = InMemorySink::new();
//! let stream = StreamName::new("orders").unwrap();
//! sink.create_stream(&stream, StreamConfig::with_shards(2));
//! let records = vec![PutRecord::new(PartitionKey::new("user-1").unwrap(), &b"{\"a\":1}"[..])];
//! let outcomes = sink.put_records(&stream, &records).await.unwrap();
//! assert!(outcomes[0].is_accepted());
//! assert_eq!(sink.records(&stream).unwrap().len(), 1);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

pub mod aggregate;
mod error;
mod faults;
mod limit;
mod memory;
mod observe;

#[cfg(feature = "aws")]
mod aws;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;

use std::fmt;
use std::sync::Arc;

pub use async_trait::async_trait;
pub use bytes::Bytes;
use kinesync_keys::{ExplicitHashKey, PartitionKey, ShardMap};

#[cfg(feature = "aws")]
pub use aws::{AssumeRole, AwsKinesisSink, AwsKinesisSinkBuilder, BuildError, Credentials, Secret};
pub use error::{ErrorKind, KmsProblem, Operation, TransportError};
pub use faults::{Fault, FaultySink, RandomFaults};
pub use limit::{Clock, LimitSink, ManualClock, ShardLimits, TokioClock};
pub use memory::{InMemorySink, StoredRecord, StreamConfig};
pub use observe::{CallFailure, CallObserver, CallRecord, ObservedSink};

/// The most records one `PutRecords` call may carry.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// The most bytes (data plus partition keys) one `PutRecords` call may carry: 10 MiB.
pub const MAX_BYTES_PER_CALL: usize = 10 * 1024 * 1024;
/// A stream's maximum record size (partition key plus data) unless configured otherwise: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A stream name the service accepts: 1 to 128 of `[a-zA-Z0-9_.-]`. Case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

/// A stream name the service would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream name {name:?}: use 1 to 128 letters, digits, `_`, `.` or `-`")]
pub struct InvalidStreamName {
    /// The refused name.
    pub name: String,
}

impl StreamName {
    /// Checks `name` against the service's pattern.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidStreamName> {
        let name = name.into();
        let ok = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(name))
        } else {
            Err(InvalidStreamName { name })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecord {
    /// The partition key.
    pub partition_key: PartitionKey,
    /// The explicit hash key, if the record is routed by one.
    pub explicit_hash_key: Option<ExplicitHashKey>,
    /// The message.
    pub data: Bytes,
}

impl PutRecord {
    /// A record routed by its partition key.
    pub fn new(partition_key: PartitionKey, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key,
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// The same record, routed by `key` instead.
    pub fn with_explicit_hash_key(mut self, key: ExplicitHashKey) -> Self {
        self.explicit_hash_key = Some(key);
        self
    }

    /// What the record counts against the record and request size limits: its data plus its
    /// partition key's UTF-8 bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.byte_len()
    }
}

/// Why the service refused one record of an otherwise successful call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordFailure {
    /// `ProvisionedThroughputExceededException`: the record's shard is over its limits.
    Throttled,
    /// `InternalFailure`.
    InternalFailure,
    /// Any other code the service may add.
    Other(String),
}

impl RecordFailure {
    /// From the service's per-record error code.
    pub fn from_code(code: &str) -> Self {
        match code {
            "ProvisionedThroughputExceededException" => RecordFailure::Throttled,
            "InternalFailure" => RecordFailure::InternalFailure,
            other => RecordFailure::Other(other.to_owned()),
        }
    }

    /// The service's code.
    pub fn code(&self) -> &str {
        match self {
            RecordFailure::Throttled => "ProvisionedThroughputExceededException",
            RecordFailure::InternalFailure => "InternalFailure",
            RecordFailure::Other(code) => code,
        }
    }
}

/// What became of one record of a `PutRecords` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The record is in the stream.
    Accepted {
        /// The shard it landed on.
        shard_id: String,
        /// Its sequence number within that shard.
        sequence_number: String,
    },
    /// The record was refused; it may be sent again.
    Failed {
        /// Why.
        failure: RecordFailure,
        /// The service's message.
        message: String,
    },
}

impl RecordOutcome {
    /// Whether the record is in the stream.
    pub fn is_accepted(&self) -> bool {
        matches!(self, RecordOutcome::Accepted { .. })
    }
}

/// A stream's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamStatus {
    /// Being created.
    Creating,
    /// Being deleted.
    Deleting,
    /// Ready for reads and writes.
    Active,
    /// Being resharded or reconfigured; writes still work.
    Updating,
    /// A state this version does not know.
    Other(String),
}

/// How the stream's capacity is set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityMode {
    /// A fixed number of shards.
    Provisioned,
    /// Shards scale with traffic.
    OnDemand,
    /// A mode this version does not know.
    Other(String),
}

/// How the stream's records are encrypted at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encryption {
    /// Not encrypted.
    None,
    /// Encrypted with a KMS key.
    Kms {
        /// The key's id, ARN or alias.
        key_id: Option<String>,
    },
}

/// What kinesync needs to know about a stream before writing to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// The name.
    pub name: String,
    /// The ARN, when the sink knows it.
    pub arn: Option<String>,
    /// The state.
    pub status: StreamStatus,
    /// The open shards and their hash ranges.
    pub shards: ShardMap,
    /// The largest record (partition key plus data) the stream takes, in bytes.
    pub max_record_bytes: usize,
    /// Encryption at rest.
    pub encryption: Encryption,
    /// Provisioned or on-demand.
    pub capacity_mode: CapacityMode,
}

/// The one seam between kinesync and a Kinesis stream.
///
/// Implementations keep SDK types on their side of it. See the crate docs for what a sink
/// promises; `crate::conformance` (feature `testing`) checks a sink against those promises.
///
/// # Writing your own
///
/// Implement it with the [`async_trait`](macro@async_trait) attribute this crate re-exports (the trait is used as
/// `Arc<dyn KinesisSink>`, which async functions in traits do not allow yet). `Display` is
/// required so that errors and logs can name the sink a run used ("in-memory stream", "Kinesis
/// in eu-west-1"); `Debug` must not print secrets. Every method is required, so that a wrapper
/// cannot drop an inner sink's behaviour by falling back to a default. A sink that throttles
/// every third record, around the in-memory stream:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use kinesync::transport::{
///     async_trait, InMemorySink, KinesisSink, PutRecord, RecordFailure, RecordOutcome,
///     StreamConfig, StreamDescription, StreamName, TransportError,
/// };
///
/// #[derive(Debug, Default)]
/// struct EveryThirdThrottled {
///     inner: InMemorySink,
///     seen: AtomicUsize,
/// }
///
/// impl std::fmt::Display for EveryThirdThrottled {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("in-memory stream, every third record throttled")
///     }
/// }
///
/// #[async_trait]
/// impl KinesisSink for EveryThirdThrottled {
///     async fn put_records(
///         &self,
///         stream: &StreamName,
///         records: &[PutRecord],
///     ) -> Result<Vec<RecordOutcome>, TransportError> {
///         let mut outcomes = Vec::with_capacity(records.len());
///         for record in records {
///             if self.seen.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
///                 outcomes.push(RecordOutcome::Failed {
///                     failure: RecordFailure::Throttled,
///                     message: "Rate exceeded for shard".into(),
///                 });
///             } else {
///                 let landed = self.inner.put_records(stream, std::slice::from_ref(record));
///                 outcomes.extend(landed.await?);
///             }
///         }
///         Ok(outcomes)
///     }
///
///     async fn describe_stream(
///         &self,
///         stream: &StreamName,
///     ) -> Result<StreamDescription, TransportError> {
///         self.inner.describe_stream(stream).await
///     }
///
///     async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
///         self.inner.list_streams().await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let sink = EveryThirdThrottled::default();
/// let stream = StreamName::new("orders").unwrap();
/// sink.inner.create_stream(&stream, StreamConfig::with_shards(1));
/// let record = |key: &str| PutRecord::new(key.parse().unwrap(), &b"{}"[..]);
/// let outcomes = sink
///     .put_records(&stream, &[record("a"), record("b"), record("c")])
///     .await
///     .unwrap();
/// assert!(outcomes[0].is_accepted() && outcomes[1].is_accepted() && !outcomes[2].is_accepted());
/// # });
/// ```
#[async_trait]
pub trait KinesisSink: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Puts `records` (1 to 500, at most 10 MiB) to `stream`; one outcome per record, in order.
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError>;

    /// Describes `stream`: status, open shards, maximum record size, encryption, capacity mode.
    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError>;

    /// The names of the account's streams in the sink's region.
    async fn list_streams(&self) -> Result<Vec<String>, TransportError>;
}

macro_rules! forward_sink {
    ($ty:ty) => {
        #[async_trait]
        impl<S: KinesisSink + ?Sized> KinesisSink for $ty {
            async fn put_records(
                &self,
                stream: &StreamName,
                records: &[PutRecord],
            ) -> Result<Vec<RecordOutcome>, TransportError> {
                (**self).put_records(stream, records).await
            }
            async fn describe_stream(
                &self,
                stream: &StreamName,
            ) -> Result<StreamDescription, TransportError> {
                (**self).describe_stream(stream).await
            }
            async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
                (**self).list_streams().await
            }
        }
    };
}

forward_sink!(Arc<S>);
forward_sink!(Box<S>);

/// Checks a batch against the service's call-level rules; shared by the in-memory sink and
/// the decorators so every sink refuses the same inputs the same way.
pub(crate) fn validate_batch(
    stream: &StreamName,
    records: &[PutRecord],
    max_record_bytes: usize,
) -> Result<(), TransportError> {
    let invalid = |message: String| {
        TransportError::new(ErrorKind::InvalidRequest, Operation::PutRecords, message)
            .with_stream(stream.as_str())
            .with_code("ValidationException")
    };
    if records.is_empty() || records.len() > MAX_RECORDS_PER_CALL {
        return Err(invalid(format!(
            "a call carries 1 to {MAX_RECORDS_PER_CALL} records, this one {}",
            records.len()
        )));
    }
    let mut total = 0;
    for (i, record) in records.iter().enumerate() {
        if record.size() > max_record_bytes {
            return Err(invalid(format!(
                "record {i} is {} bytes (data plus partition key), over the stream's maximum of {max_record_bytes}",
                record.size()
            )));
        }
        total += record.size();
    }
    if total > MAX_BYTES_PER_CALL {
        return Err(invalid(format!(
            "the call carries {total} bytes, over the {MAX_BYTES_PER_CALL}-byte limit"
        )));
    }
    Ok(())
}

/// For decorators that decide some records' outcomes themselves: puts the records still
/// without an outcome to `inner` in one call, fills in their outcomes, and gives back the
/// complete list.
pub(crate) async fn complete_through<S: KinesisSink + ?Sized>(
    inner: &S,
    stream: &StreamName,
    records: &[PutRecord],
    mut outcomes: Vec<Option<RecordOutcome>>,
) -> Result<Vec<RecordOutcome>, TransportError> {
    let open: Vec<usize> = (0..records.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    if !open.is_empty() {
        let batch: Vec<PutRecord> = open.iter().map(|&i| records[i].clone()).collect();
        for (&i, outcome) in open.iter().zip(inner.put_records(stream, &batch).await?) {
            outcomes[i] = Some(outcome);
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every record has an outcome"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_service_pattern() {
        assert!(StreamName::new("orders.v2_EU-1").is_ok());
        assert!(StreamName::new("x".repeat(128)).is_ok());
        for bad in ["", "with space", "a/b", "ü", &"x".repeat(129)] {
            assert!(StreamName::new(bad).is_err(), "{bad:?}");
        }
    }

    /// The trait must stay usable as `dyn`.
    #[allow(dead_code)]
    fn object_safe(_: &dyn KinesisSink, _: Arc<dyn KinesisSink>) {}
}
