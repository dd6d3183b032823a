//! The real sink: Amazon Kinesis through `aws-sdk-kinesis`.
//!
//! # Retries
//!
//! The SDK's own retries are **off** ([`RetryConfig::disabled`]): an [`AwsKinesisSink`] makes
//! exactly one HTTP attempt per call. The SDK would otherwise re-send whole `PutRecords` calls
//! on throttling and 5xx up to three times, invisibly, while the records that fail inside a
//! successful call (which the SDK never retries) are kinesync's to retry anyway. One layer,
//! kinesync's sender, owns every retry: one backoff, one budget, per-key order kept across
//! retries, and every attempt reported to the [`CallObserver`].
//!
//! # Credentials
//!
//! [`Credentials`] picks where they come from: the SDK's default chain (environment, shared
//! profile, web identity, container and instance metadata), a named profile, or an access key
//! pair; an [`AssumeRole`] can be layered on any of them, for cross-account streams. Secret
//! keys and session tokens are held in [`Secret`], whose `Debug` prints `***`; they never
//! appear in errors, observer records or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::RequestId;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{EncryptionType, PutRecordsRequestEntry, StreamMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use kinesync_keys::{ShardMap, ShardRange};

use crate::observe::{CallObserver, CallRecord};
use crate::{
    CapacityMode, DEFAULT_MAX_RECORD_BYTES, Encryption, ErrorKind, KinesisSink, Operation,
    PutRecord, RecordFailure, RecordOutcome, StreamDescription, StreamName, StreamStatus,
    TransportError,
};

/// A secret (a secret access key, a session token). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the SDK.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the credentials come from.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// The SDK's default chain: environment, shared profile, web identity, container and
    /// instance metadata.
    #[default]
    DefaultChain,
    /// A named profile of the shared config and credentials files.
    Profile(String),
    /// An access key pair (and a session token, for temporary credentials).
    AccessKey {
        /// The access key id (not secret).
        access_key_id: String,
        /// The secret access key.
        secret_access_key: Secret,
        /// The session token of temporary credentials.
        session_token: Option<Secret>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::DefaultChain => f.write_str("DefaultChain"),
            Credentials::Profile(name) => f.debug_tuple("Profile").field(name).finish(),
            Credentials::AccessKey {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("AccessKey")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"***")
                .field("session_token", &session_token.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

impl Credentials {
    /// Where these credentials were looked for, for error messages.
    pub fn describe_source(&self) -> String {
        match self {
            Credentials::DefaultChain => "the default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, web identity, container and instance metadata)".into(),
            Credentials::Profile(name) => format!("profile {name:?} in ~/.aws/config and ~/.aws/credentials"),
            Credentials::AccessKey { access_key_id, .. } => format!("the access key {access_key_id} given in the configuration"),
        }
    }
}

/// A role to assume on top of the base credentials, for a stream in another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The external ID the role's trust policy requires, if any.
    pub external_id: Option<String>,
    /// The session name (default `kinesync`).
    pub session_name: Option<String>,
}

/// Why an [`AwsKinesisSink`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No region was given.
    #[error(
        "a region is required (for example region = \"us-east-1\"); kinesync does not guess it"
    )]
    MissingRegion,
    /// The region is not a region name.
    #[error("{0:?} is not an AWS region name (for example \"us-east-1\", \"eu-west-2\")")]
    InvalidRegion(String),
    /// The endpoint URL is not an http(s) URL.
    #[error("endpoint URL {0:?} must start with http:// or https://")]
    InvalidEndpoint(String),
    /// The role ARN is not an IAM role ARN.
    #[error("{0:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")]
    InvalidRoleArn(String),
}

/// Builds an [`AwsKinesisSink`]: region (required, checked here), optional endpoint URL,
/// timeouts, credentials, an optional role to assume, and an optional call observer.
#[derive(Debug, Clone)]
pub struct AwsKinesisSinkBuilder {
    region: Option<String>,
    endpoint_url: Option<String>,
    sts_endpoint_url: Option<String>,
    credentials: Credentials,
    assume_role: Option<AssumeRole>,
    connect_timeout: Duration,
    operation_timeout: Duration,
    observer: Option<Arc<dyn CallObserver>>,
}

impl Default for AwsKinesisSinkBuilder {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            sts_endpoint_url: None,
            credentials: Credentials::DefaultChain,
            assume_role: None,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            observer: None,
        }
    }
}

impl AwsKinesisSinkBuilder {
    /// A builder with the default credential chain and timeouts (5 s to connect, 30 s a call).
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's region (required).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends Kinesis calls to this URL instead of the region's endpoint (a VPC endpoint, or a
    /// local stand-in such as kinesalite).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Sends STS calls (for [`AssumeRole`]) to this URL instead of the region's STS endpoint.
    pub fn sts_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.sts_endpoint_url = Some(url.into());
        self
    }

    /// Where the base credentials come from.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// A role to assume with the base credentials.
    pub fn assume_role(mut self, role: AssumeRole) -> Self {
        self.assume_role = Some(role);
        self
    }

    /// How long to wait for a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one call may take in all.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Receives a record of every call.
    pub fn observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Checks the settings and builds the sink. Credentials are resolved lazily, on the first
    /// call; `kinesync check` makes that call to find out early.
    pub async fn build(self) -> Result<AwsKinesisSink, BuildError> {
        let region = self.region.clone().ok_or(BuildError::MissingRegion)?;
        if !is_region_name(&region) {
            return Err(BuildError::InvalidRegion(region));
        }
        for url in [&self.endpoint_url, &self.sts_endpoint_url]
            .into_iter()
            .flatten()
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(BuildError::InvalidEndpoint(url.clone()));
            }
        }
        if let Some(role) = &self.assume_role
            && !(role.role_arn.starts_with("arn:") && role.role_arn.contains(":role/"))
        {
            return Err(BuildError::InvalidRoleArn(role.role_arn.clone()));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .operation_timeout(self.operation_timeout)
                    .build(),
            );
        loader = match &self.credentials {
            Credentials::DefaultChain => loader,
            Credentials::Profile(name) => loader.profile_name(name),
            Credentials::AccessKey {
                access_key_id,
                secret_access_key,
                session_token,
            } => loader.credentials_provider(aws_credential_types::Credentials::new(
                access_key_id,
                secret_access_key.expose(),
                session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "kinesync",
            )),
        };
        let base: SdkConfig = loader.load().await;
        let mut config = aws_sdk_kinesis::config::Builder::from(&base);
        if let Some(role) = &self.assume_role {
            let mut sts = base.to_builder();
            if let Some(url) = &self.sts_endpoint_url {
                sts = sts.endpoint_url(url);
            }
            let mut provider = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
                .session_name(
                    role.session_name
                        .clone()
                        .unwrap_or_else(|| "kinesync".into()),
                )
                .configure(&sts.build());
            if let Some(id) = &role.external_id {
                provider = provider.external_id(id);
            }
            config = config.credentials_provider(provider.build().await);
        }
        if let Some(url) = &self.endpoint_url {
            config = config.endpoint_url(url);
        }
        Ok(AwsKinesisSink {
            client: aws_sdk_kinesis::Client::from_conf(config.build()),
            region,
            endpoint: self.endpoint_url.clone(),
            credentials: self.credentials.describe_source(),
            assumed_role: self.assume_role.as_ref().map(|r| r.role_arn.clone()),
            observer: self.observer,
        })
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, ...
fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// The real sink, on `aws-sdk-kinesis`. One HTTP attempt per call (see the module docs).
pub struct AwsKinesisSink {
    client: aws_sdk_kinesis::Client,
    region: String,
    endpoint: Option<String>,
    credentials: String,
    assumed_role: Option<String>,
    observer: Option<Arc<dyn CallObserver>>,
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

    fn observe(&self, call: CallRecord) {
        if let Some(observer) = &self.observer {
            observer.on_call(&call);
        }
    }

    fn call_record(
        &self,
        operation: Operation,
        stream: Option<&StreamName>,
        started: (SystemTime, Instant),
    ) -> CallRecord {
        CallRecord {
            started: started.0,
            operation,
            stream: stream.map(|s| s.as_str().to_owned()),
            records: 0,
            bytes: 0,
            http_status: None,
            duration: started.1.elapsed(),
            record_errors: BTreeMap::new(),
            error: None,
            request_id: None,
        }
    }

    /// Reports a finished call to the observer, and maps a failure to a [`TransportError`].
    fn settle<O, E>(
        &self,
        result: Result<O, SdkError<E, HttpResponse>>,
        mut call: CallRecord,
    ) -> Result<O, TransportError>
    where
        O: RequestId,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(output) => {
                call.http_status = Some(200);
                call.request_id = output.request_id().map(str::to_owned);
                self.observe(call);
                Ok(output)
            }
            Err(err) => Err(self.failed(err, call)),
        }
    }

    /// Maps an SDK error to a [`TransportError`] and reports the failed call.
    fn failed<E>(&self, err: SdkError<E, HttpResponse>, mut call: CallRecord) -> TransportError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (error, status) = map_sdk_error(err, call.operation, &self.credentials);
        let mut error = error.with_region(&self.region);
        if let Some(stream) = &call.stream {
            error = error.with_stream(stream);
        }
        call.http_status = status;
        call.error = Some(match error.code() {
            Some(code) => format!("{}: {code}", error.kind().name()),
            None => error.kind().name().to_owned(),
        });
        call.request_id = error.request_id().map(str::to_owned);
        self.observe(call);
        error
    }
}

/// Sorts an SDK error into a [`TransportError`] by its typed variant and the service's error
/// code (never by message text); also gives the HTTP status, when there was an answer.
pub(crate) fn map_sdk_error<E>(
    err: SdkError<E, HttpResponse>,
    operation: Operation,
    credentials: &str,
) -> (TransportError, Option<u16>)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request_id = err.request_id().map(str::to_owned);
    let status = err.raw_response().map(|r| r.status().as_u16());
    let mut error = match &err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().map(str::to_owned);
            let kind = code
                .as_deref()
                .and_then(ErrorKind::from_code)
                .unwrap_or_else(|| ErrorKind::from_http_status(status));
            let message = context
                .err()
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {status} with no error message"));
            let mut e = TransportError::new(kind, operation, message);
            if let Some(code) = code {
                e = e.with_code(code);
            }
            e
        }
        SdkError::TimeoutError(_) => {
            TransportError::new(ErrorKind::Transient, operation, "the call timed out")
        }
        SdkError::DispatchFailure(_) if has_credentials_error(&err) => TransportError::new(
            ErrorKind::Credentials,
            operation,
            format!("no usable credentials; looked in {credentials}"),
        ),
        SdkError::DispatchFailure(failure) => {
            // Anything but a fault in the request itself is the network's: timeouts, refused
            // and reset connections, and connections closed before the answer came.
            let (kind, what) = if failure.is_user() {
                (
                    ErrorKind::Other,
                    "the request could not be sent (a client configuration problem)",
                )
            } else if failure.is_timeout() {
                (ErrorKind::Transient, "the connection timed out")
            } else {
                (
                    ErrorKind::Transient,
                    "the connection failed (refused, reset, or closed before the answer)",
                )
            };
            TransportError::new(kind, operation, what.to_owned())
        }
        SdkError::ResponseError(context) => {
            let status = context.raw().status().as_u16();
            TransportError::new(
                ErrorKind::from_http_status(status),
                operation,
                format!("unreadable answer with HTTP {status}"),
            )
        }
        _ if has_credentials_error(&err) => TransportError::new(
            ErrorKind::Credentials,
            operation,
            format!("no usable credentials; looked in {credentials}"),
        ),
        _ => TransportError::new(
            ErrorKind::Other,
            operation,
            "the request could not be built",
        ),
    };
    if let Some(id) = request_id {
        error = error.with_request_id(id);
    }
    (error.with_source(err), status)
}

/// Whether the error chain holds a credentials failure (typed, by downcast).
fn has_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The outcomes of a successful `PutRecords` answer, in input order.
pub(crate) fn outcomes_of(
    output: &aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
    sent: usize,
) -> Result<Vec<RecordOutcome>, String> {
    let records = output.records();
    if records.len() != sent {
        return Err(format!(
            "the answer has {} results for {sent} records",
            records.len()
        ));
    }
    Ok(records
        .iter()
        .map(
            |r| match (r.error_code(), r.shard_id(), r.sequence_number()) {
                (None, Some(shard_id), Some(sequence_number)) => RecordOutcome::Accepted {
                    shard_id: shard_id.to_owned(),
                    sequence_number: sequence_number.to_owned(),
                },
                (code, _, _) => RecordOutcome::Failed {
                    failure: RecordFailure::from_code(code.unwrap_or("MissingResult")),
                    message: r.error_message().unwrap_or_default().to_owned(),
                },
            },
        )
        .collect())
}

fn entry(record: &PutRecord) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(record.data.to_vec()))
        .partition_key(record.partition_key.as_str())
        .set_explicit_hash_key(record.explicit_hash_key.map(|k| k.to_string()))
        .build()
        .expect("data and partition key are set")
}

fn status_of(status: &aws_sdk_kinesis::types::StreamStatus) -> StreamStatus {
    use aws_sdk_kinesis::types::StreamStatus as S;
    match status {
        S::Active => StreamStatus::Active,
        S::Creating => StreamStatus::Creating,
        S::Deleting => StreamStatus::Deleting,
        S::Updating => StreamStatus::Updating,
        other => StreamStatus::Other(other.as_str().to_owned()),
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
        let mut call = self.call_record(Operation::PutRecords, Some(stream), started);
        call.records = records.len();
        call.bytes = records.iter().map(PutRecord::size).sum();
        match result {
            Ok(output) => {
                call.http_status = Some(200);
                call.request_id = output.request_id().map(str::to_owned);
                let outcomes = outcomes_of(&output, records.len()).map_err(|message| {
                    TransportError::new(ErrorKind::Other, Operation::PutRecords, message)
                        .with_stream(stream.as_str())
                        .with_region(&self.region)
                });
                if let Ok(outcomes) = &outcomes {
                    for outcome in outcomes {
                        if let RecordOutcome::Failed { failure, .. } = outcome {
                            *call
                                .record_errors
                                .entry(failure.code().to_owned())
                                .or_default() += 1;
                        }
                    }
                }
                self.observe(call);
                outcomes
            }
            Err(err) => Err(self.failed(err, call)),
        }
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
        let shards = self.open_shards(stream).await?;
        let shards = ShardMap::from_ranges(shards).map_err(|e| {
            TransportError::new(
                ErrorKind::Other,
                Operation::ListShards,
                format!("the stream's open shards are not usable: {e}"),
            )
            .with_stream(stream.as_str())
        })?;
        Ok(StreamDescription {
            name: summary.stream_name().to_owned(),
            arn: Some(summary.stream_arn().to_owned()),
            status: status_of(summary.stream_status()),
            shards,
            max_record_bytes: summary
                .max_record_size_in_kib()
                .and_then(|kib| usize::try_from(kib).ok())
                .map_or(DEFAULT_MAX_RECORD_BYTES, |kib| kib * 1024),
            encryption: match summary.encryption_type() {
                Some(EncryptionType::Kms) => Encryption::Kms {
                    key_id: summary.key_id().map(str::to_owned),
                },
                _ => Encryption::None,
            },
            capacity_mode: match summary.stream_mode_details().map(|d| d.stream_mode()) {
                Some(StreamMode::OnDemand) => CapacityMode::OnDemand,
                Some(StreamMode::Provisioned) | None => CapacityMode::Provisioned,
                Some(other) => CapacityMode::Other(other.as_str().to_owned()),
            },
        })
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
                let open = shard
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none());
                let Some(range) = shard.hash_key_range() else {
                    continue;
                };
                let (Ok(start), Ok(end)) = (
                    range.starting_hash_key().parse::<u128>(),
                    range.ending_hash_key().parse::<u128>(),
                ) else {
                    return Err(TransportError::new(
                        ErrorKind::Other,
                        Operation::ListShards,
                        format!(
                            "shard {} has a hash key range that is not a 128-bit number",
                            shard.shard_id()
                        ),
                    )
                    .with_stream(stream.as_str()));
                };
                if open {
                    shards.push(ShardRange::new(shard.shard_id(), start, end));
                }
            }
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let creds = Credentials::AccessKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("FwoGZXIvYXdzEXAMPLETOKEN")),
        };
        let builder = AwsKinesisSinkBuilder::new()
            .region("us-east-1")
            .credentials(creds.clone());
        for text in [
            format!("{creds:?}"),
            format!("{builder:?}"),
            format!("{:#?}", builder),
        ] {
            assert!(
                !text.contains("wJalrXUtnFEMI") && !text.contains("FwoGZXIvYXdz"),
                "{text}"
            );
            assert!(
                text.contains("AKIDEXAMPLE"),
                "the key id is not secret: {text}"
            );
        }
    }

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-4",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us east 1",
            "useast1",
            "us-east-1a",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn build_checks_settings_up_front() {
        assert_eq!(
            AwsKinesisSinkBuilder::new().build().await.unwrap_err(),
            BuildError::MissingRegion
        );
        assert_eq!(
            AwsKinesisSinkBuilder::new()
                .region("US-East-1")
                .build()
                .await
                .unwrap_err(),
            BuildError::InvalidRegion("US-East-1".into())
        );
        assert!(matches!(
            AwsKinesisSinkBuilder::new()
                .region("us-east-1")
                .endpoint_url("localhost:4567")
                .build()
                .await,
            Err(BuildError::InvalidEndpoint(_))
        ));
        let role = AssumeRole {
            role_arn: "arn:aws:iam::123456789012:user/x".into(),
            external_id: None,
            session_name: None,
        };
        assert!(matches!(
            AwsKinesisSinkBuilder::new()
                .region("us-east-1")
                .assume_role(role)
                .build()
                .await,
            Err(BuildError::InvalidRoleArn(_))
        ));
    }

    #[test]
    fn mixed_put_records_answers_map_per_index() {
        use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
        use aws_sdk_kinesis::types::PutRecordsResultEntry;
        let output = PutRecordsOutput::builder()
            .failed_record_count(2)
            .records(
                PutRecordsResultEntry::builder()
                    .shard_id("shardId-000000000001")
                    .sequence_number("49")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("ProvisionedThroughputExceededException")
                    .error_message("Rate exceeded for shard shardId-000000000001")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("InternalFailure")
                    .error_message("Internal service failure.")
                    .build(),
            )
            .build()
            .unwrap();
        let outcomes = outcomes_of(&output, 3).unwrap();
        assert_eq!(
            outcomes[0],
            RecordOutcome::Accepted {
                shard_id: "shardId-000000000001".into(),
                sequence_number: "49".into()
            }
        );
        assert!(
            matches!(&outcomes[1], RecordOutcome::Failed { failure: RecordFailure::Throttled, message } if message.contains("Rate exceeded"))
        );
        assert!(matches!(
            &outcomes[2],
            RecordOutcome::Failed {
                failure: RecordFailure::InternalFailure,
                ..
            }
        ));
        assert!(
            outcomes_of(&output, 4).is_err(),
            "a short answer is an error, not a silent loss"
        );
    }
}
