//! One run, from the first call to the report: the loop that moves rows through the stages.
//!
//! 1. **Describe** the stream once: its open shards (for the default number of calls in
//!    flight) and its maximum record size.
//! 2. **Read the model in chunks** of prepared rows ([`crate::prepare`]). For each chunk: note
//!    its keys, [diff](crate::diff) it against the state, hand the rows whose event the
//!    trigger sends to the [build](crate::build) threads, queue what they built in model
//!    order, and [send](crate::send) until the backlog is within bounds (the reader waits
//!    meanwhile).
//! 3. **Duplicate and removed keys**, once the whole model has been read (and only then: a run
//!    that stopped early, or could not read every row, does not know what is gone).
//! 4. **Drain** the outbox, then [commit](crate::commit) the end of the run.
//!
//! What is not acknowledged by the end (still throttled, a row error, a call that failed) is
//! not committed, so the next run finds those rows again and sends them.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kinesync_keys::ShardMap;
use kinesync_payload::Event;
use kinesync_source::Locator;
use kinesync_state::{Change, Doubt, Unanswered};
use kinesync_transport::{ErrorKind, PutRecord, StreamDescription};

use crate::backoff::Backoff;
use crate::build::{BuildPool, Built, BuiltRow, ToBuild};
use crate::codec::RowCodec;
use crate::commit;
use crate::definition::{Definition, SyncChange};
use crate::diff::{DiffContext, Duplicate, Gone, Listed, ModelKeys, diff_chunk, report_unreadable};
use crate::engine::Settings;
use crate::error::Error;
use crate::estimate::Estimate;
use crate::pace::Ceiling;
use crate::prepare::{Prepared, Read};
use crate::report::{Outcome, Packing, RunReport, ShardReport};
use crate::send::{Outbox, OutboxConfig};
use crate::settings::Initial;
use crate::store::{SharedState, blocking};
use crate::watermark;

mod removed;

/// How a run's rows were diffed.
pub(crate) enum Delta {
    /// The whole model, by kinesync.
    Whole,
    /// Where the model lives: only the rows that may need sending, and the keys gone; after
    /// them, the mark to keep if the run completes ([`DeltaSource::watermark`]).
    ///
    /// [`DeltaSource::watermark`]: kinesync_source::DeltaSource::watermark
    Diffed {
        /// How many keys the state holds, when the diff knows it.
        state_keys: Option<u64>,
    },
}

/// Why the model phase stopped early.
enum Stop {
    /// A primary key read twice.
    Duplicate(Duplicate),
    /// The stream refused calls in a way retrying cannot mend.
    Transport,
    /// The run was asked to stop.
    Interrupted,
}

/// The state of one run: what it was built with, what it has counted, and where its records
/// are.
pub(crate) struct Run<'e> {
    settings: &'e Settings,
    state: SharedState,
    /// How chunks are compared with the state, and stored rows read back.
    diff: Arc<DiffContext>,
    /// Where the rows come from, when known (for errors that name a line).
    locator: Option<Locator>,
    report: RunReport,
    outbox: Outbox,
    shards: ShardMap,
    /// The largest record the stream and a call take.
    max_record_bytes: usize,
    /// A dry run's tally of what it would send.
    estimate: Estimate,
    /// The last record's place in the run's order.
    seq: u64,
    /// Rows in the state as the run started.
    state_rows: u64,
    /// Rows of the model whose key the state has.
    state_rows_in_model: u64,
    /// Keys of records queued since the last send, to mark in doubt before any goes out.
    to_mark: Vec<Change>,
    /// The run's id, as templates see it (`record.run_id`).
    run_id: Arc<str>,
    /// Set when the removals were more than the run may send.
    removals_held: Option<Outcome>,
    /// The mark a model diffed where it lives left after its last row, to keep if the run
    /// completes.
    watermark: Option<String>,
    clock: Instant,
}

impl<'e> Run<'e> {
    /// Describes the stream and sets the run up; `state_keys`: how many keys the state holds,
    /// when the diff knows it (counted otherwise).
    pub(crate) async fn start(
        settings: &'e Settings,
        state: SharedState,
        codec: RowCodec,
        locator: Option<Locator>,
        run_number: u64,
        sync_changed: Vec<SyncChange>,
        state_keys: Option<u64>,
    ) -> Result<Run<'e>, Error> {
        settings.progress.reset();
        let clock = Instant::now();
        let started_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let run_id: Arc<str> = settings.run_id.as_deref().unwrap_or(&started_at).into();
        let mut report = RunReport::new(started_at, settings.stream.as_str(), settings.dry_run);
        report.sync_changed = sync_changed;
        report.resync = settings.resync;
        let limits = &settings.limits;
        let seed = limits.seed.map_or_else(
            || {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            },
            |seed| seed.wrapping_add(run_number),
        );
        let description = describe(settings, seed).await?;
        let aggregate_max_bytes = settings.aggregation.map(|a| {
            a.max_bytes
                .min(description.max_record_bytes)
                .min(limits.max_batch_bytes)
        });
        let config = OutboxConfig {
            max_in_flight: limits
                .max_in_flight
                .unwrap_or((description.shards.len() * 2).clamp(2, 64)),
            max_batch_records: limits.max_batch_records,
            max_batch_bytes: limits.max_batch_bytes,
            max_attempts: limits.max_attempts,
            retry_time: limits.retry_time,
            backoff_base: limits.backoff_base,
            backoff_cap: limits.backoff_cap,
            seed,
            ceiling: Ceiling {
                records_per_second: limits.shard_records_per_second,
                bytes_per_second: limits.shard_bytes_per_second,
            },
            aggregate_max_bytes,
        };
        let outbox = Outbox::new(
            settings.sink.clone(),
            settings.stream.clone(),
            config,
            description.shards.clone(),
            settings.progress.clone(),
        );
        let state_rows = match state_keys {
            Some(known) => known,
            None => blocking(&state, |s| Ok(s.key_count()? as u64)).await?,
        };
        // A store with nothing in it has nothing to look up.
        let state_was_empty = state_rows == 0;
        let diff = Arc::new(DiffContext {
            codec,
            schema: settings.schema().clone(),
            events: settings.events,
            dry_run: settings.dry_run,
            resync: settings.resync,
            state_was_empty,
        });
        Ok(Run {
            settings,
            state,
            diff,
            locator,
            report,
            outbox,
            // A record must fit the stream and a call.
            max_record_bytes: description.max_record_bytes.min(limits.max_batch_bytes),
            estimate: Estimate::new(description.shards.len(), aggregate_max_bytes),
            shards: description.shards,
            seq: 0,
            state_rows,
            state_rows_in_model: 0,
            to_mark: Vec::new(),
            run_id,
            removals_held: None,
            watermark: None,
            clock,
        })
    }

    /// Runs the model through the stages, then reports.
    ///
    /// With `delta`, the rows are only those that may need sending, and the keys gone from
    /// the model come among them (a model diffed where it lives): rows the state holds and
    /// that did not come are unchanged.
    pub(crate) async fn execute(
        mut self,
        mut rows: impl Iterator<Item = Result<Read, String>>,
        delta: Delta,
    ) -> Result<RunReport, Error> {
        let settings = self.settings;
        let first_run = !blocking(&self.state, |s| Ok(s.has_baseline()?)).await?;
        // The last run's mark describes the state until this run changes it.
        if !settings.dry_run {
            blocking(&self.state, |s| Ok(watermark::forget(s)?)).await?;
        }
        let delta = matches!(delta, Delta::Diffed { .. });
        let baseline_only = first_run && settings.initial == Initial::Skip;
        let mut keys = ModelKeys::new(settings.limits.keys_in_memory);
        let mut listed = delta.then(|| Listed::new(settings.limits.keys_in_memory));
        self.report.diffed_at_source = delta;
        let mut pool = BuildPool::start(
            settings.records.clone(),
            settings.limits.build_threads,
            self.run_id.clone(),
            self.max_record_bytes,
        )?;
        let mut stop = None;
        while let Some(chunk) = self.next_chunk(&mut rows, listed.as_mut())? {
            if settings.interrupt.is_interrupted() {
                stop = Some(Stop::Interrupted);
                break;
            }
            if let Some(duplicate) = keys.note(&chunk, self.report.rows_read)? {
                stop = Some(Stop::Duplicate(duplicate));
                break;
            }
            self.report.rows_read += chunk.len() as u64;
            self.show_progress();
            if baseline_only {
                self.record_unsent(chunk).await?;
                continue;
            }
            let context = self.diff.clone();
            let diffed =
                blocking(&self.state, move |s| diff_chunk(s, chunk, &context, delta)).await?;
            self.report.events.add(&diffed.events);
            self.state_rows_in_model += diffed.in_state;
            for key in diffed.unreadable {
                report_unreadable(&mut self.report, key);
            }
            self.build_and_send(&mut pool, diffed.to_build).await?;
            if self.outbox.stopped().is_some() {
                stop = Some(Stop::Transport);
                break;
            }
        }
        if stop.is_none()
            && let Some(duplicate) = keys.duplicate_at_end()?
        {
            stop = Some(Stop::Duplicate(duplicate));
        }
        // Asked to stop while the last rows were awaited (a model diffed where it lives may
        // give nothing for minutes while the warehouse joins): no removal goes out.
        if stop.is_none() && settings.interrupt.is_interrupted() {
            stop = Some(Stop::Interrupted);
        }
        let model_complete = stop.is_none() && self.report.unreadable_rows == 0;
        // Keys the state has and the model lacks are removed rows, on every run that read the
        // whole model and found keys in the state: a first run too, when one before it was
        // stopped part way (its rows were sent, and some may have left the model since).
        if model_complete && !self.diff.state_was_empty {
            let gone = match listed {
                Some(listed) => {
                    // Every key the state had is gone, came with its row, or is unchanged.
                    self.report.events.unchanged += self
                        .state_rows
                        .saturating_sub(listed.count + self.state_rows_in_model);
                    Gone::Listed(listed)
                }
                None => Gone::Walk(keys),
            };
            self.removed(gone, &mut pool, baseline_only).await?;
        }
        if matches!(stop, Some(Stop::Interrupted)) {
            // No new call: what waits is pending, the calls in flight finish below.
            self.outbox.abandon();
        }
        // The chunks still being built. After the stream stopped the run, or it was
        // interrupted, the outbox counts their records as pending.
        while let Some(built) = pool.next().await? {
            self.queue_built(built);
            self.send_queued().await?;
        }
        drop(pool);
        self.outbox.finish(&self.state).await?;
        // Every acknowledged change written before the run reports it.
        let record_baseline = model_complete && first_run && !settings.dry_run;
        let definition = (!settings.dry_run)
            .then(|| Definition::of(&settings.records, settings.stream.as_str()));
        blocking(&self.state, move |s| {
            if let Some(definition) = definition {
                definition.store(s)?;
            }
            Ok(commit::close_run(s, record_baseline)?)
        })
        .await?;
        let state = self.state.clone();
        let watermark = self.watermark.take();
        let report = self.into_report(stop, baseline_only);
        if let Some(mark) = watermark.filter(|_| !settings.dry_run && watermark::earned(&report)) {
            blocking(&state, move |s| Ok(watermark::keep(s, &mark)?)).await?;
        }
        Ok(report)
    }

    /// The next chunk of readable rows (rows that could not be read are reported, keys gone
    /// from the model noted in `listed`); `None` at the model's end.
    fn next_chunk(
        &mut self,
        rows: &mut impl Iterator<Item = Result<Read, String>>,
        mut listed: Option<&mut Listed>,
    ) -> Result<Option<Vec<Prepared>>, Error> {
        let size = self.settings.limits.chunk_rows;
        let mut chunk = Vec::with_capacity(size);
        for item in rows.by_ref() {
            match item {
                Ok(Read::Row(read)) => chunk.push(read),
                Ok(Read::Watermark(mark)) => self.watermark = Some(mark),
                Ok(Read::Removed(key)) => match listed.as_deref_mut() {
                    Some(listed) => listed.push(key)?,
                    // Only a model diffed where it lives lists removed keys.
                    None => {
                        self.report.unreadable_rows += 1;
                        self.report.row_errors.add(
                            key,
                            "unreadable",
                            "a removed key came from a model read whole".to_owned(),
                        );
                    }
                },
                Err(e) => {
                    self.report.unreadable_rows += 1;
                    self.report.row_errors.add(String::new(), "unreadable", e);
                }
            }
            if chunk.len() == size {
                break;
            }
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    /// A first run with `initial = "skip"`: the rows become the state, unsent.
    async fn record_unsent(&mut self, chunk: Vec<Prepared>) -> Result<(), Error> {
        let changes = chunk
            .into_iter()
            .map(|r| Change::Upsert {
                key: r.key,
                fingerprint: r.fingerprint,
                row: r.stored,
            })
            .collect();
        self.commit_unsent(changes).await
    }

    /// Moves the state on to `changes` without sending them (see [`commit::without_sending`]).
    async fn commit_unsent(&mut self, changes: Vec<Change>) -> Result<(), Error> {
        let dry_run = self.settings.dry_run;
        blocking(&self.state, move |s| {
            Ok(commit::without_sending(s, changes, dry_run)?)
        })
        .await
    }

    /// Hands rows to the build threads, queues whatever they have built (oldest first), and
    /// sends until the backlog is within bounds.
    async fn build_and_send(
        &mut self,
        pool: &mut BuildPool,
        to_build: Vec<ToBuild>,
    ) -> Result<(), Error> {
        if !to_build.is_empty() {
            pool.submit(to_build)?;
        }
        // Wait for a chunk only while the threads hold more than they can work on.
        let threads = self.settings.limits.build_threads;
        loop {
            let built = if pool.in_progress() > 2 * threads {
                pool.next().await?
            } else {
                pool.try_next()?
            };
            let Some(built) = built else { break };
            self.queue_built(built);
        }
        self.send_queued().await
    }

    /// Queues a built chunk's records, in order.
    fn queue_built(&mut self, built: Built) {
        for row in built {
            self.queue(row);
        }
    }

    /// Queues a built record, or reports the row's error.
    fn queue(
        &mut self,
        BuiltRow {
            change,
            event,
            record_id: id,
            record,
        }: BuiltRow,
    ) {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let reason = if self.settings.message_excerpts {
                    e.reason()
                } else {
                    e.reason_without_excerpt()
                };
                let (key, kind) = (e.primary_key().to_owned(), e.kind());
                self.report.row_errors.add(key, kind, reason);
                return;
            }
        };
        let size = record.data.len() + record.partition_key.byte_len();
        if size > self.max_record_bytes {
            self.report.row_errors.add(
                change.key().to_owned(),
                "record_too_large",
                format!(
                    "the record is {size} bytes (message plus partition key), over the stream's maximum of {}",
                    self.max_record_bytes
                ),
            );
            return;
        }
        self.report.records.to_send += 1;
        let hash = record.hash_key();
        let mut put = PutRecord::new(record.partition_key, record.data);
        if let Some(explicit) = record.explicit_hash_key {
            put = put.with_explicit_hash_key(explicit);
        }
        if self.settings.dry_run {
            let shard = self.shards.index_for(hash);
            let id = self.shards.shards()[shard].id().to_owned();
            *self.report.by_shard.entry(id).or_default() += 1;
            self.estimate.add(shard, &put);
            return;
        }
        self.to_mark.push(in_doubt(&change, event, id));
        self.seq += 1;
        self.outbox.push(self.seq, put, change);
    }

    /// Marks the keys of the records queued since the last send in doubt; the outbox waits
    /// until that is written before its next call, so none of them goes out before. Once a record is sent, its answer can be
    /// lost (a kill mid-call, a dropped connection); the mark is how the next run knows it may
    /// have landed, and sends the row again, or its removal (see [`kinesync_state::Seen`]).
    async fn mark_in_doubt(&mut self) -> Result<(), Error> {
        if self.to_mark.is_empty() {
            return Ok(());
        }
        let marks = std::mem::take(&mut self.to_mark);
        blocking(&self.state, move |s| Ok(s.commit(marks)?)).await?;
        // Written before the next call goes out (the outbox waits for it then): most
        // chunks of an incremental run queue a few records and send none.
        self.outbox.marks_queued();
        Ok(())
    }

    fn show_progress(&self) {
        self.settings
            .progress
            .set_read(self.report.rows_read, self.report.records.to_send);
    }

    /// Reports progress, then sends until the outbox's backlog is within bounds (committing
    /// what is acknowledged).
    async fn send_queued(&mut self) -> Result<(), Error> {
        self.show_progress();
        self.mark_in_doubt().await?;
        self.outbox
            .drain_to(self.settings.limits.max_backlog, &self.state)
            .await
    }

    /// The report, with how the run ended.
    fn into_report(mut self, stop: Option<Stop>, baseline_only: bool) -> RunReport {
        let notes = std::mem::take(&mut self.outbox.notes);
        for (key, why) in std::mem::take(&mut self.outbox.refused_rows) {
            self.report.row_errors.add(key, "refused_by_stream", why);
        }
        let counts = &self.outbox.counts;
        let report = &mut self.report;
        report.records.acknowledged = counts.acknowledged;
        report.records.pending = self.outbox.pending();
        report.retries = counts.retries;
        report.throttled_records = counts.throttled;
        report.calls = counts.calls;
        report.bytes_sent = counts.bytes;
        report.notes = notes;
        let limits = &self.settings.limits;
        let (rate, bytes_rate) = (
            limits.shard_records_per_second,
            limits.shard_bytes_per_second,
        );
        if self.settings.dry_run && report.records.to_send > 0 {
            let estimate = std::mem::replace(&mut self.estimate, Estimate::new(1, None));
            let (packing, estimate) = estimate.finish(rate, bytes_rate);
            report.packing = packing;
            if rate.is_finite() && bytes_rate.is_finite() {
                report.estimate = Some(estimate);
            }
        } else if let Some(max_bytes) = self.outbox.aggregate_max_bytes() {
            report.packing = Some(Packing {
                max_bytes,
                user_records: counts.acknowledged,
                kinesis_records: counts.kinesis_records,
                aggregated: counts.aggregated,
            });
        }
        if !self.settings.dry_run {
            report.shards = self
                .outbox
                .shard_stats()
                .into_iter()
                .zip(self.outbox.shard_map().shards())
                .map(|(stats, shard)| ShardReport {
                    shard: shard.id().to_owned(),
                    attempts: stats.taken,
                    throttled: stats.throttled,
                    paced_per_second: stats.rate,
                })
                .collect();
        }
        let dry_run = self.settings.dry_run;
        report.outcome = match (stop, self.outbox.stopped()) {
            (Some(Stop::Duplicate(duplicate)), _) => Outcome::Failed {
                error: duplicate_message(
                    &duplicate,
                    self.locator.as_ref(),
                    self.settings.schema().primary_key(),
                    (report.rows_read > self.settings.limits.keys_in_memory as u64)
                        .then_some(self.settings.limits.keys_in_memory),
                ),
            },
            (_, Some(error)) => Outcome::Failed {
                error: error.to_string(),
            },
            (Some(Stop::Interrupted), _) => Outcome::Interrupted,
            _ if self.removals_held.is_some() => self.removals_held.take().expect("checked"),
            _ if dry_run => Outcome::DryRun,
            _ if baseline_only => Outcome::Baseline,
            _ if report.records.pending > 0 || report.row_errors.total > 0 => Outcome::Partial,
            _ => Outcome::Complete,
        };
        if report.unreadable_rows > 0
            && !dry_run
            && matches!(report.outcome, Outcome::Partial | Outcome::Complete)
        {
            report.outcome = Outcome::Partial;
        }
        report.duration_ms = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.report
    }
}

/// The mark that says a record of `event` with id `record_id`, committing `change` once
/// acknowledged, is going out.
fn in_doubt(change: &Change, event: Event, record_id: u128) -> Change {
    let event = match (change, event) {
        (Change::Delete { .. }, _) => Unanswered::Removed,
        (_, Event::Changed) => Unanswered::Changed,
        _ => Unanswered::Added,
    };
    Change::InDoubt {
        key: change.key().to_owned(),
        doubt: Doubt { event, record_id },
        sent: match change {
            Change::Upsert {
                fingerprint, row, ..
            } => Some((*fingerprint, row.clone())),
            // A removal keeps the stored row, the version it carries; records never carry a
            // mark or a settlement, but one would keep its row too.
            Change::Delete { .. } | Change::Settle { .. } | Change::InDoubt { .. } => None,
        },
    }
}

/// The stream's description, the first call of a run: a failure retrying may mend (a 503, a
/// throttle, a dropped connection) is retried with backoff, up to `max_attempts` attempts.
async fn describe(settings: &Settings, seed: u64) -> Result<StreamDescription, Error> {
    let limits = &settings.limits;
    let mut backoff = Backoff::new(limits.backoff_base, limits.backoff_cap, seed);
    let mut attempts = 0;
    // tokio's clock: the one the waits below move (paused in tests).
    let started = tokio::time::Instant::now();
    loop {
        match settings.sink.describe_stream(&settings.stream).await {
            Ok(description) => return Ok(description),
            Err(e) if e.is_retryable() && attempts + 1 < limits.max_attempts => {
                attempts += 1;
                tokio::time::sleep(backoff.delay(attempts)).await;
            }
            // A stream being created is ACTIVE within a minute or so: wait for it, every
            // STREAM_READY_POLL, up to retry_time.
            Err(e)
                if e.kind() == ErrorKind::StreamNotReady
                    && started.elapsed() + STREAM_READY_POLL <= limits.retry_time =>
            {
                tokio::time::sleep(STREAM_READY_POLL).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How often a run asks again about a stream being created.
const STREAM_READY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What a user is told about a key read twice: where, and what the run did about it.
fn duplicate_message(
    duplicate: &Duplicate,
    locator: Option<&Locator>,
    primary_key: &str,
    found_at_end: Option<usize>,
) -> String {
    let Duplicate { key, first, again } = duplicate;
    let stopped = match found_at_end {
        Some(keys_in_memory) => format!(
            "The run found it at the model's end (a model of more than {keys_in_memory} rows is checked then: its rows were sent in model order)"
        ),
        None => "The run stopped there".to_owned(),
    };
    format!(
        "{}primary key {key} (column {primary_key:?}) appears more than once in the model ({}); primary keys must be unique. {stopped} and did not look for removed rows",
        match locator {
            Some(locator) => format!("{}: ", locator.at(*again)),
            None => String::new(),
        },
        match locator {
            Some(locator) => format!("first at {}", locator.place(*first)),
            None => format!("rows {first} and {again}"),
        },
    )
}
