//! What a run did, for people and for machines (`--report FILE` writes it as JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::definition::SyncChange;

/// How many row errors a report lists one by one; the rest are only counted.
pub const MAX_LISTED_ROW_ERRORS: usize = 100;

/// How a run ended.
///
/// Not `#[non_exhaustive]`, on purpose: what a caller does with a run (its exit code, whether
/// to alert) must be decided for every way a run can end, so a new one is a compile error in
/// the caller's `match`, not a silent wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    /// Every record that was to be sent was acknowledged.
    Complete,
    /// The run finished, but some rows are pending (not acknowledged, or in error); the next
    /// run picks them up.
    Partial,
    /// The run stopped early; what was acknowledged before is committed.
    Failed {
        /// Why, with what to do.
        error: String,
    },
    /// The first run recorded the model as its baseline and sent nothing (`initial = "skip"`).
    Baseline,
    /// A dry run: everything but sending and committing was done.
    DryRun,
    /// The run was asked to stop ([`Interrupt`](crate::Interrupt)): it read no further, let
    /// the calls in flight finish and committed what they got acknowledged. The next run sends
    /// the rest.
    Interrupted,
    /// The run would have removed more of the state's rows than
    /// [`Limits::max_removed_share`](crate::Limits::max_removed_share) allows, so it sent no
    /// removal (added and changed rows went out as usual). A model that lost most of its rows
    /// at once is more often a broken query or an empty file than the truth.
    RemovalsHeld {
        /// Rows the state has and the model no longer does.
        removals: u64,
        /// Rows in the state as the run started.
        state_rows: u64,
        /// The most removals the share allowed.
        allowed: u64,
    },
}

/// Changes found in the model, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventCounts {
    /// New primary keys.
    pub added: u64,
    /// Rows whose content changed.
    pub changed: u64,
    /// Primary keys gone from the model.
    pub removed: u64,
    /// Rows as last sent.
    pub unchanged: u64,
    /// Changes found but not sent, because the events trigger leaves them out (the state
    /// still moves on to them).
    pub not_triggered: u64,
}

impl EventCounts {
    /// Adds `other`'s counts to these.
    pub(crate) fn add(&mut self, other: &EventCounts) {
        self.added += other.added;
        self.changed += other.changed;
        self.removed += other.removed;
        self.unchanged += other.unchanged;
        self.not_triggered += other.not_triggered;
    }
}

/// Records, by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordCounts {
    /// Records built to send.
    pub to_send: u64,
    /// Records acknowledged by the stream (and committed).
    pub acknowledged: u64,
    /// Records not acknowledged by the end of the run: sent again by the next run.
    pub pending: u64,
}

/// One row that could not become a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RowErrorEntry {
    /// The row's primary key, as JSON.
    pub primary_key: String,
    /// A short, stable kind (`invalid_json`, `partition_key`, `record_too_large`, ...).
    pub kind: String,
    /// What is wrong.
    pub message: String,
}

/// Row errors: counted by kind, the first ones listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RowErrors {
    /// All row errors.
    pub total: u64,
    /// Counted by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// The first [`MAX_LISTED_ROW_ERRORS`].
    pub first: Vec<RowErrorEntry>,
}

impl RowErrors {
    pub(crate) fn add(&mut self, primary_key: String, kind: &str, message: String) {
        self.total += 1;
        *self.by_kind.entry(kind.to_owned()).or_default() += 1;
        if self.first.len() < MAX_LISTED_ROW_ERRORS {
            self.first.push(RowErrorEntry {
                primary_key,
                kind: kind.to_owned(),
                message,
            });
        }
    }
}

/// Everything one run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// How it ended.
    pub outcome: Outcome,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The stream.
    pub stream: String,
    /// Rows read from the model. When it was diffed where it lives
    /// ([`diffed_at_source`](Self::diffed_at_source)), only the rows that came: those that
    /// may have needed sending.
    pub rows_read: u64,
    /// Whether the model was diffed where it lives (the warehouse's SQL): rows the state holds
    /// unchanged never came, and are counted from the state (once the whole diff was read:
    /// a run that stopped before, or could not read a row, counts none).
    #[serde(default)]
    pub diffed_at_source: bool,
    /// Model entries that were not rows at all (a malformed line), skipped.
    pub unreadable_rows: u64,
    /// Changes found.
    pub events: EventCounts,
    /// Records.
    pub records: RecordCounts,
    /// Rows in error.
    pub row_errors: RowErrors,
    /// Records sent again after a failure.
    pub retries: u64,
    /// Records the stream throttled (each time).
    pub throttled_records: u64,
    /// `PutRecords` calls made.
    pub calls: u64,
    /// Bytes (data and partition keys) sent, retries included.
    pub bytes_sent: u64,
    /// Whether this was a dry run (nothing sent, nothing committed).
    #[serde(default)]
    pub dry_run: bool,
    /// A dry run's records by the shard they would go to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_shard: BTreeMap<String, u64>,
    /// What of the sync's definition changed since the last run (rows sent before keep what
    /// they were sent with; a resync sends every row again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_changed: Vec<SyncChange>,
    /// Whether this run was a resync: every row sent again.
    #[serde(default)]
    pub resync: bool,
    /// Per shard: records sent (attempts), throttled, and the rate it was paced at by the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardReport>,
    /// A dry run's estimate of how long sending would take at the stream's capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<SendEstimate>,
    /// How records were packed into aggregated records, when aggregation was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<Packing>,
    /// What the run adapted to, said once (calls made smaller for an endpoint's cap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How a run packed its records (its user records: one per row) into Kinesis records, when
/// aggregation was on. A dry run counts how they would pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Packing {
    /// The largest aggregated record the run made (bytes, data plus partition key).
    pub max_bytes: usize,
    /// User records acknowledged (in a dry run: that would be sent).
    pub user_records: u64,
    /// Kinesis records acknowledged (in a dry run: that would be sent): aggregates, and user
    /// records that went alone.
    pub kinesis_records: u64,
    /// User records that went inside aggregates.
    pub aggregated: u64,
}

impl Packing {
    /// User records per Kinesis record.
    pub fn ratio(&self) -> f64 {
        self.user_records as f64 / self.kinesis_records.max(1) as f64
    }

    /// One line: what was packed into what, and per call, given the run's calls.
    pub fn describe(&self, calls: u64) -> String {
        let mut text = format!(
            "packed {} records into {} Kinesis records ({:.1} per record, aggregates of at most {} bytes)",
            self.user_records,
            self.kinesis_records,
            self.ratio(),
            self.max_bytes
        );
        if calls > 0 {
            text.push_str(&format!(
                "; per call {:.1} records in {:.1} Kinesis records",
                self.user_records as f64 / calls as f64,
                self.kinesis_records as f64 / calls as f64
            ));
        }
        text
    }
}

/// How long a dry run's records would take to send, at each shard's ceiling of records and
/// bytes (aggregated records, when aggregation is on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SendEstimate {
    /// The ceiling per shard.
    pub shard_records_per_second: f64,
    /// The bytes per second ceiling per shard.
    #[serde(default)]
    pub shard_bytes_per_second: f64,
    /// The least time: the busiest shard's Kinesis records and bytes after its one-second
    /// burst, at the ceilings.
    pub least_seconds: f64,
    /// The busiest shard's share of the records: what sets the pace when keys are skewed.
    pub busiest_share: f64,
    /// The stream's open shards.
    pub shards: usize,
}

/// What one shard was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShardReport {
    /// The shard's id.
    pub shard: String,
    /// Record attempts sent to it (throttled ones again each time).
    pub attempts: u64,
    /// Record attempts it throttled.
    pub throttled: u64,
    /// The records per second it was paced at when the run ended: its limit as found, or the
    /// ceiling if it never throttled.
    pub paced_per_second: f64,
}

impl RunReport {
    /// A report of a run that has just started: nothing counted yet, its outcome `Complete`
    /// until something says otherwise.
    pub(crate) fn new(started_at: String, stream: &str, dry_run: bool) -> Self {
        Self {
            outcome: Outcome::Complete,
            started_at,
            duration_ms: 0,
            stream: stream.to_owned(),
            rows_read: 0,
            diffed_at_source: false,
            unreadable_rows: 0,
            events: EventCounts::default(),
            records: RecordCounts::default(),
            row_errors: RowErrors::default(),
            retries: 0,
            throttled_records: 0,
            calls: 0,
            bytes_sent: 0,
            dry_run,
            by_shard: BTreeMap::new(),
            sync_changed: Vec::new(),
            resync: false,
            shards: Vec::new(),
            estimate: None,
            packing: None,
            notes: Vec::new(),
        }
    }

    /// A short human summary.
    pub fn summary(&self) -> String {
        let outcome = match &self.outcome {
            Outcome::Complete => "complete".to_owned(),
            Outcome::Partial => {
                let (pending, errors) = (self.records.pending, self.row_errors.total);
                let mut parts = Vec::new();
                if pending > 0 {
                    parts.push(format!(
                        "{pending} records are pending and will be sent by the next run"
                    ));
                }
                if errors > 0 {
                    parts.push(format!(
                        "{errors} rows are in error (listed below): each run tries them again, and they go out once the row or the template is fixed"
                    ));
                }
                format!("partial: {}", parts.join("; "))
            }
            Outcome::Failed { error } => format!("failed: {error}"),
            Outcome::Baseline => "baseline recorded; nothing sent (initial = \"skip\")".to_owned(),
            Outcome::Interrupted => "interrupted: the calls in flight finished and were committed; the next run sends the rest".to_owned(),
            Outcome::RemovalsHeld {
                removals,
                state_rows,
                allowed,
            } => format!(
                "removals held: the model lacks {removals} of the {state_rows} rows last sent, more than the {allowed} that max_removed_share allows, so no removal was sent (added and changed rows were); if the model really lost them, allow it for one run or raise max_removed_share"
            ),
            Outcome::DryRun => {
                let mut text = format!(
                    "dry run: nothing sent, nothing committed; {} records would be sent",
                    self.records.to_send
                );
                for (shard, count) in &self.by_shard {
                    text.push_str(&format!("\n  {shard}  {count} records"));
                }
                if let Some(packing) = &self.packing {
                    text.push_str(&format!("\nwould be {}", packing.describe(0)));
                }
                if let Some(estimate) = &self.estimate {
                    text.push_str(&format!(
                        "\nat {} records/s and {} bytes/s per shard (after a second's burst), sending takes at least {:.1} s; the busiest shard has {:.0}% of the records{}",
                        estimate.shard_records_per_second,
                        estimate.shard_bytes_per_second,
                        estimate.least_seconds,
                        estimate.busiest_share * 100.0,
                        if estimate.busiest_share * estimate.shards as f64 > 1.5 {
                            " and sets the pace: a partition key that spreads the rows would be faster"
                        } else {
                            ""
                        }
                    ));
                }
                text
            }
        };
        let mut notes = String::new();
        for note in &self.notes {
            notes.push_str(&format!("\n{note}"));
        }
        if let (Some(packing), false) = (&self.packing, self.dry_run) {
            notes.push_str(&format!("\n{}", packing.describe(self.calls)));
        }
        if self.resync {
            notes.push_str("\nresync: every row of the model was sent again");
        }
        if !self.sync_changed.is_empty() {
            let parts: Vec<String> = self.sync_changed.iter().map(ToString::to_string).collect();
            notes.push_str(&format!(
                "\nthe sync changed since the last run ({}): rows sent before keep what they were sent with{}",
                parts.join(", "),
                if self.resync {
                    ""
                } else {
                    "; a resync (`kinesync sync --resync`) sends every row again"
                }
            ));
        }
        format!(
            "{outcome}{notes}\nrows read {}{} · added {} · changed {} · removed {} · unchanged {}\nrecords acknowledged {} of {} · pending {} · row errors {} · retries {} · throttled {} · calls {} · {:.1} s",
            self.rows_read,
            if self.diffed_at_source {
                " (diffed in the warehouse)"
            } else {
                ""
            },
            self.events.added,
            self.events.changed,
            self.events.removed,
            self.events.unchanged,
            self.records.acknowledged,
            self.records.to_send,
            self.records.pending,
            self.row_errors.total,
            self.retries,
            self.throttled_records,
            self.calls,
            self.duration_ms as f64 / 1000.0,
        )
    }
}
