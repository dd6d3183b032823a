//! The sink itself: [`AwsKinesisSink`] and its [`KinesisSink`] calls.
//!
//! Every call is reported to the [`CallObserver`] exactly once, as it ends, whether it
//! succeeded or failed: the observer's records are the ground truth of kinesync's debugger
//! log, so no call may go unreported, and none twice.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::RequestId;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use kinesync_keys::{ShardMap, ShardRange};

use super::builder::AwsKinesisSinkBuilder;
use super::convert::{description, entry, open_shard, outcomes_of};
use super::sdk_errors::map_sdk_error;
use crate::observe::{CallObserver, CallRecord};
use crate::{
    ErrorKind, KinesisSink, Operation, PutRecord, RecordOutcome, StreamDescription, StreamName,
    TransportError,
};

/// The real sink, on `aws-sdk-kinesis`. One HTTP attempt per call (see the module docs).
pub struct AwsKinesisSink {
    pub(super) client: aws_sdk_kinesis::Client,
    pub(super) region: String,
    pub(super) endpoint: Option<String>,
    /// Where the credentials were looked for ([`crate::Credentials::describe_source`]), for
    /// error messages: never the credentials themselves.
    pub(super) credentials: String,
    pub(super) assumed_role: Option<String>,
    pub(super) observer: Option<Arc<dyn CallObserver>>,
}

impl fmt::Debug for AwsKinesisSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKinesisSink")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("assumed_role", &self.assumed_role)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AwsKinesisSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amazon Kinesis in {}", self.region)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        Ok(())
    }
}

impl AwsKinesisSink {
    /// A builder.
    pub fn builder() -> AwsKinesisSinkBuilder {
        AwsKinesisSinkBuilder::new()
    }

    /// The region calls go to.
    pub fn region(&self) -> &str {
        &self.region
    }

    fn observe(&self, call: CallRecord, records: &[PutRecord]) {
        if let Some(observer) = &self.observer {
            observer.on_call(&call, records);
        }
    }

    fn call_record(
        &self,
        operation: Operation,
        stream: Option<&StreamName>,
        started: (SystemTime, Instant),
    ) -> CallRecord {
        let mut call = CallRecord::new(operation, stream, started.0);
        call.duration = started.1.elapsed();
        call
    }

    /// Reports a finished call to the observer, and maps a failure to a [`TransportError`].
    fn settle<O, E>(
        &self,
        result: Result<O, SdkError<E, HttpResponse>>,
        call: CallRecord,
    ) -> Result<O, TransportError>
    where
        O: RequestId,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.settle_with(result, call, &[], |output, _| Ok(output))
    }

    /// [`settle`](Self::settle), with `read` turning the answer into the result before the
    /// call is reported, so that what it adds to the record (a `PutRecords` call's per-record
    /// errors) reaches the observer in the call's one record. When `read` fails, the caller
    /// gets its error, and the record has it too, with the HTTP 200 the service answered.
    fn settle_with<O, E, T>(
        &self,
        result: Result<O, SdkError<E, HttpResponse>>,
        mut call: CallRecord,
        records: &[PutRecord],
        read: impl FnOnce(O, &mut CallRecord) -> Result<T, TransportError>,
    ) -> Result<T, TransportError>
    where
        O: RequestId,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(output) => {
                call.http_status = Some(200);
                call.request_id = output.request_id().map(str::to_owned);
                let result = read(output, &mut call);
                // An answer that cannot be read (too few results, say) fails the call for the
                // caller, and so in its record too, beside the HTTP 200 it came with.
                if let Err(error) = &result {
                    call.failed(error);
                }
                self.observe(call, records);
                result
            }
            Err(err) => Err(self.failed(err, call, records)),
        }
    }

    /// Maps an SDK error to a [`TransportError`] and reports the failed call.
    fn failed<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        mut call: CallRecord,
        records: &[PutRecord],
    ) -> TransportError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let host = match &self.endpoint {
            Some(endpoint) => format!("endpoint {endpoint}"),
            None => format!("kinesis.{}.amazonaws.com", self.region),
        };
        let (error, status) = map_sdk_error(
            err,
            call.operation,
            &self.credentials,
            &host,
            self.assumed_role.as_deref(),
        );
        let mut error = error.with_region(&self.region);
        if let Some(stream) = &call.stream {
            error = error.with_stream(stream);
        }
        call.http_status = status;
        call.failed(&error);
        self.observe(call, records);
        error
    }
}

#[async_trait]
impl KinesisSink for AwsKinesisSink {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let started = (SystemTime::now(), Instant::now());
        let entries: Vec<PutRecordsRequestEntry> = records.iter().map(entry).collect();
        let result = self
            .client
            .put_records()
            .stream_name(stream.as_str())
            .set_records(Some(entries))
            .send()
            .await;
        let call = self
            .call_record(Operation::PutRecords, Some(stream), started)
            .carrying(records);
        self.settle_with(result, call, records, |output, call| {
            // An answer that does not say what became of each record leaves them in doubt:
            // they may have landed. Sending them again is the one way not to lose them.
            let outcomes = outcomes_of(&output, records.len()).map_err(|message| {
                let message = format!("{message}: the records are in doubt and are sent again");
                TransportError::new(ErrorKind::Transient, Operation::PutRecords, message)
                    .with_stream(stream.as_str())
                    .with_region(&self.region)
            })?;
            call.count_record_errors(&outcomes);
            Ok(outcomes)
        })
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError> {
        let started = (SystemTime::now(), Instant::now());
        let summary = self
            .client
            .describe_stream_summary()
            .stream_name(stream.as_str())
            .send()
            .await;
        let call = self.call_record(Operation::DescribeStreamSummary, Some(stream), started);
        let summary = self.settle(summary, call)?;
        let Some(summary) = summary.stream_description_summary() else {
            return Err(TransportError::new(
                ErrorKind::Other,
                Operation::DescribeStreamSummary,
                "the answer has no stream description",
            )
            .with_stream(stream.as_str()));
        };
        // A stream being created or deleted has no shards to list and takes no records: its
        // status is the answer.
        let not_ready = match summary.stream_status() {
            aws_sdk_kinesis::types::StreamStatus::Creating => Some(ErrorKind::StreamNotReady),
            aws_sdk_kinesis::types::StreamStatus::Deleting => Some(ErrorKind::StreamNotFound),
            _ => None,
        };
        if let Some(kind) = not_ready {
            return Err(TransportError::new(
                kind,
                Operation::DescribeStreamSummary,
                format!(
                    "the stream's status is {}",
                    summary.stream_status().as_str()
                ),
            )
            .with_stream(stream.as_str())
            .with_region(&self.region));
        }
        let shards = self.open_shards(stream).await?;
        let shards = ShardMap::from_ranges(shards).map_err(|e| {
            TransportError::new(
                ErrorKind::Other,
                Operation::ListShards,
                format!("the stream's open shards are not usable: {e}"),
            )
            .with_stream(stream.as_str())
        })?;
        Ok(description(summary, shards))
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        let mut names: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let started = (SystemTime::now(), Instant::now());
            let request = match &token {
                Some(t) => self.client.list_streams().next_token(t),
                // Servers without tokens page by the last name seen.
                None => self
                    .client
                    .list_streams()
                    .set_exclusive_start_stream_name(names.last().cloned()),
            };
            let result = request.send().await;
            let call = self.call_record(Operation::ListStreams, None, started);
            let output = self.settle(result, call)?;
            names.extend(output.stream_names().iter().cloned());
            token = output.next_token().map(str::to_owned);
            if !output.has_more_streams() || output.stream_names().is_empty() {
                break;
            }
        }
        Ok(names)
    }
}

impl AwsKinesisSink {
    /// The stream's open shards (those with no ending sequence number), all pages.
    async fn open_shards(&self, stream: &StreamName) -> Result<Vec<ShardRange>, TransportError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let started = (SystemTime::now(), Instant::now());
            let request = match &token {
                // With a token the stream name must not be sent.
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(stream.as_str()),
            };
            let result = request.send().await;
            let call = self.call_record(Operation::ListShards, Some(stream), started);
            let output = self.settle(result, call)?;
            for shard in output.shards() {
                let range = open_shard(shard).map_err(|message| {
                    TransportError::new(ErrorKind::Other, Operation::ListShards, message)
                        .with_stream(stream.as_str())
                })?;
                shards.extend(range);
            }
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(shards)
    }
}
