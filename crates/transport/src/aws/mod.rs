//! The real sink: Amazon Kinesis through `aws-sdk-kinesis`.
//!
//! | file | what it does |
//! |---|---|
//! | `builder` | checks the settings and configures the SDK client ([`AwsKinesisSinkBuilder`]) |
//! | `credentials` | where credentials come from, and keeping secrets out of `Debug` ([`Credentials`], [`Secret`], [`AssumeRole`]) |
//! | `assumed_role` | the STS `AssumeRole` call behind a role, reported to the observer |
//! | `sink` | the calls, each reported to the observer once ([`AwsKinesisSink`]) |
//! | `convert` | our records, outcomes and stream description to and from the SDK's shapes |
//! | `sdk_errors` | sorts SDK errors into [`TransportError`](crate::TransportError)s by the service's code |
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
//!
//! [`RetryConfig::disabled`]: aws_config::retry::RetryConfig::disabled
//! [`CallObserver`]: crate::CallObserver

mod assumed_role;
mod builder;
mod convert;
mod credentials;
mod sdk_errors;
mod sink;

pub use builder::{AwsKinesisSinkBuilder, BuildError};
pub use credentials::{AssumeRole, Credentials, Secret};
pub use sink::AwsKinesisSink;
