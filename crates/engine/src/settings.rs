//! What a sync is told: which events it sends, what its first run does, and how hard it
//! pushes. Checked once, when the engine is built, with errors that name the setting.

use std::time::Duration;

use kinesync_payload::Event;
use kinesync_transport::{MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL};

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

/// Why a list of event names is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// A name that is not an event.
    #[error("unknown event {name:?}: use added, changed or removed")]
    Unknown {
        /// The name given.
        name: String,
    },
    /// No event at all: the sync would never send anything.
    #[error("events is empty: name at least one of added, changed, removed")]
    Empty,
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
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, EventsError> {
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
                    return Err(EventsError::Unknown {
                        name: other.to_owned(),
                    });
                }
            }
        }
        if !(events.added || events.changed || events.removed) {
            return Err(EventsError::Empty);
        }
        Ok(events)
    }

    pub(crate) fn sends(self, event: Event) -> bool {
        match event {
            Event::Added => self.added,
            Event::Changed => self.changed,
            Event::Removed => self.removed,
        }
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

/// The most calls a sync may have in flight: past a few per shard, more calls only queue at
/// the stream.
pub const MAX_IN_FLIGHT: usize = 256;

/// How hard a sync pushes, and how long it keeps trying.
///
/// Build it from its default and change what you need:
/// `Limits { max_in_flight: Some(8), ..Limits::default() }`. The fields are public so that
/// this reads naturally; new settings will come with defaults, so a struct written that way
/// keeps compiling, while one that names every field does not. (What a run reports,
/// [`RunReport`](crate::RunReport) and its parts, is `#[non_exhaustive]` instead: it is only
/// read.)
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Calls in flight at once (1..=[`MAX_IN_FLIGHT`]); by default twice the stream's open
    /// shards, within 2..=64.
    pub max_in_flight: Option<usize>,
    /// Records per call (at most the service's 500).
    pub max_batch_records: usize,
    /// Bytes per call, partition keys included (at most the service's 10 MiB).
    pub max_batch_bytes: usize,
    /// Failed attempts per record before it is left pending for the next run. Throttles do
    /// not count: they are the stream's pacing, and the record goes out again when its shard
    /// has room.
    pub max_attempts: u32,
    /// How long the run goes on while records wait and the stream acknowledges none of them
    /// (a dead endpoint, a stream that refuses everything): then it stops, with the last
    /// failure as its error. A run that keeps getting records acknowledged keeps going.
    pub retry_time: Duration,
    /// The most records per second sent to one shard: the service's 1,000 by default. The
    /// rate each shard is sent is found below this from the stream's throttles; lower it to
    /// leave room for other producers on a stream shared on purpose. `f64::INFINITY` (here
    /// or in the bytes) sends as fast as the stream takes, unpaced: for streams without
    /// limits, such as a benchmark's.
    pub shard_records_per_second: f64,
    /// The most bytes (data plus partition key) per second sent to one shard: the service's
    /// 1 MiB by default.
    pub shard_bytes_per_second: f64,
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
    /// The largest share (0.0..=1.0) of the state's rows one run may remove. A run whose
    /// model lacks more sends no removal and ends [`RemovalsHeld`](crate::Outcome::RemovalsHeld):
    /// an empty file or a broken query would otherwise remove every row downstream. 1.0
    /// allows any removal.
    pub max_removed_share: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: None,
            max_batch_records: MAX_RECORDS_PER_CALL,
            max_batch_bytes: MAX_BYTES_PER_CALL,
            max_attempts: 10,
            retry_time: Duration::from_secs(120),
            shard_records_per_second: 1000.0,
            shard_bytes_per_second: 1024.0 * 1024.0,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            chunk_rows: 1000,
            build_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            max_backlog: 5000,
            keys_in_memory: 1 << 18,
            seed: None,
            max_removed_share: 0.5,
        }
    }
}

/// Many records packed into one Kinesis record, in the Kinesis Producer Library's
/// aggregation format, which the KCL, Lambda (with AWS's deaggregation modules) and the Flink
/// and Spark sources read transparently. A shard takes 1,000 records and 1 MiB a second: rows
/// of a few hundred bytes fill its records long before its bytes, and packed, they fill its
/// bytes. Records of one partition key also go many per call this way, in order.
///
/// Build it with [`Aggregation::default`] or [`Aggregation::with_max_bytes`]; it is
/// `#[non_exhaustive]`, so that packing settings can be added without breaking callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Aggregation {
    /// The largest aggregated record, data plus partition key: the KPL's 51,200 by default.
    /// A run lowers it to the stream's maximum record size if that is smaller. A record too
    /// large to share an aggregate this size goes out alone, unaggregated.
    pub max_bytes: usize,
}

impl Default for Aggregation {
    fn default() -> Self {
        Self {
            max_bytes: kinesync_transport::aggregate::DEFAULT_AGGREGATE_MAX_BYTES,
        }
    }
}

/// The smallest `aggregate_max_bytes`: below a kibibyte an aggregate holds too little to be
/// worth its 20 bytes of framing.
pub const MIN_AGGREGATE_BYTES: usize = 1024;

impl Aggregation {
    /// Aggregated records of at most `max_bytes` (see [`validate`](Self::validate)).
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self { max_bytes }
    }

    /// Refuses a size no stream takes, or too small to pack anything.
    pub fn validate(&self) -> Result<(), LimitError> {
        if (MIN_AGGREGATE_BYTES..=MAX_BYTES_PER_CALL).contains(&self.max_bytes) {
            return Ok(());
        }
        Err(LimitError {
            setting: "aggregate_max_bytes",
            value: self.max_bytes.to_string(),
            allowed: format!("{MIN_AGGREGATE_BYTES}..={MAX_BYTES_PER_CALL}"),
        })
    }
}

/// A limit out of its range: which one, what it was, and what it may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} must be {allowed}, not {value}")]
pub struct LimitError {
    /// The setting's name, as [`Limits`] spells it.
    pub setting: &'static str,
    /// The value given.
    pub value: String,
    /// The range it may take.
    pub allowed: String,
}

impl Limits {
    /// Refuses limits the service would refuse, rather than clamping them silently; the error
    /// names the first setting that is out of range.
    pub fn validate(&self) -> Result<(), LimitError> {
        fn within(
            setting: &'static str,
            value: usize,
            range: std::ops::RangeInclusive<usize>,
        ) -> Result<(), LimitError> {
            if range.contains(&value) {
                return Ok(());
            }
            Err(LimitError {
                setting,
                value: value.to_string(),
                allowed: format!("{}..={}", range.start(), range.end()),
            })
        }
        fn at_least_one(setting: &'static str, value: u64) -> Result<(), LimitError> {
            if value >= 1 {
                return Ok(());
            }
            Err(LimitError {
                setting,
                value: value.to_string(),
                allowed: "at least 1".into(),
            })
        }
        within(
            "max_batch_records",
            self.max_batch_records,
            1..=MAX_RECORDS_PER_CALL,
        )?;
        within(
            "max_batch_bytes",
            self.max_batch_bytes,
            1..=MAX_BYTES_PER_CALL,
        )?;
        if let Some(in_flight) = self.max_in_flight {
            within("max_in_flight", in_flight, 1..=MAX_IN_FLIGHT)?;
        }
        at_least_one("max_attempts", u64::from(self.max_attempts))?;
        at_least_one("chunk_rows", self.chunk_rows as u64)?;
        at_least_one("build_threads", self.build_threads as u64)?;
        at_least_one("max_backlog", self.max_backlog as u64)?;
        at_least_one("keys_in_memory", self.keys_in_memory as u64)?;
        for (setting, value) in [
            ("shard_records_per_second", self.shard_records_per_second),
            ("shard_bytes_per_second", self.shard_bytes_per_second),
        ] {
            // NaN fails this too; infinity is allowed (unpaced).
            if value.is_nan() || value < 1.0 {
                return Err(LimitError {
                    setting,
                    value: value.to_string(),
                    allowed: "a number of at least 1 (inf: unpaced)".into(),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.max_removed_share) {
            return Err(LimitError {
                setting: "max_removed_share",
                value: self.max_removed_share.to_string(),
                allowed: "0.0..=1.0".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_limit_is_named_alone() {
        let limits = Limits {
            build_threads: 0,
            ..Limits::default()
        };
        let error = limits.validate().unwrap_err();
        assert_eq!(error.setting, "build_threads");
        assert_eq!(error.to_string(), "build_threads must be at least 1, not 0");
        let limits = Limits {
            max_batch_records: 501,
            ..Limits::default()
        };
        assert_eq!(
            limits.validate().unwrap_err().to_string(),
            "max_batch_records must be 1..=500, not 501"
        );
        assert!(Limits::default().validate().is_ok());
    }

    #[test]
    fn event_names_are_checked() {
        assert_eq!(
            Events::from_names(&["added", "removed"]).unwrap(),
            Events {
                added: true,
                changed: false,
                removed: true
            }
        );
        assert_eq!(
            Events::from_names(&["gone"]).unwrap_err(),
            EventsError::Unknown {
                name: "gone".into()
            }
        );
        assert_eq!(
            Events::from_names::<&str>(&[]).unwrap_err(),
            EventsError::Empty
        );
    }
}
