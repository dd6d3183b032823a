//! The sync engine: change detection against the state store, records through any sink
//! within the stream's limits, and commits of exactly what the stream acknowledged.
//!
//! A run, in order:
//!
//! 1. **Describe** the stream once: its open shards (for the default number of calls in
//!    flight) and its maximum record size.
//! 2. **Read the model in chunks.** Each row is encoded as a JSON object and fingerprinted
//!    (XXH3-128 of that object), and its values are encoded as the state store keeps them (the
//!    column names are kept once per store: see [`last_sent_rows`]); [`Engine::run_source`]
//!    does this on the thread that reads the model. For
//!    each chunk: note its primary keys, look them up in the state store, and sort each row
//!    into added (new key), changed (new fingerprint) or unchanged. Rows whose event the
//!    trigger sends become records and join the sender's queue; the reader waits while the
//!    queue is full.
//! 3. **Duplicate and removed keys**, once the whole model has been read (and only then: a run
//!    that stopped early, or could not read every row, does not know what is gone). The run's
//!    keys and the state's keys are each sorted by their XXH3-128 hash (in memory up to
//!    [`Limits::keys_in_memory`], in sorted runs on temporary files beyond) and compared in
//!    one pass: a key read twice is a run error naming both lines, and a state key the model
//!    lacks is removed, built from its last sent row. So a run's memory is the same whatever
//!    the model's size.
//! 4. **Drain** the sender: batches of at most 500 records and 10 MiB, a bounded number of
//!    calls in flight, per-key order, retries with capped exponential backoff and full jitter
//!    within the run's budget. After each call the acknowledged records' changes are committed.
//!
//! What is not acknowledged by the end (still throttled, a row error, a call that failed) is
//! not committed, so the next run finds those rows again and sends them.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use kinesync::sync::{Engine, Events, Initial};
//! use kinesync::{KeySpec, RecordBuilder};
//! use kinesync::payload::{Payload, PayloadSpec, Row, Schema, Value};
//! use kinesync::state::MemoryStore;
//! use kinesync::transport::{InMemorySink, StreamConfig, StreamName};
//!
//! let schema = Schema::new(["id", "email"], "id").unwrap();
//! let payload = Payload::compile(&PayloadSpec::template(r#"{"email": "{{ row.email }}", "event": "{{ event }}"}"#), schema.clone()).unwrap();
//! let records = RecordBuilder::new(payload, KeySpec::new(&schema, None, None).unwrap());
//!
//! // The in-memory stream stands in for Kinesis; swap in `AwsKinesisSink` for the real one.
//! let sink = Arc::new(InMemorySink::new());
//! let stream = StreamName::new("users").unwrap();
//! sink.create_stream(&stream, StreamConfig::with_shards(2));
//!
//! let mut sync = Engine::builder()
//!     .records(records)
//!     .sink(sink.clone(), stream.clone())
//!     .state(MemoryStore::new())
//!     .events(Events::all())
//!     .initial(Initial::Backfill)
//!     .build()
//!     .unwrap();
//! let rows = vec![
//!     Row::new(vec![Value::Int(1), Value::from("ada@example.com")]),
//!     Row::new(vec![Value::Int(2), Value::from("grace@example.com")]),
//! ];
//! let report = sync.run(rows.into_iter().map(Ok::<_, String>)).await.unwrap();
//! assert_eq!(report.records.acknowledged, 2);
//! assert_eq!(sink.records(&stream).unwrap().len(), 2);
//!
//! // A second run sends only what changed.
//! let rows = vec![Row::new(vec![Value::Int(1), Value::from("ada@new.example.com")])];
//! let report = sync.run(rows.into_iter().map(Ok::<_, String>)).await.unwrap();
//! assert_eq!((report.events.changed, report.events.removed), (1, 1));
//! # });
//! ```

mod builders;
pub mod debug_log;
mod hashed;
pub mod progress;
pub mod report;
mod sender;
mod sorted;
mod stored;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use xxhash_rust::xxh3::xxh3_128;

use kinesync_keys::ShardMap;
use kinesync_payload::{Event, RenderInput, Row, RowEncoder, Schema};
use kinesync_source::{Locator, RowSource, SourceRow};
use kinesync_state::{Change, StateStore};
use kinesync_transport::{
    KinesisSink, MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, PutRecord, StreamName,
};

pub use debug_log::DebugLog;
pub use progress::{Progress, ProgressSnapshot};
pub use report::{EventCounts, Outcome, RecordCounts, RowErrors, RunReport};
pub use stored::last_sent_rows;

use crate::{Error, Record, RecordBuilder, RowError};
use builders::{Builders, Built, ToBuild};
use hashed::HashedSet;
use sender::{Item, Sender, SenderConfig};
use sorted::{Key, Sorter};
use stored::Layouts;

/// Which changes a sync sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    /// New primary keys.
    pub added: bool,
    /// Changed rows.
    pub changed: bool,
    /// Primary keys gone from the model.
    pub removed: bool,
}

impl Events {
    /// All three.
    pub fn all() -> Self {
        Self {
            added: true,
            changed: true,
            removed: true,
        }
    }

    /// From names: `added`, `changed`, `removed`.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut events = Self {
            added: false,
            changed: false,
            removed: false,
        };
        for name in names {
            match name.as_ref() {
                "added" => events.added = true,
                "changed" => events.changed = true,
                "removed" => events.removed = true,
                other => {
                    return Err(format!(
                        "unknown event {other:?}: use added, changed or removed"
                    ));
                }
            }
        }
        if !(events.added || events.changed || events.removed) {
            return Err("events is empty: name at least one of added, changed, removed".into());
        }
        Ok(events)
    }

    fn sends(self, event: Event) -> bool {
        match event {
            Event::Added => self.added,
            Event::Changed => self.changed,
            Event::Removed => self.removed,
        }
    }
}

/// A row of the model as [`Engine::run`] takes it: a bare [`Row`], or a [`SourceRow`] that
/// knows the line it was read from (so that a duplicate key's error can say where).
pub trait ModelRow {
    /// The row, and its line (0 when unknown).
    fn into_parts(self) -> (Row, u64);
}

impl ModelRow for Row {
    fn into_parts(self) -> (Row, u64) {
        (self, 0)
    }
}

impl ModelRow for SourceRow {
    fn into_parts(self) -> (Row, u64) {
        (self.row, self.line)
    }
}

/// What the first run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Initial {
    /// Send every row as added.
    #[default]
    Backfill,
    /// Record the model as the baseline and send nothing; only later changes flow.
    Skip,
}

/// How hard a sync pushes, and how long it keeps trying.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Calls in flight at once; by default twice the stream's open shards, within 2..=64.
    pub max_in_flight: Option<usize>,
    /// Records per call (at most the service's 500).
    pub max_batch_records: usize,
    /// Bytes per call, partition keys included (at most the service's 10 MiB).
    pub max_batch_bytes: usize,
    /// Attempts per record before it is left pending for the next run.
    pub max_attempts: u32,
    /// How long after the run starts records may still be retried.
    pub retry_time: Duration,
    /// The first retry waits up to this long (full jitter).
    pub backoff_base: Duration,
    /// No retry waits longer than this.
    pub backoff_cap: Duration,
    /// Model rows read per state lookup.
    pub chunk_rows: usize,
    /// Threads that build records (render messages) while the sync's own thread reads,
    /// diffs and sends; by default one per core, up to 8.
    pub build_threads: usize,
    /// Records queued before the reader waits for the sender.
    pub max_backlog: usize,
    /// Primary keys a run holds in memory (to find duplicates and removed keys at the end)
    /// before it spills them, sorted, to temporary files: what keeps a run's memory the same
    /// whatever the model's size.
    pub keys_in_memory: usize,
    /// Seed of the retry jitter (a fixed seed makes a run's timing repeatable in tests).
    pub seed: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: None,
            max_batch_records: MAX_RECORDS_PER_CALL,
            max_batch_bytes: MAX_BYTES_PER_CALL,
            max_attempts: 10,
            retry_time: Duration::from_secs(120),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            chunk_rows: 1000,
            build_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            max_backlog: 5000,
            keys_in_memory: 1 << 18,
            seed: None,
        }
    }
}

impl Limits {
    /// Refuses limits the service would refuse, rather than clamping them silently.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RECORDS_PER_CALL).contains(&self.max_batch_records) {
            return Err(format!(
                "max_batch_records must be 1..={MAX_RECORDS_PER_CALL}, not {}",
                self.max_batch_records
            ));
        }
        if !(1..=MAX_BYTES_PER_CALL).contains(&self.max_batch_bytes) {
            return Err(format!(
                "max_batch_bytes must be 1..={MAX_BYTES_PER_CALL}, not {}",
                self.max_batch_bytes
            ));
        }
        if self.max_in_flight == Some(0)
            || self.max_attempts == 0
            || self.chunk_rows == 0
            || self.build_threads == 0
            || self.max_backlog == 0
            || self.keys_in_memory == 0
        {
            return Err(
                "max_in_flight, max_attempts, chunk_rows, build_threads, max_backlog and keys_in_memory must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// Builds an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    records: Option<RecordBuilder>,
    sink: Option<(Arc<dyn KinesisSink>, StreamName)>,
    state: Option<Box<dyn StateStore>>,
    events: Option<Events>,
    initial: Initial,
    limits: Limits,
    debug_log: Option<DebugLog>,
    dry_run: bool,
    progress: Option<Arc<Progress>>,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("events", &self.events)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// How rows become records (compiled payload and key columns).
    pub fn records(mut self, records: RecordBuilder) -> Self {
        self.records = Some(records);
        self
    }

    /// Where records go.
    pub fn sink(mut self, sink: Arc<dyn KinesisSink>, stream: StreamName) -> Self {
        self.sink = Some((sink, stream));
        self
    }

    /// What was sent before.
    pub fn state(self, store: impl StateStore + 'static) -> Self {
        self.state_boxed(Box::new(store))
    }

    /// What was sent before, a store chosen at run time.
    pub fn state_boxed(mut self, store: Box<dyn StateStore>) -> Self {
        self.state = Some(store);
        self
    }

    /// Which changes to send (default: all).
    pub fn events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// What the first run does (default: backfill).
    pub fn initial(mut self, initial: Initial) -> Self {
        self.initial = initial;
        self
    }

    /// Limits (default: the service's, with a two-minute retry budget).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where to write the debugger log (default: nowhere).
    pub fn debug_log(mut self, log: DebugLog) -> Self {
        self.debug_log = Some(log);
        self
    }

    /// Does everything but send and commit: the report says what would be sent (default: off).
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Counters to watch the run by (default: the engine keeps its own).
    pub fn progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Checks that everything is there.
    pub fn build(self) -> Result<Engine, Error> {
        let missing = |what: &str| Error::Sync(format!("the sync needs {what}"));
        self.limits.validate().map_err(Error::Sync)?;
        let records = self
            .records
            .ok_or_else(|| missing("records (a RecordBuilder)"))?;
        let (sink, stream) = self.sink.ok_or_else(|| missing("a sink and a stream"))?;
        let state = self.state.ok_or_else(|| missing("a state store"))?;
        let encoder = RowEncoder::new(records.schema());
        Ok(Engine {
            encoder,
            layouts: Layouts::default(),
            records: Arc::new(records),
            sink,
            stream,
            state,
            events: self.events.unwrap_or_else(Events::all),
            initial: self.initial,
            limits: self.limits,
            log: self.debug_log.unwrap_or_else(DebugLog::disabled),
            runs: 0,
            dry_run: self.dry_run,
            progress: self.progress.unwrap_or_default(),
            locator: None,
            shards: None,
        })
    }
}

/// A configured sync: run it as often as the model changes. (Named `Engine`, not `Sync`,
/// so that it never shadows the `Sync` marker trait where it is imported.)
pub struct Engine {
    records: Arc<RecordBuilder>,
    encoder: RowEncoder,
    /// How the state store holds rows; read from it as each run starts.
    layouts: Layouts,
    sink: Arc<dyn KinesisSink>,
    stream: StreamName,
    state: Box<dyn StateStore>,
    events: Events,
    initial: Initial,
    limits: Limits,
    log: DebugLog,
    runs: u64,
    dry_run: bool,
    progress: Arc<Progress>,
    /// Where the current run's rows come from, when known.
    locator: Option<Locator>,
    /// The current run's shards.
    shards: Option<ShardMap>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("stream", &self.stream)
            .field("sink", &self.sink.to_string())
            .finish_non_exhaustive()
    }
}

/// One model row, read and fingerprinted.
struct Read {
    key: String,
    /// The key's XXH3-128, for the run's set of keys seen.
    key_hash: u128,
    /// The line (or query row) it was read from; 0 when unknown.
    line: u64,
    row: Row,
    /// The row as the state store keeps it (see [`stored`]).
    stored: Vec<u8>,
    /// The XXH3-128 of the row as a JSON object.
    fingerprint: u128,
}

thread_local! {
    /// Where [`Preparer::prepare`] encodes a row as a JSON object, and as it is stored.
    static ENCODED: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Turns a model row into a [`Read`]: its key, its stored form and its fingerprint. Cheap to
/// clone, so that a source's rows can be prepared on the thread that reads them.
#[derive(Debug, Clone)]
struct Preparer {
    encoder: RowEncoder,
    primary_key: usize,
    /// What each stored row starts with: its column list's number.
    stored_prefix: Vec<u8>,
}

impl Preparer {
    fn prepare(&self, row: Row, line: u64) -> Read {
        // Encoded into this thread's buffers, then copied out at its exact size: one
        // allocation per row, never a regrowth. The fingerprint is the object's, as it
        // always was, so that rows stored before stored rows lost their names still match.
        let (fingerprint, stored) = ENCODED.with_borrow_mut(|(object, stored)| {
            object.clear();
            stored.clear();
            stored.extend_from_slice(&self.stored_prefix);
            self.encoder.encode_with_values(&row, object, stored);
            let result = (xxh3_128(object), stored.as_slice().to_vec());
            crate::records::shrink_if_large(object);
            crate::records::shrink_if_large(stored);
            result
        });
        let key = row.get(self.primary_key).to_json_string();
        Read {
            key_hash: xxh3_128(key.as_bytes()),
            fingerprint,
            key,
            line,
            row,
            stored,
        }
    }
}

/// Why the model phase stopped early.
enum Stop {
    /// A primary key read twice: where first, and where again.
    Duplicate {
        key: String,
        first: u64,
        again: u64,
    },
    Transport,
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The state store (to inspect it in tests).
    pub fn state(&self) -> &dyn StateStore {
        &*self.state
    }

    /// The state store, for lookups (which need `&mut`).
    pub fn state_mut(&mut self) -> &mut dyn StateStore {
        &mut *self.state
    }

    /// Replaces the debugger log for the next runs.
    pub fn set_debug_log(&mut self, log: DebugLog) {
        self.log = log;
    }

    fn schema(&self) -> &Arc<Schema> {
        self.records.schema()
    }

    /// A stored row, back in this schema's order (columns the stored row lacks are null).
    fn decode(&self, stored: &[u8]) -> Row {
        self.layouts.decode(self.schema(), stored)
    }

    /// Runs one sync over a model source; errors about its rows say which line they are on.
    ///
    /// The source is read on a thread of its own, which also encodes and fingerprints each
    /// row, so that reading and parsing the model overlap with rendering and sending.
    pub async fn run_source(&mut self, source: Box<dyn RowSource>) -> Result<RunReport, Error> {
        self.locator = Some(source.locator());
        let preparer = self.preparer()?;
        let prepared = source.map(move |item| {
            item.map(|read| preparer.prepare(read.row, read.line))
                .map_err(|e| e.to_string())
        });
        // A reading thread that dies ends the rows with an error, never silently: rows it
        // never read must not count as removed.
        let items = kinesync_source::read_ahead(prepared)
            .map_err(|e| Error::Sync(format!("cannot start the thread that reads the model: {e}")))?
            .map(|item| item.unwrap_or_else(|stopped| Err(stopped.to_string())));
        let report = self.run_prepared(items).await;
        self.locator = None;
        report
    }

    /// A preparer for this run's rows, once the store's column lists are read (and this
    /// schema's added to them).
    fn preparer(&mut self) -> Result<Preparer, Error> {
        self.layouts = Layouts::load(&mut *self.state, self.records.schema(), self.dry_run)?;
        Ok(Preparer {
            encoder: self.encoder.clone(),
            primary_key: self.schema().primary_key_index(),
            stored_prefix: self.layouts.prefix(),
        })
    }

    /// Runs one sync over `rows` (the whole model, in order). Transport failures, row errors
    /// and duplicate keys end up in the report; `Err` is for a state store that fails, or a
    /// stream that cannot be described.
    pub async fn run<I, R, E>(&mut self, rows: I) -> Result<RunReport, Error>
    where
        I: IntoIterator<Item = Result<R, E>>,
        R: ModelRow,
        E: fmt::Display,
    {
        let preparer = self.preparer()?;
        let items = rows.into_iter().map(move |item| match item {
            Ok(row) => {
                let (row, line) = row.into_parts();
                Ok(preparer.prepare(row, line))
            }
            Err(e) => Err(e.to_string()),
        });
        self.run_prepared(items).await
    }

    /// A run over rows already prepared (or why one could not be read).
    async fn run_prepared(
        &mut self,
        mut rows: impl Iterator<Item = Result<Read, String>>,
    ) -> Result<RunReport, Error> {
        self.runs += 1;
        self.progress.reset();
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let mut report = RunReport {
            outcome: Outcome::Complete,
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            duration_ms: 0,
            stream: self.stream.as_str().to_owned(),
            rows_read: 0,
            unreadable_rows: 0,
            events: EventCounts::default(),
            records: RecordCounts::default(),
            row_errors: RowErrors::default(),
            retries: 0,
            throttled_records: 0,
            calls: 0,
            bytes_sent: 0,
            dry_run: self.dry_run,
            by_shard: std::collections::BTreeMap::new(),
        };
        let description = self.sink.describe_stream(&self.stream).await?;
        // A record must fit the stream and a call.
        let max_record_bytes = description
            .max_record_bytes
            .min(self.limits.max_batch_bytes);
        let shards = description.shards.len();
        self.shards = Some(description.shards.clone());
        let config = SenderConfig {
            max_in_flight: self
                .limits
                .max_in_flight
                .unwrap_or((shards * 2).clamp(2, 64)),
            max_batch_records: self.limits.max_batch_records,
            max_batch_bytes: self.limits.max_batch_bytes,
            max_attempts: self.limits.max_attempts,
            retry_time: self.limits.retry_time,
            backoff_base: self.limits.backoff_base,
            backoff_cap: self.limits.backoff_cap,
            seed: self.limits.seed.map_or_else(
                || {
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                },
                |seed| seed.wrapping_add(self.runs),
            ),
        };
        let mut sender = Sender::new(
            self.sink.clone(),
            self.stream.clone(),
            config,
            self.progress.clone(),
        );
        // The keys this run's model holds, sorted by hash (on disk past `keys_in_memory`), to
        // find duplicate keys and removed keys once the model has been read.
        let mut seen: Sorter = Sorter::new(self.limits.keys_in_memory);
        // While the model is small enough, its keys are also in a hash set, so that a key
        // read twice stops the run before the second row is sent. Past `keys_in_memory` rows
        // the set is dropped and duplicates are found from `seen` at the end.
        let mut recent: Option<HashedSet> = Some(HashedSet::default());
        // A store with nothing in it has nothing to look up.
        let state_was_empty = self.state.key_count()? == 0;
        let first_run = !self.state.has_baseline()?;
        let baseline_only = first_run && self.initial == Initial::Skip;

        let mut builders = Builders::start(self.records.clone(), self.limits.build_threads)?;
        let mut seq = 0u64;
        let mut stop = None;
        loop {
            let mut chunk = Vec::with_capacity(self.limits.chunk_rows);
            for item in rows.by_ref() {
                match item {
                    Ok(read) => chunk.push(read),
                    Err(e) => {
                        report.unreadable_rows += 1;
                        report.row_errors.add(String::new(), "unreadable", e);
                    }
                }
                if chunk.len() == self.limits.chunk_rows {
                    break;
                }
            }
            if chunk.is_empty() {
                break;
            }
            for (i, read) in chunk.iter().enumerate() {
                seen.push(Key {
                    hash: read.key_hash,
                    // Without a line, the row's place in the model.
                    line: if read.line > 0 {
                        read.line
                    } else {
                        report.rows_read + i as u64 + 1
                    },
                    key: read.key.clone(),
                })
                .map_err(spill_error)?;
            }
            if let Some(keys) = &mut recent {
                if let Some(again) = chunk.iter().find(|r| !keys.insert(r.key_hash)) {
                    stop = Some(self.duplicate_in(&mut seen, again.key_hash)?);
                    break;
                }
                if keys.len() > self.limits.keys_in_memory {
                    recent = None;
                }
            }
            report.rows_read += chunk.len() as u64;
            self.progress
                .set_read(report.rows_read, report.records.to_send);
            if baseline_only && self.dry_run {
                continue;
            }
            if baseline_only {
                let changes: Vec<Change> = chunk
                    .into_iter()
                    .map(|r| Change::Upsert {
                        key: r.key,
                        fingerprint: r.fingerprint,
                        row: r.stored,
                    })
                    .collect();
                self.state.commit(changes)?;
                continue;
            }
            let to_build = self.diff_chunk(chunk, state_was_empty, &mut report)?;
            if !to_build.is_empty() {
                builders.submit(to_build)?;
            }
            // Queue what is built, oldest first; wait for it only while the builders hold
            // more chunks than they can work on.
            while let Some(built) =
                builders.next_built(builders.in_progress() > 2 * self.limits.build_threads)?
            {
                self.queue_built(built, max_record_bytes, &mut seq, &mut sender, &mut report);
            }
            self.send_queued(&mut sender, &report).await?;
            if sender.stopped().is_some() {
                stop = Some(Stop::Transport);
                break;
            }
        }
        // The chunks still being built. After the stream stopped the run, the sender counts
        // their records as pending.
        while let Some(built) = builders.next_built(true)? {
            self.queue_built(built, max_record_bytes, &mut seq, &mut sender, &mut report);
            self.send_queued(&mut sender, &report).await?;
        }
        drop(builders);

        // While every key also went into `recent`, a duplicate would already have stopped the
        // run: the pass over the sorted keys is needed only past that.
        if stop.is_none()
            && recent.is_none()
            && let Some((first, again)) = first_duplicate(&mut seen)?
        {
            stop = Some(Stop::Duplicate {
                key: again.key,
                first: first.line,
                again: again.line,
            });
        }
        let model_complete = stop.is_none() && report.unreadable_rows == 0;
        if model_complete && !first_run {
            self.removed(
                &mut seen,
                max_record_bytes,
                &mut seq,
                &mut sender,
                &mut report,
            )
            .await?;
        }
        sender.finish(&mut *self.state, &mut self.log).await?;
        // Every acknowledged change written before the run reports it.
        self.state.flush()?;
        self.log.flush();
        if model_complete && first_run && !self.dry_run {
            self.state.set_baseline()?;
        }

        let counts = &sender.counts;
        report.records.acknowledged = counts.acknowledged;
        report.records.pending = counts.pending;
        report.retries = counts.retries;
        report.throttled_records = counts.throttled;
        report.calls = counts.calls;
        report.bytes_sent = counts.bytes;
        report.outcome = match (stop, sender.stopped()) {
            (Some(Stop::Duplicate { key, first, again }), _) => Outcome::Failed {
                error: format!(
                    "{}primary key {key} (column {:?}) appears more than once in the model ({}); primary keys must be unique. The run stopped there (in a model of more than {} rows, at its end: the rows were sent in model order) and did not look for removed rows",
                    match &self.locator {
                        Some(locator) => format!("{}: ", locator.at(again)),
                        None => String::new(),
                    },
                    self.schema().primary_key(),
                    match &self.locator {
                        Some(locator) => format!("first at {}", locator.place(first)),
                        None => format!("rows {first} and {again}"),
                    },
                    self.limits.keys_in_memory,
                ),
            },
            (_, Some(error)) => Outcome::Failed {
                error: error.to_string(),
            },
            _ if self.dry_run => Outcome::DryRun,
            _ if baseline_only => Outcome::Baseline,
            _ if report.records.pending > 0 || report.row_errors.total > 0 => Outcome::Partial,
            _ => Outcome::Complete,
        };
        if report.unreadable_rows > 0
            && !self.dry_run
            && matches!(report.outcome, Outcome::Partial | Outcome::Complete)
        {
            report.outcome = Outcome::Partial;
        }
        report.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(report)
    }

    /// Sorts a chunk into events; returns the rows whose records the trigger sends.
    fn diff_chunk(
        &mut self,
        chunk: Vec<Read>,
        state_was_empty: bool,
        report: &mut RunReport,
    ) -> Result<Vec<ToBuild>, Error> {
        let known = if state_was_empty {
            vec![None; chunk.len()]
        } else {
            let keys: Vec<String> = chunk.iter().map(|r| r.key.clone()).collect();
            self.state.fingerprints(&keys)?
        };
        let changed_keys: Vec<String> = chunk
            .iter()
            .zip(&known)
            .filter(|(r, k)| k.is_some_and(|fp| fp != r.fingerprint))
            .map(|(r, _)| r.key.clone())
            .collect();
        let mut previous = if self.events.changed && !changed_keys.is_empty() {
            self.state.rows(&changed_keys)?.into_iter()
        } else {
            Vec::new().into_iter()
        };
        // Changes the trigger does not send are still the model's history: the state moves
        // on to them, so that a later change is measured against this version.
        let mut untriggered = Vec::new();
        let mut to_send = Vec::with_capacity(chunk.len());
        for (read, known) in chunk.into_iter().zip(known) {
            let event = match known {
                None => Event::Added,
                Some(fp) if fp != read.fingerprint => Event::Changed,
                Some(_) => {
                    report.events.unchanged += 1;
                    continue;
                }
            };
            match event {
                Event::Added => report.events.added += 1,
                _ => report.events.changed += 1,
            }
            if !self.events.sends(event) {
                report.events.not_triggered += 1;
                untriggered.push(Change::Upsert {
                    key: read.key,
                    fingerprint: read.fingerprint,
                    row: read.stored,
                });
                continue;
            }
            let previous_row = match event {
                Event::Changed => previous.next().flatten().map(|json| self.decode(&json)),
                _ => None,
            };
            to_send.push(ToBuild {
                read,
                event,
                previous: previous_row,
            });
        }
        if !untriggered.is_empty() && !self.dry_run {
            self.state.commit(untriggered)?;
        }
        Ok(to_send)
    }

    /// Queues a built chunk's records, in order.
    fn queue_built(
        &self,
        built: Built,
        max_record_bytes: usize,
        seq: &mut u64,
        sender: &mut Sender,
        report: &mut RunReport,
    ) {
        for (row, record) in built {
            let read = row.read;
            let change = Change::Upsert {
                key: read.key,
                fingerprint: read.fingerprint,
                row: read.stored,
            };
            self.queue(record, change, max_record_bytes, seq, sender, report);
        }
    }

    /// Queues a built record, or reports the row's error.
    #[allow(clippy::too_many_arguments)]
    fn queue(
        &self,
        record: Result<Record, RowError>,
        change: Change,
        max_record_bytes: usize,
        seq: &mut u64,
        sender: &mut Sender,
        report: &mut RunReport,
    ) {
        match record {
            Ok(record) => {
                let size = record.data.len() + record.partition_key.byte_len();
                if size > max_record_bytes {
                    let (Change::Upsert { key, .. } | Change::Delete { key }) = change;
                    report.row_errors.add(
                        key,
                        "record_too_large",
                        format!("the record is {size} bytes (message plus partition key), over the stream's maximum of {max_record_bytes}"),
                    );
                    return;
                }
                let hash_key = self.dry_run.then(|| record.hash_key());
                let mut put = PutRecord::new(record.partition_key, record.data);
                if let Some(explicit) = record.explicit_hash_key {
                    put = put.with_explicit_hash_key(explicit);
                }
                report.records.to_send += 1;
                if self.dry_run {
                    if let Some(shards) = &self.shards
                        && let Some(hash_key) = hash_key
                    {
                        let shard = shards.shard_for(hash_key).id().to_owned();
                        *report.by_shard.entry(shard).or_default() += 1;
                    }
                    return;
                }
                *seq += 1;
                sender.push(Item::new(*seq, put, change));
            }
            Err(e) => report
                .row_errors
                .add(e.primary_key().to_owned(), e.kind(), e.reason()),
        }
    }

    /// Finds the keys the state has and the model does not (both sorted by hash, compared in
    /// one pass) and queues their removals, page by page.
    async fn removed(
        &mut self,
        seen: &mut Sorter,
        max_record_bytes: usize,
        seq: &mut u64,
        sender: &mut Sender,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let mut stored: Sorter = Sorter::new(self.limits.keys_in_memory);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .state
                .keys_after(after.as_deref(), self.limits.chunk_rows)?;
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            for key in page {
                stored
                    .push(Key {
                        hash: xxh3_128(key.as_bytes()),
                        line: 0,
                        key,
                    })
                    .map_err(spill_error)?;
            }
        }
        // The model's side needs only its hashes.
        let mut model = seen.hashes().map_err(spill_error)?.peekable();
        let mut gone = Vec::with_capacity(self.limits.chunk_rows);
        for entry in stored.sorted().map_err(spill_error)? {
            let entry = entry.map_err(spill_error)?;
            let in_model = loop {
                match model.next_if(|m| m.as_ref().is_ok_and(|m| *m < entry.hash)) {
                    Some(_) => continue,
                    None => match model.peek() {
                        Some(Ok(m)) => break *m == entry.hash,
                        Some(Err(_)) => {
                            let Some(Err(e)) = model.next() else {
                                unreachable!("peeked an error")
                            };
                            return Err(spill_error(e));
                        }
                        None => break false,
                    },
                }
            };
            if in_model {
                continue;
            }
            gone.push(entry.key);
            if gone.len() == self.limits.chunk_rows {
                let page = std::mem::replace(&mut gone, Vec::with_capacity(self.limits.chunk_rows));
                self.queue_removed(page, max_record_bytes, seq, sender, report)
                    .await?;
                if sender.stopped().is_some() {
                    return Ok(());
                }
            }
        }
        if !gone.is_empty() {
            self.queue_removed(gone, max_record_bytes, seq, sender, report)
                .await?;
        }
        Ok(())
    }

    /// Queues the removal of `gone` keys (built from their last sent rows), or moves the state
    /// on without sending when the trigger leaves removals out.
    async fn queue_removed(
        &mut self,
        gone: Vec<String>,
        max_record_bytes: usize,
        seq: &mut u64,
        sender: &mut Sender,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let rows = if self.events.removed {
            self.state.rows(&gone)?
        } else {
            vec![None; gone.len()]
        };
        let mut untriggered = Vec::new();
        for (key, stored) in gone.into_iter().zip(rows) {
            report.events.removed += 1;
            if !self.events.removed {
                report.events.not_triggered += 1;
                untriggered.push(Change::Delete { key });
                continue;
            }
            let row = self.decode(&stored.unwrap_or_default());
            let change = Change::Delete { key };
            self.queue(
                self.records.build(RenderInput::new(&row, Event::Removed)),
                change,
                max_record_bytes,
                seq,
                sender,
                report,
            );
        }
        if !untriggered.is_empty() && !self.dry_run {
            self.state.commit(untriggered)?;
        }
        self.send_queued(sender, report).await
    }

    /// Reports progress, then sends until the sender's backlog is within bounds (committing
    /// what is acknowledged).
    async fn send_queued(&mut self, sender: &mut Sender, report: &RunReport) -> Result<(), Error> {
        self.progress
            .set_read(report.rows_read, report.records.to_send);
        sender
            .drain_to(self.limits.max_backlog, &mut *self.state, &mut self.log)
            .await?;
        Ok(())
    }
}

impl Engine {
    /// The duplicate whose hash is `hash`, with both its lines, from the keys seen so far.
    fn duplicate_in(&self, seen: &mut Sorter, hash: u128) -> Result<Stop, Error> {
        let mut lines = Vec::with_capacity(2);
        let mut key = String::new();
        for entry in seen.sorted().map_err(spill_error)? {
            let entry = entry.map_err(spill_error)?;
            if entry.hash == hash {
                lines.push(entry.line);
                key = entry.key;
            }
        }
        lines.sort_unstable();
        Ok(Stop::Duplicate {
            key,
            first: lines.first().copied().unwrap_or_default(),
            again: lines.get(1).copied().unwrap_or_default(),
        })
    }
}

/// The first primary key that appears twice, as its first and second entries.
fn first_duplicate(seen: &mut Sorter) -> Result<Option<(Key, Key)>, Error> {
    // The hashes alone rule duplicates out; only when there is one are the keys read.
    if !seen.has_equal_hashes().map_err(spill_error)? {
        return Ok(None);
    }
    let mut previous: Option<Key> = None;
    for entry in seen.sorted().map_err(spill_error)? {
        let entry = entry.map_err(spill_error)?;
        if let Some(previous) = previous.take_if(|p| p.hash == entry.hash) {
            return Ok(Some((previous, entry)));
        }
        previous = Some(entry);
    }
    Ok(None)
}

fn spill_error(source: std::io::Error) -> Error {
    Error::Io {
        what: "spill the run's primary keys to a temporary file in",
        path: std::env::temp_dir(),
        source,
    }
}
