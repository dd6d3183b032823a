//! The STS call behind an assumed role, reported to the observer like every other call.
//!
//! The SDK asks the role's provider for credentials when its cache has none (the first call,
//! and again before they expire); each time is one `AssumeRole` call to STS. Wrapping the
//! provider is the one place that sees it: the Kinesis calls only see the credentials.

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, future};
// tokio's clock: the one paused test time moves.
use tokio::time::Instant;

use crate::{CallFailure, CallObserver, CallRecord, ErrorKind, Operation};

/// A credentials provider whose every answer is reported as an `AssumeRole` call.
#[derive(Debug)]
pub(super) struct ObservedAssumeRole<P> {
    pub(super) inner: P,
    pub(super) observer: Arc<dyn CallObserver>,
}

impl<P: ProvideCredentials> ProvideCredentials for ObservedAssumeRole<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let (started, clock) = (SystemTime::now(), Instant::now());
            let result = self.inner.provide_credentials().await;
            let mut call = CallRecord::new(Operation::AssumeRole, None, started);
            call.duration = clock.elapsed();
            if let Err(error) = &result {
                // The SDK's credentials error says what STS refused; it never carries a
                // secret (the base key's secret is not part of any error it makes).
                call.error = Some(CallFailure {
                    kind: ErrorKind::Credentials,
                    code: None,
                    message: error.to_string(),
                });
            }
            self.observer.on_call(&call, &[]);
            result
        })
    }
}
