//! Injected faults around any sink: what the service does on a bad day, on demand.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{
    ErrorKind, KinesisSink, Operation, PutRecord, RecordFailure, RecordOutcome, StreamDescription,
    StreamName, TransportError, complete_through,
};

/// What happens to one `PutRecords` call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// The call goes through untouched.
    Pass,
    /// These records (by index in the call) fail with these codes; the rest go through.
    FailRecords(Vec<(usize, RecordFailure)>),
    /// The call fails as a whole, before reaching the stream.
    CallError(ErrorKind),
    /// The call reaches the stream and its records land, but the answer is lost: the caller
    /// sees a timeout. This is the one case where re-sending makes duplicates.
    LostAnswer,
    /// The answer comes late.
    Delay(Duration),
}

/// Fault rates for a seeded random source; each call draws its fault independently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomFaults {
    /// Chance that one record fails with `ProvisionedThroughputExceededException`.
    pub record_throttle: f64,
    /// Chance that one record fails with `InternalFailure`.
    pub record_internal_failure: f64,
    /// Chance that a call fails as a whole (throttled or transient, evenly).
    pub call_error: f64,
    /// Chance that a call lands but its answer is lost.
    pub lost_answer: f64,
    /// Each call is delayed by up to this long.
    pub max_delay: Duration,
}

impl Default for RandomFaults {
    fn default() -> Self {
        Self {
            record_throttle: 0.0,
            record_internal_failure: 0.0,
            call_error: 0.0,
            lost_answer: 0.0,
            max_delay: Duration::ZERO,
        }
    }
}

enum Plan {
    Script(VecDeque<Fault>),
    Random(Box<StdRng>, RandomFaults),
}

/// Wraps a sink with faults on `put_records`: scripted call by call, or drawn from a seeded
/// random source so that a failing case replays from its seed. `describe_stream` and
/// `list_streams` pass through.
pub struct FaultySink<S> {
    inner: S,
    plan: Mutex<Plan>,
}

impl<S: fmt::Debug> fmt::Debug for FaultySink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultySink")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: fmt::Display> fmt::Display for FaultySink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (with injected faults)", self.inner)
    }
}

impl<S: KinesisSink> FaultySink<S> {
    /// Calls meet `faults` in order; once they run out, calls pass.
    pub fn scripted(inner: S, faults: impl IntoIterator<Item = Fault>) -> Self {
        Self {
            inner,
            plan: Mutex::new(Plan::Script(faults.into_iter().collect())),
        }
    }

    /// Calls meet faults drawn from `seed` at `rates`.
    pub fn random(inner: S, seed: u64, rates: RandomFaults) -> Self {
        Self {
            inner,
            plan: Mutex::new(Plan::Random(Box::new(StdRng::seed_from_u64(seed)), rates)),
        }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Adds faults to the end of a script (no effect on a random plan).
    pub fn push(&self, fault: Fault) {
        if let Plan::Script(script) = &mut *self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            script.push_back(fault);
        }
    }

    /// This call's fault (and, for a random plan, its delay).
    fn next_fault(&self, records: usize) -> (Fault, Duration) {
        let mut plan = self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut *plan {
            Plan::Script(script) => (script.pop_front().unwrap_or(Fault::Pass), Duration::ZERO),
            Plan::Random(rng, rates) => {
                let delay = if rates.max_delay.is_zero() {
                    Duration::ZERO
                } else {
                    rates.max_delay.mul_f64(rng.random::<f64>())
                };
                let fault = if rng.random_bool(rates.call_error.clamp(0.0, 1.0)) {
                    Fault::CallError(if rng.random_bool(0.5) {
                        ErrorKind::Throttled
                    } else {
                        ErrorKind::Transient
                    })
                } else if rng.random_bool(rates.lost_answer.clamp(0.0, 1.0)) {
                    Fault::LostAnswer
                } else {
                    let failed: Vec<(usize, RecordFailure)> = (0..records)
                        .filter_map(|i| {
                            if rng.random_bool(rates.record_throttle.clamp(0.0, 1.0)) {
                                Some((i, RecordFailure::Throttled))
                            } else if rng.random_bool(rates.record_internal_failure.clamp(0.0, 1.0))
                            {
                                Some((i, RecordFailure::InternalFailure))
                            } else {
                                None
                            }
                        })
                        .collect();
                    if failed.is_empty() {
                        Fault::Pass
                    } else {
                        Fault::FailRecords(failed)
                    }
                };
                (fault, delay)
            }
        }
    }
}

fn call_error(kind: ErrorKind, stream: &StreamName) -> TransportError {
    let (code, message) = match kind {
        ErrorKind::Throttled => (
            "ProvisionedThroughputExceededException",
            "Rate exceeded for stream (injected)",
        ),
        ErrorKind::Transient => ("InternalFailure", "injected service failure"),
        ErrorKind::AccessDenied => ("AccessDeniedException", "injected access denial"),
        ErrorKind::StreamNotFound => ("ResourceNotFoundException", "injected: stream not found"),
        _ => ("InjectedFault", "injected failure"),
    };
    TransportError::new(kind, Operation::PutRecords, message)
        .with_stream(stream.as_str())
        .with_code(code)
}

#[async_trait]
impl<S: KinesisSink> KinesisSink for FaultySink<S> {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let (mut fault, mut delay) = self.next_fault(records.len());
        if let Fault::Delay(d) = fault {
            delay += d;
            fault = Fault::Pass;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fault {
            Fault::Pass | Fault::Delay(_) => self.inner.put_records(stream, records).await,
            Fault::CallError(kind) => Err(call_error(kind, stream)),
            Fault::LostAnswer => {
                self.inner.put_records(stream, records).await?;
                Err(TransportError::new(
                    ErrorKind::Transient,
                    Operation::PutRecords,
                    "timed out waiting for the answer (injected; the records landed)",
                )
                .with_stream(stream.as_str()))
            }
            Fault::FailRecords(failed) => {
                let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
                for (i, failure) in failed {
                    if i < records.len() {
                        let message = match failure {
                            RecordFailure::Throttled => {
                                "Rate exceeded for shard (injected)".to_owned()
                            }
                            _ => "Internal service failure (injected)".to_owned(),
                        };
                        outcomes[i] = Some(RecordOutcome::Failed { failure, message });
                    }
                }
                complete_through(&self.inner, stream, records, outcomes).await
            }
        }
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
