//! The engine as its users hold it: built once from its parts, then run as often as the model
//! changes. Each run is a [`crate::run::Run`] of its own.

use std::fmt;
use std::sync::{Arc, Mutex};

use kinesync_payload::{RowEncoder, Schema};
use kinesync_source::{DeltaItem, DeltaSource, Locator, RowSource};
use kinesync_state::StateStore;
use kinesync_transport::{KinesisSink, StreamName};

use crate::codec::RowCodec;
use crate::definition::{Definition, SyncChange};
use crate::error::Error;
use crate::interrupt::Interrupt;
use crate::prepare::{ModelRow, Preparer, Read};
use crate::progress::Progress;
use crate::record::RecordBuilder;
use crate::report::RunReport;
use crate::run::{Delta, Run};
use crate::settings::{Aggregation, Events, Initial, Limits};
use crate::store::{self, SharedState};

/// Builds an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    records: Option<RecordBuilder>,
    sink: Option<(Arc<dyn KinesisSink>, StreamName)>,
    state: Option<SharedState>,
    events: Option<Events>,
    initial: Initial,
    limits: Limits,
    aggregation: Option<Aggregation>,
    dry_run: bool,
    resync: bool,
    message_excerpts: bool,
    run_id: Option<String>,
    progress: Option<Arc<Progress>>,
    interrupt: Interrupt,
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

    /// What was sent before: any store, a `Box<dyn StateStore>` chosen at run time too.
    pub fn state(self, store: impl StateStore + 'static) -> Self {
        self.state_shared(Arc::new(Mutex::new(store)))
    }

    /// What was sent before, in a store the caller keeps a handle to (to look inside it
    /// between runs, with its own type: `Arc<Mutex<MemoryStore>>` coerces to
    /// [`SharedState`]). A run locks it only while it works with it.
    pub fn state_shared(mut self, store: SharedState) -> Self {
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

    /// Packs records of one shard into aggregated records (default: off, every record goes
    /// as it is). Consumers must read the KPL's format: the KCL does, and Lambda and other
    /// readers with AWS's deaggregation modules.
    pub fn aggregate(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = Some(aggregation);
        self
    }

    /// Row errors in the report quote the part of a rendered message where it stopped being
    /// JSON (default: off: messages hold users' data, and reports are kept).
    pub fn message_excerpts(mut self, message_excerpts: bool) -> Self {
        self.message_excerpts = message_excerpts;
        self
    }

    /// Does everything but send and commit: the report says what would be sent (default: off).
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sends every row of the model again, as `changed` (with the version last sent as
    /// `previous`) for rows already sent: after the payload or the keys changed, so that
    /// consumers get every row in its new form. Removed rows are found as on any run.
    pub fn resync(mut self, resync: bool) -> Self {
        self.resync = resync;
        self
    }

    /// The id templates see as `record.run_id` (the CLI's run id). By default each run's is
    /// the time it started (RFC 3339); an engine built once and run many times with an id set
    /// here gives every run that id.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Counters to watch the run by (default: the engine keeps its own).
    pub fn progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// A handle that stops a run early and cleanly (default: a handle nobody holds).
    pub fn interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = interrupt;
        self
    }

    /// Checks that everything is there and the limits are in range.
    pub fn build(self) -> Result<Engine, Error> {
        self.limits.validate()?;
        if let Some(aggregation) = &self.aggregation {
            aggregation.validate()?;
        }
        let records = self.records.ok_or(Error::MissingPart {
            part: "records (a RecordBuilder)",
            method: "records",
        })?;
        let (sink, stream) = self.sink.ok_or(Error::MissingPart {
            part: "a sink and a stream",
            method: "sink",
        })?;
        let state = self.state.ok_or(Error::MissingPart {
            part: "a state store",
            method: "state",
        })?;
        let encoder = RowEncoder::new(records.schema());
        Ok(Engine {
            settings: Settings {
                encoder,
                records: Arc::new(records),
                sink,
                stream,
                events: self.events.unwrap_or_else(Events::all),
                initial: self.initial,
                limits: self.limits,
                aggregation: self.aggregation,
                dry_run: self.dry_run,
                message_excerpts: self.message_excerpts,
                resync: self.resync,
                run_id: self.run_id,
                progress: self.progress.unwrap_or_default(),
                interrupt: self.interrupt,
            },
            state,
            runs: 0,
            sync_changed: Vec::new(),
        })
    }
}

/// What an engine was built with: the same for every run.
pub(crate) struct Settings {
    pub(crate) records: Arc<RecordBuilder>,
    pub(crate) encoder: RowEncoder,
    pub(crate) sink: Arc<dyn KinesisSink>,
    pub(crate) stream: StreamName,
    pub(crate) events: Events,
    pub(crate) initial: Initial,
    pub(crate) limits: Limits,
    pub(crate) aggregation: Option<Aggregation>,
    pub(crate) dry_run: bool,
    pub(crate) message_excerpts: bool,
    pub(crate) resync: bool,
    pub(crate) run_id: Option<String>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) interrupt: Interrupt,
}

impl Settings {
    pub(crate) fn schema(&self) -> &Arc<Schema> {
        self.records.schema()
    }
}

/// A configured sync: run it as often as the model changes. (Named `Engine`, not `Sync`,
/// so that it never shadows the `Sync` marker trait where it is imported.)
pub struct Engine {
    settings: Settings,
    state: SharedState,
    /// Runs so far: each run's jitter seed is the configured seed plus this.
    runs: u64,
    /// What of the sync's definition changed since the last run, found as a run starts.
    sync_changed: Vec<SyncChange>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("stream", &self.settings.stream)
            .field("sink", &self.settings.sink.to_string())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The state store, shared: lock it to look inside between runs.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Runs one sync over a model source; errors about its rows say which line they are on.
    ///
    /// The source is read on a thread of its own, which also encodes and fingerprints each
    /// row, so that reading and parsing the model overlap with rendering and sending.
    pub async fn run_source(&mut self, source: Box<dyn RowSource>) -> Result<RunReport, Error> {
        let locator = source.locator();
        let (codec, preparer) = self.prepare_run()?;
        let prepared = source.map(move |item| match item {
            Ok(read) => preparer.prepare(read).map(Read::Row),
            Err(e) => Err(e.to_string()),
        });
        self.run_prepared(
            codec,
            Some(locator),
            read_on_a_thread(prepared)?,
            Delta::Whole,
        )
        .await
    }

    /// Runs one sync over a model diffed where it lives ([`DeltaSource`]): only the rows
    /// that may need sending come, and the keys gone from the model. Everything else is as
    /// [`run_source`](Self::run_source): events, keys, pacing, commits, the report (whose
    /// `rows_read` counts the rows that came; `events.unchanged` the rest of the state's
    /// keys).
    ///
    /// The source must have been diffed against this engine's state as it is now (opened
    /// after the state, with no run between): what it left out is taken as unchanged.
    ///
    /// An engine built to [`resync`](EngineBuilder::resync) refuses it
    /// ([`Error::ResyncNeedsWholeModel`]): a resync needs every row.
    pub async fn run_delta(&mut self, source: Box<dyn DeltaSource>) -> Result<RunReport, Error> {
        if self.settings.resync {
            return Err(Error::ResyncNeedsWholeModel);
        }
        let locator = source.locator();
        let state_keys = source.state_keys();
        let (codec, preparer) = self.prepare_run()?;
        let mut source = source;
        let mut ended = false;
        // The mark is asked for once the rows have ended (a diff may count them last).
        let prepared = std::iter::from_fn(move || {
            if ended {
                return None;
            }
            Some(match source.next() {
                Some(Ok(DeltaItem::Row(read))) => preparer.prepare(read).map(Read::Row),
                Some(Ok(DeltaItem::Removed(key))) => Ok(Read::Removed(key)),
                Some(Err(e)) => Err(e.to_string()),
                None => {
                    ended = true;
                    return source.watermark().map(|mark| Ok(Read::Watermark(mark)));
                }
            })
        });
        let delta = Delta::Diffed { state_keys };
        self.run_prepared(codec, Some(locator), read_on_a_thread(prepared)?, delta)
            .await
    }

    /// Runs one sync over `rows` (the whole model, in order). Transport failures, row errors
    /// and duplicate keys end up in the report; `Err` is for a state store that fails, or a
    /// stream that cannot be described.
    ///
    /// Call it from within a tokio runtime with timers (`#[tokio::main]`, `#[tokio::test]`, a
    /// runtime built with `enable_all()`): under another executor it returns
    /// [`Error::NoRuntime`], and in a runtime without timers [`Error::NoTimers`], before any
    /// work. The same holds for [`run_rows`](Self::run_rows) and
    /// [`run_source`](Self::run_source).
    pub async fn run<I, R, E>(&mut self, rows: I) -> Result<RunReport, Error>
    where
        I: IntoIterator<Item = Result<R, E>>,
        R: ModelRow,
        E: fmt::Display,
    {
        let (codec, preparer) = self.prepare_run()?;
        let items = rows.into_iter().map(move |item| match item {
            Ok(row) => preparer.prepare(row).map(Read::Row),
            Err(e) => Err(e.to_string()),
        });
        self.run_prepared(codec, None, items, Delta::Whole).await
    }

    /// [`run`](Self::run) over rows that cannot fail to be read (rows already in memory).
    pub async fn run_rows<I, R>(&mut self, rows: I) -> Result<RunReport, Error>
    where
        I: IntoIterator<Item = R>,
        R: ModelRow,
    {
        self.run(rows.into_iter().map(Ok::<R, std::convert::Infallible>))
            .await
    }

    /// The stored-row codec for this run, once the store's column lists are read (and this
    /// schema's added to them), and the preparer that writes rows in its form.
    fn prepare_run(&mut self) -> Result<(RowCodec, Preparer), Error> {
        // Everything a run does is on tokio: say so now rather than panic at the first wait.
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        // tokio cannot be asked whether its timers are on; making one panics when they are
        // off (tokio's hook prints its own line saying so), so try once, before any work.
        let timer = std::panic::catch_unwind(|| {
            drop(tokio::time::sleep(std::time::Duration::ZERO));
        });
        timer.map_err(|_| Error::NoTimers)?;
        let settings = &self.settings;
        let mut store = store::lock(&self.state);
        // A changed primary key stops the run before anything is read.
        self.sync_changed =
            Definition::of(&settings.records, settings.stream.as_str()).compare(&mut *store)?;
        let codec = RowCodec::load(&mut *store, settings.schema(), settings.dry_run)?;
        drop(store);
        let preparer = Preparer {
            encoder: settings.encoder.clone(),
            primary_key: settings.schema().primary_key_index(),
            columns: settings.schema().columns().len(),
            stored_prefix: codec.prefix(),
        };
        Ok((codec, preparer))
    }

    async fn run_prepared(
        &mut self,
        codec: RowCodec,
        locator: Option<Locator>,
        rows: impl Iterator<Item = Result<Read, String>>,
        delta: Delta,
    ) -> Result<RunReport, Error> {
        self.runs += 1;
        let run = Run::start(
            &self.settings,
            self.state.clone(),
            codec,
            locator,
            self.runs,
            std::mem::take(&mut self.sync_changed),
            match &delta {
                Delta::Diffed { state_keys, .. } => *state_keys,
                Delta::Whole => None,
            },
        )
        .await?;
        run.execute(rows, delta).await
    }
}

/// `prepared`, read (and so prepared) on a thread of its own. A reading thread that dies ends
/// the rows with an error, never silently: rows it never read must not count as removed.
fn read_on_a_thread(
    prepared: impl Iterator<Item = Result<Read, String>> + Send + 'static,
) -> Result<impl Iterator<Item = Result<Read, String>>, Error> {
    Ok(kinesync_source::read_ahead(prepared)
        .map_err(|source| Error::Thread {
            job: "reads the model",
            source,
        })?
        .map(|item| item.unwrap_or_else(|stopped| Err(stopped.to_string()))))
}
