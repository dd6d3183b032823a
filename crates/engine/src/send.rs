//! Stage 5, send: calls in flight, their outcomes, and retries.
//!
//! The [`Outbox`] takes records in model order, asks the [batcher](crate::batch) for calls,
//! keeps a bounded number of them in flight, and sorts each answer's records into
//! acknowledged (handed to the [commit](crate::commit) stage), retried after a
//! [backoff](crate::backoff), or given up (pending for the next run). A call that fails in a
//! way no retry can mend (access denied, stream gone) stops the outbox: what waits is left
//! pending, and the run reports the error.

use std::sync::Arc;
use std::time::Duration;

// tokio's clock, not std's: it is the one that paused test time moves.
use tokio::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use kinesync_transport::{
    ErrorKind, KinesisSink, PutRecord, RecordFailure, RecordOutcome, StreamName, TransportError,
};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::batch::{Batcher, Item};
use crate::commit;
use crate::error::Error;
use crate::progress::Progress;
use crate::store::SharedState;

/// How the outbox behaves; see [`crate::Limits`].
#[derive(Debug, Clone)]
pub(crate) struct OutboxConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) max_batch_records: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_attempts: u32,
    pub(crate) retry_time: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) seed: u64,
}

/// What the outbox counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct SendCounts {
    pub(crate) acknowledged: u64,
    pub(crate) retries: u64,
    pub(crate) throttled: u64,
    pub(crate) calls: u64,
    pub(crate) bytes: u64,
}

/// An item whose record is out in a call (the call holds the record itself).
struct Sent {
    seq: u64,
    change: kinesync_state::Change,
    attempts: u32,
    key: u128,
}

/// A call's answer, with its records handed back so that failed ones can be retried.
struct Done {
    records: Vec<PutRecord>,
    sent: Vec<Sent>,
    bytes: usize,
    result: Result<Vec<RecordOutcome>, TransportError>,
}

/// Records on their way to the stream.
pub(crate) struct Outbox {
    sink: Arc<dyn KinesisSink>,
    stream: StreamName,
    config: OutboxConfig,
    batcher: Batcher,
    backoff: Backoff,
    /// Each call is a task of its own, so that it goes on while the run's loop waits for the
    /// state store or the build threads.
    in_flight: FuturesUnordered<JoinHandle<Done>>,
    started: Instant,
    /// Records that arrived after the outbox stopped: pending.
    refused: u64,
    /// Nothing new goes out ([`abandon`](Self::abandon)).
    abandoned: bool,
    /// The error that stopped sending, if one did.
    stopped: Option<TransportError>,
    pub(crate) counts: SendCounts,
    progress: Arc<Progress>,
}

impl Outbox {
    pub(crate) fn new(
        sink: Arc<dyn KinesisSink>,
        stream: StreamName,
        config: OutboxConfig,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            sink,
            stream,
            batcher: Batcher::new(config.max_batch_records, config.max_batch_bytes),
            backoff: Backoff::new(config.backoff_base, config.backoff_cap, config.seed),
            config,
            in_flight: FuturesUnordered::new(),
            started: Instant::now(),
            refused: 0,
            abandoned: false,
            stopped: None,
            counts: SendCounts::default(),
            progress,
        }
    }

    /// Queues a record behind everything queued before it.
    pub(crate) fn push(&mut self, item: Item) {
        if self.stopped.is_some() || self.abandoned {
            self.refused += 1;
        } else {
            self.batcher.push(item);
        }
    }

    /// Stops sending: what waits (queued, or for a retry) is left pending for the next run, and
    /// from now on records pushed are too; the calls in flight still finish.
    pub(crate) fn abandon(&mut self) {
        self.batcher.abandon();
        self.abandoned = true;
    }

    /// Records not acknowledged, and no longer on their way: pending for the next run.
    pub(crate) fn pending(&self) -> u64 {
        self.batcher.pending() + self.refused
    }

    /// The error that stopped the outbox, if any.
    pub(crate) fn stopped(&self) -> Option<&TransportError> {
        self.stopped.as_ref()
    }

    /// Sends until at most `limit` records wait (queued or for a retry).
    pub(crate) async fn drain_to(
        &mut self,
        limit: usize,
        store: &SharedState,
    ) -> Result<(), Error> {
        while self.batcher.backlog() > limit && self.stopped.is_none() {
            if !self.step(store).await? {
                break;
            }
        }
        Ok(())
    }

    /// Sends until nothing is left: all acknowledged, given up, or stopped. Whatever could not
    /// be sent stays pending for the next run.
    pub(crate) async fn finish(&mut self, store: &SharedState) -> Result<(), Error> {
        while self.step(store).await? {}
        self.batcher.abandon();
        Ok(())
    }

    /// Starts what can start, then waits for one completion or retry time. `false` when
    /// there is nothing left that this run can do.
    async fn step(&mut self, store: &SharedState) -> Result<bool, Error> {
        let sending = self.stopped.is_none() && !self.abandoned;
        if sending {
            self.launch();
        }
        // A retry falling due matters only if a call could start for it; otherwise wait for a
        // call to finish (waiting on a past due time would spin without ever yielding).
        let can_launch = sending && self.in_flight.len() < self.config.max_in_flight;
        let next_retry = self.batcher.next_due().filter(|_| can_launch);
        let done = match (self.in_flight.is_empty(), next_retry) {
            (true, None) => return Ok(false),
            (true, Some(due)) => {
                tokio::time::sleep_until(due).await;
                None
            }
            (false, Some(due)) => tokio::select! {
                done = self.in_flight.next() => done,
                () = tokio::time::sleep_until(due) => None,
            },
            (false, None) => self.in_flight.next().await,
        };
        let done = match done {
            None => return Ok(true),
            Some(Ok(done)) => done,
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(Err(_)) => return Err(Error::RuntimeStopped),
        };
        let acknowledged = self.complete(done);
        self.counts.acknowledged += acknowledged.len() as u64;
        if !acknowledged.is_empty() {
            crate::store::blocking(store, move |store| {
                Ok(commit::acknowledged(store, acknowledged)?)
            })
            .await?;
        }
        let c = &self.counts;
        self.progress
            .set_sent(c.acknowledged, c.throttled, c.retries, c.calls);
        Ok(true)
    }

    /// Starts calls while more may be in flight and records are ready.
    fn launch(&mut self) {
        while self.in_flight.len() < self.config.max_in_flight {
            let items = self.batcher.next_batch(Instant::now());
            if items.is_empty() {
                break;
            }
            let bytes = items.iter().map(|i| i.record.size()).sum();
            let (records, sent): (Vec<PutRecord>, Vec<Sent>) = items
                .into_iter()
                .map(|i| {
                    let sent = Sent {
                        seq: i.seq,
                        change: i.change,
                        attempts: i.attempts,
                        key: i.key,
                    };
                    (i.record, sent)
                })
                .unzip();
            let sink = self.sink.clone();
            let stream = self.stream.clone();
            self.in_flight.push(tokio::spawn(async move {
                let result = sink.put_records(&stream, &records).await;
                Done {
                    records,
                    sent,
                    bytes,
                    result,
                }
            }));
        }
    }

    fn retry_or_give_up(&mut self, mut item: Item) {
        item.attempts += 1;
        if self.abandoned
            || item.attempts >= self.config.max_attempts
            || self.started.elapsed() >= self.config.retry_time
        {
            self.batcher.give_up(item);
            return;
        }
        let due = Instant::now() + self.backoff.delay(item.attempts);
        self.counts.retries += 1;
        self.batcher.retry_at(item, due);
    }

    /// Sorts an answer's records into retried and given up, and returns the changes of the
    /// acknowledged ones, in the call's order, to commit.
    fn complete(&mut self, done: Done) -> Vec<kinesync_state::Change> {
        self.counts.calls += 1;
        self.counts.bytes += done.bytes as u64;
        let items: Vec<Item> = done
            .sent
            .into_iter()
            .zip(done.records)
            .map(|(s, record)| Item {
                seq: s.seq,
                record,
                change: s.change,
                attempts: s.attempts,
                key: s.key,
            })
            .collect();
        let mut acknowledged = Vec::new();
        match done.result {
            Ok(outcomes) => {
                for (item, outcome) in items.into_iter().zip(outcomes) {
                    match outcome {
                        RecordOutcome::Accepted { .. } => {
                            self.batcher.acknowledged(&item);
                            acknowledged.push(item.change);
                        }
                        RecordOutcome::Failed { failure, .. } => {
                            if failure == RecordFailure::Throttled {
                                self.counts.throttled += 1;
                            }
                            self.retry_or_give_up(item);
                        }
                    }
                }
            }
            Err(error) => {
                if error.is_retryable() {
                    if error.kind() == ErrorKind::Throttled {
                        self.counts.throttled += items.len() as u64;
                    }
                    for item in items {
                        self.retry_or_give_up(item);
                    }
                } else {
                    // Nothing more can go out: finish what is in flight, keep the rest pending.
                    for item in items {
                        self.batcher.give_up(item);
                    }
                    self.batcher.abandon();
                    self.stopped.get_or_insert(error);
                }
            }
        }
        acknowledged
    }
}
