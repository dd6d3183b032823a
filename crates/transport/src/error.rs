//! Whole-call failures, sorted into kinds a caller can act on.

use std::fmt;

/// A Kinesis API operation, as named in errors and call records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Operation {
    /// `PutRecords`.
    PutRecords,
    /// `DescribeStreamSummary`.
    DescribeStreamSummary,
    /// `ListShards`.
    ListShards,
    /// `ListStreams`.
    ListStreams,
    /// STS's `AssumeRole`: the temporary credentials of a role to assume.
    AssumeRole,
}

impl Operation {
    /// The API's own name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::PutRecords => "PutRecords",
            Operation::DescribeStreamSummary => "DescribeStreamSummary",
            Operation::ListShards => "ListShards",
            Operation::ListStreams => "ListStreams",
            Operation::AssumeRole => "AssumeRole",
        }
    }

    /// The IAM action that allows it.
    pub fn iam_action(self) -> &'static str {
        match self {
            Operation::PutRecords => "kinesis:PutRecords",
            Operation::DescribeStreamSummary => "kinesis:DescribeStreamSummary",
            Operation::ListShards => "kinesis:ListShards",
            Operation::ListStreams => "kinesis:ListStreams",
            Operation::AssumeRole => "sts:AssumeRole",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which KMS problem the service reported; each has its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KmsProblem {
    /// `KMSAccessDeniedException`: the caller may not use the stream's key.
    AccessDenied,
    /// `KMSDisabledException`: the key is disabled.
    Disabled,
    /// `KMSInvalidStateException`: the key is not in a usable state.
    InvalidState,
    /// `KMSNotFoundException`: the key does not exist.
    NotFound,
    /// `KMSOptInRequired`: the account is not subscribed to KMS.
    OptInRequired,
    /// `KMSThrottlingException`: KMS is throttling; retryable.
    Throttling,
}

impl KmsProblem {
    /// The service's error code.
    pub fn code(self) -> &'static str {
        match self {
            KmsProblem::AccessDenied => "KMSAccessDeniedException",
            KmsProblem::Disabled => "KMSDisabledException",
            KmsProblem::InvalidState => "KMSInvalidStateException",
            KmsProblem::NotFound => "KMSNotFoundException",
            KmsProblem::OptInRequired => "KMSOptInRequired",
            KmsProblem::Throttling => "KMSThrottlingException",
        }
    }
}

/// The kind of a whole-call failure: what a caller matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The stream or account is over its limits (`ProvisionedThroughputExceededException`,
    /// `LimitExceededException`, HTTP 429). Retryable.
    Throttled,
    /// The service or the network failed in passing: 5xx, `InternalFailure`, a timeout, a
    /// connection reset or refused. Retryable. A timed-out `PutRecords` may still have landed.
    Transient,
    /// `ResourceNotFoundException`: no such stream in this account and region.
    StreamNotFound,
    /// The stream exists but takes no records yet: it is being created. A sync waits a while
    /// for it. (A stream being deleted is [`ErrorKind::StreamNotFound`]: it will not come back.)
    StreamNotReady,
    /// `AccessDeniedException`: the credentials' policy does not allow the action.
    AccessDenied,
    /// The request broke a rule of the API (`ValidationException`, `InvalidArgumentException`):
    /// sizes, counts, key or hash key format, stream name. Not retryable as is.
    InvalidRequest,
    /// The endpoint refused the request as too large (HTTP 413), though it kept the API's
    /// limits: an endpoint with a lower cap (kinesalite takes 7 MiB, not 10). Smaller calls go
    /// through.
    RequestTooLarge,
    /// A problem with the stream's KMS key.
    Kms(KmsProblem),
    /// The credentials are missing, wrong or expired (`UnrecognizedClientException`,
    /// `InvalidSignatureException`, `ExpiredTokenException`, no credentials found).
    Credentials,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::Kms(KmsProblem::Throttling)
        )
    }

    /// A short, stable name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient",
            ErrorKind::StreamNotFound => "stream_not_found",
            ErrorKind::StreamNotReady => "stream_not_ready",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::Kms(_) => "kms",
            ErrorKind::Credentials => "credentials",
            ErrorKind::Other => "other",
        }
    }

    /// The kind a service error code belongs to. Codes are the service's stable contract;
    /// messages are not, and are never matched.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException" => ErrorKind::Throttled,
            "InternalFailure"
            | "InternalFailureException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException" => ErrorKind::Transient,
            "ResourceNotFoundException" => ErrorKind::StreamNotFound,
            "AccessDeniedException" => ErrorKind::AccessDenied,
            "ValidationException" | "InvalidArgumentException" | "SerializationException" => {
                ErrorKind::InvalidRequest
            }
            "KMSAccessDeniedException" => ErrorKind::Kms(KmsProblem::AccessDenied),
            "KMSDisabledException" => ErrorKind::Kms(KmsProblem::Disabled),
            "KMSInvalidStateException" => ErrorKind::Kms(KmsProblem::InvalidState),
            "KMSNotFoundException" => ErrorKind::Kms(KmsProblem::NotFound),
            "KMSOptInRequired" => ErrorKind::Kms(KmsProblem::OptInRequired),
            "KMSThrottlingException" => ErrorKind::Kms(KmsProblem::Throttling),
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "InvalidClientTokenId" => ErrorKind::Credentials,
            _ => return None,
        })
    }

    /// The kind an HTTP status implies when there is no error code to go by.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            429 => ErrorKind::Throttled,
            413 => ErrorKind::RequestTooLarge,
            401 => ErrorKind::Credentials,
            403 => ErrorKind::AccessDenied,
            404 => ErrorKind::StreamNotFound,
            500..=599 => ErrorKind::Transient,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Other,
        }
    }
}

/// A whole call failed. Carries what is needed to act: the kind, the operation and stream,
/// the service's code and message, the request id; `Display` adds what to check. (Boxed, so
/// a `Result` that may hold one stays small.)
#[derive(Debug)]
pub struct TransportError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    operation: Operation,
    stream: Option<String>,
    code: Option<String>,
    message: String,
    request_id: Option<String>,
    /// Where the stream lives, for the advice (`region us-east-1`).
    region: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// A failure of `operation` of kind `kind`, with a message saying what happened.
    pub fn new(kind: ErrorKind, operation: Operation, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            operation,
            stream: None,
            code: None,
            message: message.into(),
            request_id: None,
            region: None,
            source: None,
        }))
    }

    /// The stream the call was about.
    pub fn with_stream(mut self, stream: impl Into<String>) -> Self {
        self.0.stream = Some(stream.into());
        self
    }

    /// The service's error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.0.code = Some(code.into());
        self
    }

    /// The service's request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.0.request_id = Some(id.into());
        self
    }

    /// The region the call went to.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.0.region = Some(region.into());
        self
    }

    /// The underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.0.kind.is_retryable()
    }

    /// The operation that failed.
    pub fn operation(&self) -> Operation {
        self.0.operation
    }

    /// The stream, when the call named one.
    pub fn stream(&self) -> Option<&str> {
        self.0.stream.as_deref()
    }

    /// The service's error code, when it gave one.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The service's (or the client's) message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The service's request id, when known.
    pub fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// What the user should check, for this kind.
    pub fn advice(&self) -> String {
        let stream = self.0.stream.as_deref().unwrap_or("the stream");
        let region = self
            .0
            .region
            .as_deref()
            .map(|r| format!(" in region {r}"))
            .unwrap_or_default();
        let arn = format!(
            "arn:aws:kinesis:{}:ACCOUNT:stream/{stream}",
            self.0.region.as_deref().unwrap_or("REGION")
        );
        match self.0.kind {
            ErrorKind::Throttled => "the stream is over its write limits (1,000 records/s and 1 MiB/s per shard); kinesync retries with backoff; add shards or lower the send rate if it persists".into(),
            ErrorKind::Transient => "a service or network failure: a sync retries it for up to retry_seconds; if it lasts, check the endpoint or region and the network".into(),
            ErrorKind::StreamNotFound => format!(
                "no stream named {stream:?}{region} is visible to these credentials; stream names are case-sensitive, and a stream lives in one region and one account (check the region and, with an assumed role, the role's account)"
            ),
            ErrorKind::StreamNotReady => "the stream is being created and takes no records until it is ACTIVE: a sync waits for it (up to retry_seconds); run again once it is ACTIVE".into(),
            ErrorKind::AccessDenied => format!(
                "the credentials' IAM policy must allow {} on {arn} (kinesync needs kinesis:PutRecords, kinesis:DescribeStreamSummary and kinesis:ListShards)",
                self.0.operation.iam_action()
            ),
            ErrorKind::InvalidRequest => "the request broke a Kinesis limit (at most 500 records and 10 MiB a call, each record within the stream's maximum record size, partition keys of 1 to 256 characters, explicit hash keys in 0..=2^128-1); this is a kinesync bug if it happens in a sync".into(),
            ErrorKind::RequestTooLarge => "the endpoint refused the request as too large (HTTP 413), below the API's 10 MiB: a sync sends smaller calls and carries on; one record alone too large for it cannot be sent there".into(),
            ErrorKind::Kms(problem) => match problem {
                KmsProblem::AccessDenied => format!("the credentials may not use the stream's KMS key: allow kms:GenerateDataKey on the key for {arn}"),
                KmsProblem::Disabled => "the stream's KMS key is disabled: enable it in KMS".into(),
                KmsProblem::InvalidState => "the stream's KMS key is not in a usable state (pending deletion or import?)".into(),
                KmsProblem::NotFound => "the stream's KMS key does not exist: check the stream's encryption settings".into(),
                KmsProblem::OptInRequired => "the account is not subscribed to AWS KMS".into(),
                KmsProblem::Throttling => "KMS is throttling requests; kinesync retries".into(),
            },
            ErrorKind::Credentials => "the credentials were refused: check the access key id and secret, that a session token is current, and which credentials were picked up (environment, profile, role)".into(),
            ErrorKind::Other => "an unexpected failure; the request id and message above say more".into(),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.operation)?;
        if let Some(stream) = &self.0.stream {
            write!(f, " on stream {stream:?}")?;
        }
        write!(f, " failed ({}", self.0.kind.name())?;
        if let Some(code) = &self.0.code {
            write!(f, ", {code}")?;
        }
        write!(f, "): {}", self.0.message)?;
        if let Some(id) = &self.0.request_id {
            write!(f, " [request id {id}]")?;
        }
        write!(f, ". {}", self.advice())
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_code_has_its_kind() {
        for (code, kind) in [
            ("ResourceNotFoundException", ErrorKind::StreamNotFound),
            ("AccessDeniedException", ErrorKind::AccessDenied),
            ("ValidationException", ErrorKind::InvalidRequest),
            ("InvalidArgumentException", ErrorKind::InvalidRequest),
            (
                "ProvisionedThroughputExceededException",
                ErrorKind::Throttled,
            ),
            ("LimitExceededException", ErrorKind::Throttled),
            (
                "KMSAccessDeniedException",
                ErrorKind::Kms(KmsProblem::AccessDenied),
            ),
            ("KMSDisabledException", ErrorKind::Kms(KmsProblem::Disabled)),
            (
                "KMSInvalidStateException",
                ErrorKind::Kms(KmsProblem::InvalidState),
            ),
            ("KMSNotFoundException", ErrorKind::Kms(KmsProblem::NotFound)),
            (
                "KMSOptInRequired",
                ErrorKind::Kms(KmsProblem::OptInRequired),
            ),
            (
                "KMSThrottlingException",
                ErrorKind::Kms(KmsProblem::Throttling),
            ),
            ("ExpiredTokenException", ErrorKind::Credentials),
            ("UnrecognizedClientException", ErrorKind::Credentials),
            ("InvalidSignatureException", ErrorKind::Credentials),
            ("InternalFailure", ErrorKind::Transient),
        ] {
            assert_eq!(ErrorKind::from_code(code), Some(kind), "{code}");
            if let ErrorKind::Kms(p) = kind {
                assert_eq!(p.code(), code);
            }
        }
        assert_eq!(ErrorKind::from_code("SomethingNew"), None);
        assert!(ErrorKind::Kms(KmsProblem::Throttling).is_retryable());
        assert!(!ErrorKind::Kms(KmsProblem::Disabled).is_retryable());
    }

    #[test]
    fn messages_say_what_to_check() {
        let e = TransportError::new(
            ErrorKind::AccessDenied,
            Operation::PutRecords,
            "User is not authorized",
        )
        .with_stream("orders")
        .with_region("eu-west-1")
        .with_code("AccessDeniedException");
        let text = e.to_string();
        assert!(text.starts_with("PutRecords on stream \"orders\" failed (access_denied, AccessDeniedException): User is not authorized."), "{text}");
        assert!(
            text.contains("kinesis:PutRecords on arn:aws:kinesis:eu-west-1:ACCOUNT:stream/orders"),
            "{text}"
        );
        let e = TransportError::new(
            ErrorKind::StreamNotFound,
            Operation::DescribeStreamSummary,
            "not found",
        )
        .with_stream("Orders")
        .with_region("us-east-1");
        assert!(
            e.to_string()
                .contains("no stream named \"Orders\" in region us-east-1"),
            "{e}"
        );
        assert!(e.to_string().contains("case-sensitive"));
    }
}
