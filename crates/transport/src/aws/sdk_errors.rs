//! Sorting the SDK's errors into [`TransportError`]s.
//!
//! A failure is sorted by the SDK's typed variant and, when the service answered, by its
//! error code; never by message text, which the service may reword at any time. Credentials
//! failures are found by type anywhere in the error's chain, since the SDK wraps them.

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::RequestId;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::{ErrorKind, Operation, TransportError};

/// Sorts an SDK error into a [`TransportError`] by its typed variant and the service's error
/// code (never by message text); also gives the HTTP status, when there was an answer.
/// `credentials` says where credentials were looked for ([`Credentials::describe_source`]),
/// never what they are.
///
/// [`Credentials::describe_source`]: crate::Credentials::describe_source
pub(super) fn map_sdk_error<E>(
    err: SdkError<E, HttpResponse>,
    operation: Operation,
    credentials: &str,
    host: &str,
    role: Option<&str>,
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
            no_credentials(credentials, role, &err),
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
                    "the connection failed (the host name did not resolve, or the host refused, reset or closed the connection)",
                )
            };
            // What the network said, as the connector reported it (a DNS failure, a refused
            // connection): shown as it is, never parsed.
            let said = failure
                .as_connector_error()
                .map(|e| format!(": {}", chain(e)))
                .unwrap_or_default();
            TransportError::new(kind, operation, format!("{host}: {what}{said}"))
        }
        SdkError::ResponseError(context) => {
            let status = context.raw().status().as_u16();
            match status {
                // The service took the request and said it went well, but its answer cannot
                // be read: what it did is unknown (a PutRecords' records are in doubt), and
                // asking again is how to know.
                200..=299 => TransportError::new(
                    ErrorKind::Transient,
                    operation,
                    format!(
                        "unreadable answer with HTTP {status}: what the call did is in doubt, so it is made again"
                    ),
                ),
                _ => TransportError::new(
                    ErrorKind::from_http_status(status),
                    operation,
                    format!("unreadable answer with HTTP {status}"),
                ),
            }
        }
        _ if has_credentials_error(&err) => TransportError::new(
            ErrorKind::Credentials,
            operation,
            no_credentials(credentials, role, &err),
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

/// What failed when no credentials could be had: the base credentials, or (with a role to
/// assume) STS's `AssumeRole` of that role on top of them; and why.
fn no_credentials(
    credentials: &str,
    role: Option<&str>,
    err: &(dyn std::error::Error + 'static),
) -> String {
    let reason = credentials_reason(err);
    match role {
        Some(role) => format!(
            "STS AssumeRole of role {role} failed (the base credentials: {credentials}){reason}; check the role's trust policy (and external ID) and that the base credentials may assume it"
        ),
        None => format!("no usable credentials; looked in {credentials}{reason}"),
    }
}

/// An error and its sources, as one line: `a: b: c`, each said once.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Why the credentials provider failed, from its typed error and what it wraps (a profile
/// that is not defined, STS refusing a role): `: ...`, or nothing. A part that mentions a
/// secret or has a `=` in it (a line of a credentials file) is left out: what the user reads
/// never holds a key.
fn credentials_reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            let parts: Vec<String> = chain(e)
                .split(": ")
                .filter(|part| {
                    let lower = part.to_ascii_lowercase();
                    !lower.contains("secret") && !part.contains('=')
                })
                .map(str::to_owned)
                .collect();
            return if parts.is_empty() {
                String::new()
            } else {
                format!(": {}", parts.join(": "))
            };
        }
        current = e.source();
    }
    String::new()
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
