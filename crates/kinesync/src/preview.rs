//! See the records a model would become, before anything is sent: one JSON line per row
//! (`kinesync preview`), or one readable text for snapshot tests.
//!
//! A template author's own crate can keep its templates under test with insta:
//!
//! ```no_run
//! #[test]
//! fn signup_template() {
//!     // `{e}` (Display) shows a compile error as a compiler does: line, column, what to fix.
//!     let text = kinesync::preview::snapshot_files("kinesync.toml", "fixtures/users.ndjson")
//!         .unwrap_or_else(|e| panic!("{e}"));
//!     insta::assert_snapshot!(text);
//! }
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use kinesync_keys::ShardMap;
use kinesync_payload::{Event, RecordInfo, RenderInput, Row, Value};
use kinesync_source::RowSource;

use crate::Error;
use crate::config::Config;
use crate::{Record, RecordBuilder, RowError};

/// What a preview shows of the record a message goes out in: the same fixed values for every
/// row, so that previews and snapshots are the same from run to run.
pub const PREVIEW_RECORD: RecordInfo<'static> = RecordInfo {
    id: "00000000-0000-7000-8000-000000000000",
    run_id: "preview",
    sent_at: "1970-01-01T00:00:00.000Z",
};

/// How to preview: the simulated stream's shard count and the event rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PreviewOptions {
    /// Shards of the simulated, evenly split stream.
    pub shards: u32,
    /// The event templates see. For `changed`, `previous` is the row itself (there is no
    /// earlier version in a preview); for `added` and `removed` there is no `previous`.
    pub event: Event,
    /// The largest record (message plus partition key) the stream takes: a larger one is a
    /// row error in the preview, as it would be in a sync. 1 MiB, the service's default.
    pub max_record_bytes: usize,
}

/// The service's default maximum record size: what a preview checks records against.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

impl PreviewOptions {
    /// The defaults with `shards` and `event`.
    pub fn new(shards: u32, event: Event) -> Self {
        Self {
            shards,
            event,
            ..Self::default()
        }
    }
}

impl Default for PreviewOptions {
    fn default() -> Self {
        Self {
            shards: 4,
            event: Event::Added,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// One line of `kinesync preview` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewLine {
    /// The JSON text.
    pub text: String,
    /// Whether it describes a row error rather than a record.
    pub is_error: bool,
}

/// Rows to records, on a simulated stream.
#[derive(Debug)]
pub struct Preview {
    builder: RecordBuilder,
    shards: ShardMap,
    event: Event,
    max_record_bytes: usize,
    /// The primary keys previewed so far, to report one read twice as `sync` would refuse it.
    seen: Mutex<HashSet<String>>,
}

impl Preview {
    /// A preview of `builder`'s records on `shards`, rendered as `event`.
    pub fn new(builder: RecordBuilder, shards: ShardMap, event: Event) -> Self {
        Self {
            builder,
            shards,
            event,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The same preview, checking records against `max_record_bytes`.
    pub fn with_max_record_bytes(mut self, max_record_bytes: usize) -> Self {
        self.max_record_bytes = max_record_bytes;
        self
    }

    /// Opens the rows (`rows`, or the config's source) and compiles the config's payload and
    /// keys against their schema. Every compile problem is reported at once.
    pub fn open(
        config: &Config,
        rows: Option<&Path>,
        options: PreviewOptions,
    ) -> Result<(Self, Box<dyn RowSource>), Error> {
        let source = match rows {
            Some(rows) => crate::model::open_file(config, rows)?,
            None => crate::model::open(config)?,
        };
        let builder = crate::records_for(config, source.schema())?;
        let shards = ShardMap::even(options.shards).map_err(Error::Shards)?;
        let preview = Self::new(builder, shards, options.event)
            .with_max_record_bytes(options.max_record_bytes);
        Ok((preview, source))
    }

    /// The row's record, or its error, as a sync would find it: a key read twice, or a
    /// record over the largest the stream takes, too.
    fn record(&self, row: &Row) -> Result<Record, PreviewError> {
        let primary_key = self.primary_key(row);
        let first = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(primary_key.clone());
        if !first {
            return Err(PreviewError::Duplicate(primary_key));
        }
        let input = match self.event {
            Event::Changed => RenderInput::new(row, Event::Changed).with_previous(row),
            event => RenderInput::new(row, event),
        };
        let input = input
            .with_record(PREVIEW_RECORD)
            .with_max_bytes(self.max_record_bytes);
        let record = self.builder.build(input).map_err(PreviewError::Row)?;
        let size = record.data.len() + record.partition_key.byte_len();
        if size > self.max_record_bytes {
            return Err(PreviewError::Row(RowError::Render(
                kinesync_payload::RenderError {
                    primary_key,
                    kind: kinesync_payload::RenderErrorKind::TooLarge {
                        max_bytes: self.max_record_bytes,
                    },
                },
            )));
        }
        Ok(record)
    }

    fn primary_key(&self, row: &Row) -> String {
        row.get(self.builder.schema().primary_key_index())
            .to_json_string()
    }

    /// One line of JSON describing `row`'s record (or its error), as `kinesync preview`
    /// prints it: `{"primary_key":…,"partition_key":"…","explicit_hash_key":null|"…",
    /// "shard":"shardId-…","data":<message>}` or `{"primary_key":…,"error":{"kind":…,"message":…}}`.
    pub fn json_line(&self, row: &Row) -> PreviewLine {
        let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
        let primary_key = self.primary_key(row);
        let record = self.record(row);
        let is_error = record.is_err();
        let text = match record {
            Ok(record) => format!(
                r#"{{"primary_key":{primary_key},"partition_key":{},"explicit_hash_key":{},"shard":{},"data":{}}}"#,
                quote(record.partition_key.as_str()),
                record
                    .explicit_hash_key
                    .map_or_else(|| "null".to_owned(), |k| quote(&k.to_string())),
                quote(self.shards.shard_for(record.hash_key()).id()),
                String::from_utf8_lossy(&record.data),
            ),
            Err(e) => format!(
                r#"{{"primary_key":{primary_key},"error":{{"kind":{},"message":{}}}}}"#,
                quote(e.kind()),
                quote(&e.reason()),
            ),
        };
        PreviewLine { text, is_error }
    }

    /// A stable, readable text of every row's record, for `insta::assert_snapshot!`: per row,
    /// its primary key, partition key, explicit hash key, shard, and the message pretty-printed
    /// (keys in the order the payload wrote them), or the row's error.
    pub fn snapshot<I: IntoIterator<Item = Row>>(&self, rows: I) -> String {
        let mut out = String::new();
        for (i, row) in rows.into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let primary_key = self.primary_key(&row);
            match self.record(&row) {
                Ok(record) => {
                    out.push_str(&format!(
                        "row {primary_key} · partition key {:?} · shard {}",
                        record.partition_key.as_str(),
                        self.shards.shard_for(record.hash_key()).id()
                    ));
                    if let Some(explicit) = record.explicit_hash_key {
                        out.push_str(&format!(" · explicit hash key {explicit}"));
                    }
                    let message: Value =
                        serde_json::from_slice(&record.data).expect("messages are valid JSON");
                    let pretty = serde_json::to_string_pretty(&message).expect("values serialize");
                    out.push_str(&format!("\n{pretty}\n"));
                }
                Err(e) => out.push_str(&format!(
                    "row {primary_key} · error ({}): {}\n",
                    e.kind(),
                    e.reason()
                )),
            }
        }
        out
    }
}

/// Why a previewed row has no record: its own error, or a primary key read before.
#[derive(Debug)]
enum PreviewError {
    Row(RowError),
    Duplicate(String),
}

impl PreviewError {
    fn kind(&self) -> &'static str {
        match self {
            PreviewError::Row(e) => e.kind(),
            PreviewError::Duplicate(_) => "duplicate_primary_key",
        }
    }

    fn reason(&self) -> String {
        match self {
            PreviewError::Row(e) => e.reason(),
            PreviewError::Duplicate(key) => format!(
                "primary key {key} appears more than once among the rows previewed: `kinesync sync` refuses a model whose primary keys are not unique"
            ),
        }
    }
}

/// The snapshot text of every row of `rows` under the config file `config` (with the default
/// preview options: 4 shards, `added`): the one-liner for a template author's insta test.
pub fn snapshot_files(config: impl AsRef<Path>, rows: impl AsRef<Path>) -> Result<String, Error> {
    snapshot(config.as_ref(), Some(rows.as_ref()))
}

/// The snapshot text of every row of the config's own `[source]`.
pub fn snapshot_config(config: impl AsRef<Path>) -> Result<String, Error> {
    snapshot(config.as_ref(), None)
}

fn snapshot(config: &Path, rows: Option<&Path>) -> Result<String, Error> {
    let config = Config::from_file(config)?;
    let (preview, source) = Preview::open(&config, rows, PreviewOptions::default())?;
    let rows = source
        .map(|r| r.map(|r| r.row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(preview.snapshot(rows))
}
