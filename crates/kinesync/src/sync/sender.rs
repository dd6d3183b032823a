//! Sending records: batches within the stream's limits, a bounded number of calls in flight,
//! retries with capped exponential backoff and full jitter, and per-key order.
//!
//! **Per-key order.** A partition key is *owned* by at most one record at a time: the record
//! in flight, or waiting to be retried, holds it until the stream acknowledges it. Later
//! records with the same key wait in the queue, so no record overtakes an earlier one with the
//! same key: not while in flight (one per key per call, one call per key), and not across a
//! retry. A record that exhausts its retries keeps its key for the rest of the run, so the
//! records behind it wait too and stay pending: the next run sends them all, in model order.
//!
//! **Commits.** After each call, the changes of the records it got acknowledged are committed
//! to the state store in one transaction; nothing unacknowledged is ever committed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

// tokio's clock, not std's: it is the one that paused test time moves.
use tokio::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use kinesync_state::{Change, StateError, StateStore};
use kinesync_transport::{
    ErrorKind, KinesisSink, PutRecord, RecordFailure, RecordOutcome, StreamName, TransportError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::debug_log::{CallLine, DebugLog};
use super::hashed::{HashedMap, HashedSet};
use super::progress::Progress;

/// One record waiting to be sent, with what to commit once it is acknowledged.
#[derive(Debug)]
pub(crate) struct Item {
    /// Position in the run's order.
    seq: u64,
    record: PutRecord,
    change: Change,
    /// Failed attempts so far.
    attempts: u32,
    /// The partition key's XXH3-128: keys are owned by hash, so a record costs no key copy.
    key: u128,
}

impl Item {
    pub(crate) fn new(seq: u64, record: PutRecord, change: Change) -> Self {
        let key = xxhash_rust::xxh3::xxh3_128(record.partition_key.as_str().as_bytes());
        Self {
            seq,
            record,
            change,
            attempts: 0,
            key,
        }
    }
}

/// An item whose record is out in a call.
struct Sent {
    seq: u64,
    change: Change,
    attempts: u32,
    key: u128,
}

/// How the sender behaves; see [`crate::sync::Limits`].
#[derive(Debug, Clone)]
pub(crate) struct SenderConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) max_batch_records: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_attempts: u32,
    pub(crate) retry_time: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) seed: u64,
}

/// What the sender counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct SenderCounts {
    pub(crate) acknowledged: u64,
    pub(crate) pending: u64,
    pub(crate) retries: u64,
    pub(crate) throttled: u64,
    pub(crate) calls: u64,
    pub(crate) bytes: u64,
}

struct Done {
    /// The records, handed back by the call so that failed ones can be retried.
    records: Vec<PutRecord>,
    sent: Vec<Sent>,
    attempt: u32,
    bytes: usize,
    started: SystemTime,
    duration: Duration,
    result: Result<Vec<RecordOutcome>, TransportError>,
}

/// How far past records whose key is taken a batch looks for records it may send.
const SCAN_WINDOW: usize = 4096;

pub(crate) struct Sender {
    sink: Arc<dyn KinesisSink>,
    stream: StreamName,
    config: SenderConfig,
    queue: VecDeque<Item>,
    retries: BTreeMap<(Instant, u64), Item>,
    /// Partition key (hash) → the seq of the record that owns it.
    owners: HashedMap<u64>,
    /// Keys whose owner gave up: everything behind them stays pending.
    stranded: HashedSet,
    in_flight: FuturesUnordered<BoxFuture<'static, Done>>,
    rng: StdRng,
    started: Instant,
    /// The error that stopped sending, if one did.
    stopped: Option<TransportError>,
    pub(crate) counts: SenderCounts,
    progress: Arc<Progress>,
}

impl Sender {
    pub(crate) fn new(
        sink: Arc<dyn KinesisSink>,
        stream: StreamName,
        config: SenderConfig,
        progress: Arc<Progress>,
    ) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self {
            sink,
            stream,
            config,
            queue: VecDeque::new(),
            retries: BTreeMap::new(),
            owners: HashedMap::default(),
            stranded: HashedSet::default(),
            in_flight: FuturesUnordered::new(),
            rng,
            started: Instant::now(),
            stopped: None,
            counts: SenderCounts::default(),
            progress,
        }
    }

    /// Queues a record behind everything queued before it.
    pub(crate) fn push(&mut self, item: Item) {
        if self.stopped.is_some() {
            self.counts.pending += 1;
        } else {
            self.queue.push_back(item);
        }
    }

    /// Records queued or waiting for a retry.
    pub(crate) fn backlog(&self) -> usize {
        self.queue.len() + self.retries.len()
    }

    /// The error that stopped the sender, if any.
    pub(crate) fn stopped(&self) -> Option<&TransportError> {
        self.stopped.as_ref()
    }

    /// Sends until at most `limit` records wait (queued or for a retry).
    pub(crate) async fn drain_to(
        &mut self,
        limit: usize,
        store: &mut dyn StateStore,
        log: &mut DebugLog,
    ) -> Result<(), StateError> {
        while self.backlog() > limit && self.stopped.is_none() {
            if !self.step(store, log).await? {
                break;
            }
        }
        Ok(())
    }

    /// Sends until nothing is left: all acknowledged, given up, or stopped.
    pub(crate) async fn finish(
        &mut self,
        store: &mut dyn StateStore,
        log: &mut DebugLog,
    ) -> Result<(), StateError> {
        while self.step(store, log).await? {}
        // Whatever could not be sent stays pending for the next run.
        self.counts.pending += (self.queue.len() + self.retries.len()) as u64;
        self.queue.clear();
        self.retries.clear();
        Ok(())
    }

    /// Starts what can start, then waits for one completion or retry time. `false` when
    /// there is nothing left that this run can do.
    async fn step(
        &mut self,
        store: &mut dyn StateStore,
        log: &mut DebugLog,
    ) -> Result<bool, StateError> {
        if self.stopped.is_none() {
            self.launch();
        }
        // A retry falling due matters only if a call could start for it; otherwise wait for a
        // call to finish (waiting on a past due time would spin without ever yielding).
        let can_launch = self.stopped.is_none() && self.in_flight.len() < self.config.max_in_flight;
        let next_retry = self
            .retries
            .keys()
            .next()
            .map(|(due, _)| *due)
            .filter(|_| can_launch);
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
        if let Some(done) = done {
            self.complete(done, store, log)?;
        }
        Ok(true)
    }

    /// Starts batches while calls may be added and records are ready.
    fn launch(&mut self) {
        while self.in_flight.len() < self.config.max_in_flight {
            let batch = self.fill_batch();
            if batch.is_empty() {
                break;
            }
            let attempt = batch.iter().map(|i| i.attempts).max().unwrap_or(0) + 1;
            let (records, sent): (Vec<PutRecord>, Vec<Sent>) = batch
                .into_iter()
                .map(|i| {
                    (
                        i.record,
                        Sent {
                            seq: i.seq,
                            change: i.change,
                            attempts: i.attempts,
                            key: i.key,
                        },
                    )
                })
                .unzip();
            let bytes = records.iter().map(PutRecord::size).sum();
            let sink = self.sink.clone();
            let stream = self.stream.clone();
            self.in_flight.push(Box::pin(async move {
                let started = SystemTime::now();
                let clock = Instant::now();
                let result = sink.put_records(&stream, &records).await;
                Done {
                    records,
                    sent,
                    attempt,
                    bytes,
                    started,
                    duration: clock.elapsed(),
                    result,
                }
            }));
        }
    }

    /// The next batch: due retries first, then queued records in order, one record per key,
    /// within the call limits.
    fn fill_batch(&mut self) -> Vec<Item> {
        let now = Instant::now();
        let (max_records, max_bytes) = (self.config.max_batch_records, self.config.max_batch_bytes);
        let mut batch: Vec<Item> = Vec::new();
        let mut bytes = 0;
        while let Some(entry) = self.retries.first_entry() {
            let (due, _) = *entry.key();
            if due > now
                || batch.len() == max_records
                || bytes + entry.get().record.size() > max_bytes
            {
                break;
            }
            let item = entry.remove();
            bytes += item.record.size();
            batch.push(item);
        }
        let mut i = 0;
        let mut scanned = 0;
        while i < self.queue.len() && batch.len() < max_records && scanned < SCAN_WINDOW {
            let item = &self.queue[i];
            if self.owners.contains_key(&item.key) {
                if self.stranded.contains(&item.key) {
                    // Its key's owner gave up: it cannot go out this run without overtaking.
                    self.queue.remove(i);
                    self.counts.pending += 1;
                } else {
                    i += 1;
                    scanned += 1;
                }
                continue;
            }
            if bytes + item.record.size() > max_bytes {
                break;
            }
            let item = self.queue.remove(i).expect("index is in range");
            self.owners.insert(item.key, item.seq);
            bytes += item.record.size();
            batch.push(item);
        }
        batch
    }

    /// Full-jitter backoff: uniform in [0, min(cap, base · 2^(attempts-1))].
    fn backoff(&mut self, attempts: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let ceiling = exp.min(self.config.backoff_cap);
        ceiling.mul_f64(self.rng.random::<f64>())
    }

    fn retry_or_give_up(&mut self, mut item: Item) {
        item.attempts += 1;
        if item.attempts >= self.config.max_attempts
            || self.started.elapsed() >= self.config.retry_time
        {
            self.stranded.insert(item.key);
            self.counts.pending += 1;
            return;
        }
        let due = Instant::now() + self.backoff(item.attempts);
        self.counts.retries += 1;
        self.retries.insert((due, item.seq), item);
    }

    fn complete(
        &mut self,
        done: Done,
        store: &mut dyn StateStore,
        log: &mut DebugLog,
    ) -> Result<(), StateError> {
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
        let mut line = CallLine::put_records(
            &self.stream,
            done.started,
            done.duration,
            done.attempt,
            items.len(),
            done.bytes,
        );
        if log.wants_payloads() {
            line.payloads = Some(
                items
                    .iter()
                    .map(|i| String::from_utf8_lossy(&i.record.data).into_owned())
                    .collect(),
            );
        }
        let mut acknowledged = Vec::new();
        match done.result {
            Ok(outcomes) => {
                for (item, outcome) in items.into_iter().zip(outcomes) {
                    match outcome {
                        RecordOutcome::Accepted { .. } => {
                            self.owners.remove(&item.key);
                            acknowledged.push(item.change);
                        }
                        RecordOutcome::Failed { failure, .. } => {
                            *line
                                .record_errors
                                .entry(failure.code().to_owned())
                                .or_default() += 1;
                            if failure == RecordFailure::Throttled {
                                self.counts.throttled += 1;
                            }
                            self.retry_or_give_up(item);
                        }
                    }
                }
            }
            Err(error) => {
                line.failed(&error);
                if error.is_retryable() {
                    if error.kind() == ErrorKind::Throttled {
                        self.counts.throttled += items.len() as u64;
                    }
                    for item in items {
                        self.retry_or_give_up(item);
                    }
                } else {
                    // Nothing more can go out: finish what is in flight, keep the rest pending.
                    self.counts.pending += items.len() as u64;
                    self.counts.pending += (self.queue.len() + self.retries.len()) as u64;
                    self.queue.clear();
                    self.retries.clear();
                    self.stopped.get_or_insert(error);
                }
            }
        }
        log.write(&line);
        if !acknowledged.is_empty() {
            self.counts.acknowledged += acknowledged.len() as u64;
            store.commit(acknowledged)?;
        }
        let c = &self.counts;
        self.progress
            .set_sent(c.acknowledged, c.throttled, c.retries, c.calls);
        Ok(())
    }
}
