//! Stage 5, send: calls in flight, their outcomes, and retries, paced to the stream.
//!
//! The [`Outbox`] takes records in model order, asks the [batcher](crate::batch) for calls
//! within each shard's budget ([`crate::pace`]), keeps a bounded number of them in flight, and
//! sorts each answer's records into acknowledged (handed to the [commit](crate::commit)
//! stage), throttled (back to their lane, and their shard's rate lowered), retried after a
//! [backoff](crate::backoff) (another failure), or given up (pending for the next run).
//!
//! - **Full calls.** A call that is not full waits for [`MIN_CALL_INTERVAL`] after the last
//!   one, so that records trickling in as budgets refill go out together.
//! - **A failing endpoint.** A call that fails as a whole (a 5xx, a timeout, a dropped
//!   connection) puts its records back in their lanes and holds every call back for one
//!   growing backoff: one timer for the sender, not one per record, and one call at a time
//!   until one gets through. After `max_attempts` such calls in a row the run stops, with the
//!   last failure as its error.
//! - **The retry budget counts time without progress.** A run that keeps getting records
//!   acknowledged keeps going, however long the backfill; one that gets nothing acknowledged
//!   for `retry_time` stops, with the last failure as its error.
//!
//! A call that fails in a way no retry can mend (access denied, stream gone) stops the outbox
//! too: what waits is left pending, and the run reports the error.

use std::sync::Arc;
use std::time::Duration;

// tokio's clock, not std's: it is the one that paused test time moves.
use tokio::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use kinesync_keys::{HashKey, ShardMap};
use kinesync_transport::{
    ErrorKind, KinesisSink, PutRecord, RecordOutcome, StreamName, TransportError,
};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::batch::{Batcher, Item, Unit};
use crate::commit;
use crate::error::Error;
use crate::pace::{Ceiling, Pacer, ShardStats};
use crate::progress::Progress;
use crate::store::SharedState;

mod outcomes;

/// How long a call that is not full waits after the last call: long enough for budgets to
/// refill by a tenth of a second's worth, short enough not to leave the stream idle.
pub(crate) const MIN_CALL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls of one record refused as invalid in a row before the run stops: by then the stream
/// refuses every call, not one record.
const MAX_REFUSED_IN_A_ROW: u32 = 10;

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
    /// The most each shard is sent.
    pub(crate) ceiling: Ceiling,
    /// Records of a shard are packed into aggregated records of at most this size.
    pub(crate) aggregate_max_bytes: Option<usize>,
}

/// What the outbox counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct SendCounts {
    /// User records acknowledged.
    pub(crate) acknowledged: u64,
    /// Kinesis records acknowledged: as many as user records, unless they were aggregated.
    pub(crate) kinesis_records: u64,
    /// User records acknowledged inside aggregated records.
    pub(crate) aggregated: u64,
    /// Bytes (data plus partition key) of the Kinesis records acknowledged.
    pub(crate) acknowledged_bytes: u64,
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
    hash: HashKey,
    shard: usize,
    sent_after: u32,
    alone: bool,
}

/// What one Kinesis record of a call carries.
enum Out {
    /// A user record (the call holds its record).
    Single(Sent),
    /// The user records of an aggregate (the call holds the aggregate).
    Packed(Vec<Item>),
}

/// A call's answer, with its records handed back so that failed ones can be retried.
struct Done {
    records: Vec<PutRecord>,
    sent: Vec<Out>,
    bytes: usize,
    result: Result<Vec<RecordOutcome>, TransportError>,
}

/// Records on their way to the stream.
pub(crate) struct Outbox {
    sink: Arc<dyn KinesisSink>,
    stream: StreamName,
    /// The stream's open shards, as last read: which lane and budget each record takes.
    map: ShardMap,
    /// An answer put a record on a shard the map did not predict (the stream was resharded):
    /// the map is read again before the next call.
    map_stale: bool,
    config: OutboxConfig,
    batcher: Batcher,
    pacer: Pacer,
    backoff: Backoff,
    /// Each call is a task of its own, so that it goes on while the run's loop waits for the
    /// state store or the build threads.
    in_flight: FuturesUnordered<JoinHandle<Done>>,
    /// When a record was last acknowledged (or the outbox started).
    progress_at: Instant,
    /// When the last call went out.
    launched_at: Option<Instant>,
    /// No call goes out before this: the sender's backoff after calls that failed whole.
    held_until: Option<Instant>,
    /// Calls in a row that failed whole.
    failed_calls: u32,
    /// The last failure, for the error of a run that stops for lack of progress.
    last_failure: Option<TransportError>,
    /// No more records will be pushed: a call need not wait to be full.
    finishing: bool,
    /// Marks of queued records were committed to the state and may not be written yet: the
    /// next call waits until they are (see [`Outbox::marks_queued`]).
    marks_unwritten: bool,
    /// Aggregates the stream put on a shard other than the one they were packed for (the
    /// shard map was stale): the shard it named, and their records, settled once the map is
    /// read again (see [`Outbox::settle_misplaced`]).
    misplaced: Vec<(String, Vec<Item>)>,
    /// Records that arrived after the outbox stopped: pending.
    refused: u64,
    /// What the run should say once, in its summary (a call size lowered for the endpoint).
    pub(crate) notes: Vec<String>,
    /// Records the stream refused as invalid, alone in their call: (primary key, why), for
    /// the report's row errors.
    pub(crate) refused_rows: Vec<(String, String)>,
    /// Calls of one record refused as invalid in a row: past a few, the stream refuses every
    /// call, not one record, and the run stops.
    refused_in_a_row: u32,
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
        map: ShardMap,
        progress: Arc<Progress>,
    ) -> Self {
        let now = Instant::now();
        Self {
            sink,
            stream,
            batcher: Batcher::new(
                config.max_batch_records,
                config.max_batch_bytes,
                map.len(),
                config.aggregate_max_bytes,
            ),
            pacer: Pacer::new(map.len(), config.ceiling, now),
            map,
            map_stale: false,
            backoff: Backoff::new(config.backoff_base, config.backoff_cap, config.seed),
            config,
            in_flight: FuturesUnordered::new(),
            progress_at: now,
            launched_at: None,
            held_until: None,
            failed_calls: 0,
            last_failure: None,
            finishing: false,
            marks_unwritten: false,
            misplaced: Vec::new(),
            refused: 0,
            notes: Vec::new(),
            refused_rows: Vec::new(),
            refused_in_a_row: 0,
            abandoned: false,
            stopped: None,
            counts: SendCounts::default(),
            progress,
        }
    }

    /// Queues record `seq` (what it commits once acknowledged: `change`) behind everything
    /// queued before it, in the lane of the shard it goes to.
    pub(crate) fn push(&mut self, seq: u64, record: PutRecord, change: kinesync_state::Change) {
        let hash = HashKey::for_record(&record.partition_key, record.explicit_hash_key);
        let item = Item::new(seq, record, change, hash, self.map.index_for(hash));
        if self.stopped.is_some() || self.abandoned {
            self.refused += 1;
            return;
        }
        if self.batcher.backlog() == 0 && self.in_flight.is_empty() {
            // Time without progress counts only while records wait.
            self.progress_at = Instant::now();
        }
        self.batcher.push(item);
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
        self.finishing = true;
        while self.step(store).await? {}
        self.batcher.abandon();
        Ok(())
    }

    /// Tells the progress counters what the stream takes, what it is paced at, and how much
    /// of the load the busiest shard has.
    fn show_pacing(&self) {
        let stats = self.pacer.stats();
        let ceiling = self.config.ceiling.records_per_second;
        // What a shard takes a second, in rows: its records (times the rows per Kinesis
        // record, aggregated), or as many rows as its bytes hold, whichever is fewer, as
        // measured on what was acknowledged so far.
        let c = &self.counts;
        let per_shard = if c.kinesis_records > 0 {
            let rows_per_record = c.acknowledged as f64 / c.kinesis_records as f64;
            let bytes_per_row = c.acknowledged_bytes as f64 / c.acknowledged.max(1) as f64;
            (ceiling * rows_per_record)
                .min(self.config.ceiling.bytes_per_second / bytes_per_row.max(1.0))
        } else {
            ceiling
        };
        let capacity = if per_shard.is_finite() {
            (per_shard * stats.len() as f64) as u64
        } else {
            0
        };
        let paced: f64 = stats
            .iter()
            .map(|s| s.rate.min(ceiling) / ceiling * per_shard)
            .sum();
        let taken: u64 = stats.iter().map(|s| s.taken).sum();
        let busiest = stats.iter().map(|s| s.taken).max().unwrap_or(0);
        let permille = (busiest * 1000).checked_div(taken).unwrap_or(0);
        self.progress.set_pacing(
            capacity,
            if paced.is_finite() { paced as u64 } else { 0 },
            permille,
        );
    }

    /// Records were marked in doubt in the state: no call goes out before the marks are
    /// written, so that whatever happens to a call, the next run knows its records may have
    /// landed.
    pub(crate) fn marks_queued(&mut self) {
        self.marks_unwritten = true;
    }

    /// The largest aggregate, when records are packed.
    pub(crate) fn aggregate_max_bytes(&self) -> Option<usize> {
        self.config.aggregate_max_bytes
    }

    /// The stream's open shards, as last read.
    pub(crate) fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// Reads the shard map again after an answer showed it changed, and moves every waiting
    /// record to its shard's lane in the new map; shards that stayed keep their budgets, new
    /// ones start with full buckets, as the service's do. A map that cannot be read now is
    /// read again after the next answer.
    async fn reread_map(&mut self) {
        self.map_stale = false;
        let Ok(description) = self.sink.describe_stream(&self.stream).await else {
            return;
        };
        if description.shards == self.map {
            return;
        }
        let map = description.shards;
        let old: Vec<String> = self
            .map
            .shards()
            .iter()
            .map(|s| s.id().to_owned())
            .collect();
        let new: Vec<String> = map.shards().iter().map(|s| s.id().to_owned()).collect();
        self.pacer.remap(&old, &new, Instant::now());
        self.batcher.remap(map.len(), |hash| map.index_for(hash));
        self.map = map;
    }

    /// Each shard's counts so far.
    pub(crate) fn shard_stats(&self) -> Vec<ShardStats> {
        self.pacer.stats()
    }

    /// Starts what can start, then waits for one completion, or until a call can start.
    /// `false` when there is nothing left that this run can do.
    async fn step(&mut self, store: &SharedState) -> Result<bool, Error> {
        let sending = self.stopped.is_none() && !self.abandoned;
        if sending {
            self.stop_without_progress();
        }
        let sending = self.stopped.is_none() && !self.abandoned;
        if sending && self.map_stale {
            self.reread_map().await;
        }
        if !self.misplaced.is_empty() {
            let acknowledged = self.settle_misplaced();
            self.commit(acknowledged, store).await?;
        }
        if sending && self.marks_unwritten && self.may_launch(Instant::now()) {
            crate::store::blocking(store, |s| Ok(s.flush()?)).await?;
            self.marks_unwritten = false;
        }
        if sending {
            self.launch();
        }
        // When a call could start, if one may: waiting on a past time would spin without
        // ever yielding, so only a time ahead counts.
        let now = Instant::now();
        let max_in_flight = if self.failed_calls > 0 {
            1
        } else {
            self.config.max_in_flight
        };
        let can_launch = sending && self.in_flight.len() < max_in_flight;
        let wake = if can_launch {
            self.next_launch(now)
        } else {
            None
        };
        let done = match (self.in_flight.is_empty(), wake) {
            (true, None) => return Ok(false),
            (true, Some(at)) => {
                tokio::time::sleep_until(at).await;
                None
            }
            (false, Some(at)) => tokio::select! {
                done = self.in_flight.next() => done,
                () = tokio::time::sleep_until(at) => None,
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
        self.commit(acknowledged, store).await?;
        let c = &self.counts;
        self.progress
            .set_sent(c.acknowledged, c.throttled, c.retries, c.calls);
        self.show_pacing();
        Ok(true)
    }

    /// Commits what the stream acknowledged.
    async fn commit(
        &mut self,
        acknowledged: Vec<kinesync_state::Change>,
        store: &SharedState,
    ) -> Result<(), Error> {
        self.counts.acknowledged += acknowledged.len() as u64;
        if !acknowledged.is_empty() {
            crate::store::blocking(store, move |store| {
                Ok(commit::acknowledged(store, acknowledged)?)
            })
            .await?;
        }
        Ok(())
    }

    /// When the next call could start, after `now`: when the sender's backoff ends, a shard
    /// has budget or a retry falls due, and (for a call that would not be full) the interval
    /// since the last call has passed. `None` when nothing waits.
    fn next_launch(&mut self, now: Instant) -> Option<Instant> {
        let ready = self.batcher.ready_at(&mut self.pacer, now)?;
        let mut at = ready.max(self.held_until.unwrap_or(now));
        if let (Some(last), Some(_)) = (self.launched_at, self.config.aggregate_max_bytes) {
            // Aggregating, a call is worth making at once when it carries a whole aggregate;
            // otherwise it waits for the interval, as budgets refill.
            let after_interval = at.max(last + MIN_CALL_INTERVAL);
            let full = self
                .batcher
                .full_aggregate_at(&mut self.pacer, now, self.finishing);
            at = full.map_or(after_interval, |full| after_interval.min(full.max(at)));
        } else if let Some(last) = self.launched_at {
            // A call that would not be full (nor take everything left at the end) waits for
            // the interval; past it, whatever the budgets allow goes.
            let room = self.batcher.room(&mut self.pacer, at);
            let takes_the_rest = (self.finishing && room >= self.batcher.backlog())
                || room >= self.batcher.ready_records(at);
            if room < self.config.max_batch_records && !takes_the_rest {
                at = at.max(last + MIN_CALL_INTERVAL);
            }
        }
        Some(at.max(now + Duration::from_millis(1)))
    }

    /// Whether a call may start now: not during the sender's backoff, and (unless it would
    /// be full, or no more records are coming) not within the interval since the last one.
    fn may_launch(&mut self, now: Instant) -> bool {
        if self.held_until.is_some_and(|until| now < until) {
            return false;
        }
        let room = self.batcher.room(&mut self.pacer, now);
        if room == 0 {
            return false;
        }
        let interval_passed = self
            .launched_at
            .is_none_or(|last| now.saturating_duration_since(last) >= MIN_CALL_INTERVAL);
        if self.config.aggregate_max_bytes.is_some() {
            return interval_passed
                || self
                    .batcher
                    .full_aggregate_at(&mut self.pacer, now, self.finishing)
                    .is_some_and(|at| at <= now);
        }
        // At the end, a call that takes everything left need not wait to be full.
        room >= self.config.max_batch_records
            || (self.finishing && room >= self.batcher.backlog())
            || room >= self.batcher.ready_records(now)
            || interval_passed
    }

    /// Ends sending when nothing was acknowledged for `retry_time` while records wait: a dead
    /// endpoint, or a stream that refuses everything.
    fn stop_without_progress(&mut self) {
        let now = Instant::now();
        if self.batcher.backlog() == 0
            || now.saturating_duration_since(self.progress_at) < self.config.retry_time
        {
            return;
        }
        let seconds = self.config.retry_time.as_secs();
        let error = match &self.last_failure {
            Some(last) => TransportError::new(
                last.kind(),
                kinesync_transport::Operation::PutRecords,
                format!(
                    "the stream acknowledged no record for {seconds} s (retry_seconds), so the run stopped; the last failure: {}",
                    last.message()
                ),
            ),
            None => TransportError::new(
                ErrorKind::Throttled,
                kinesync_transport::Operation::PutRecords,
                format!(
                    "the stream acknowledged no record for {seconds} s (retry_seconds), throttling every one, so the run stopped"
                ),
            ),
        };
        self.batcher.abandon();
        self.stopped = Some(error);
    }

    /// Starts calls while more may be in flight and records are ready. After calls that
    /// failed whole, one call at a time goes out, until one succeeds.
    fn launch(&mut self) {
        let max_in_flight = if self.failed_calls > 0 {
            1
        } else {
            self.config.max_in_flight
        };
        while self.in_flight.len() < max_in_flight {
            let now = Instant::now();
            if !self.may_launch(now) {
                break;
            }
            let units = self.batcher.next_batch(now, &mut self.pacer);
            if units.is_empty() {
                break;
            }
            self.launched_at = Some(now);
            let bytes = units.iter().map(Unit::size).sum();
            let (records, sent): (Vec<PutRecord>, Vec<Out>) = units
                .into_iter()
                .map(|unit| match unit {
                    Unit::Single(i) => {
                        let sent = Sent {
                            seq: i.seq,
                            change: i.change,
                            attempts: i.attempts,
                            key: i.key,
                            hash: i.hash,
                            shard: i.shard,
                            sent_after: i.sent_after,
                            alone: i.alone,
                        };
                        (i.record, Out::Single(sent))
                    }
                    Unit::Packed { record, items } => (record, Out::Packed(items)),
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
}
