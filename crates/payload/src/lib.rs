//! Rows in, JSON messages out: the payload engine of kinesync.
//!
//! Where it sits in a sync (source → engine: prepare, diff, build, batch, send, commit → sink):
//! the message of the build stage: the engine's build threads ask it to render each row (and
//! `preview` to show it).
//!
//! A [`PayloadSpec`] says how a row becomes a message, in one of four modes:
//!
//! | mode | message |
//! |---|---|
//! | [`PayloadSpec::Row`] | the whole row as a JSON object, columns in schema order |
//! | [`PayloadSpec::Column`] | one column that already holds a JSON object or array |
//! | [`PayloadSpec::Mapping`] | chosen columns, renamed, in the order given |
//! | [`PayloadSpec::Template`] | a Liquid template, JSON-safe by default |
//!
//! [`Payload::compile`] checks a spec against the model's [`Schema`] once and reports every
//! problem with its place ([`CompileErrors`]); rendering a row afterwards either gives compact,
//! valid JSON or a [`RenderError`] naming the row's primary key. Nothing here does I/O, and
//! nothing panics on input.
//!
//! ```
//! use kinesync::payload::{Event, Payload, PayloadSpec, RenderInput, Row, Schema, Value};
//!
//! let schema = Schema::new(["id", "name"], "id").unwrap();
//! let spec = PayloadSpec::template(r#"{"id": {{ row.id }}, "greeting": "hi {{ row.name }}"}"#);
//! let payload = Payload::compile(&spec, schema).unwrap();
//!
//! let row = Row::new(vec![Value::Int(7), Value::from(r#"Ada "the" Countess"#)]);
//! let message = payload.render(RenderInput::new(&row, Event::Added)).unwrap();
//! assert_eq!(message, br#"{"id":7,"greeting":"hi Ada \"the\" Countess"}"#);
//! ```
//!
//! # JSON safety
//!
//! Template authors write `"name": "{{ row.name }}"`, and a quote in a name would break the
//! message. In the default [`Escape::Json`] mode an output tag inside a JSON string of the
//! template is escaped as string content (null as the empty string), and one outside any
//! string is written as a JSON value (`null`, bare numbers and booleans, quoted strings,
//! arrays and objects as JSON). The `json` filter writes a value as JSON text explicitly.
//! [`Escape::None`] renders plain Liquid for templates that escape for themselves; its output
//! is still checked.
//!
//! # Speed
//!
//! Rows are read in place through Liquid's `ObjectView`, never converted per row; output tags
//! write JSON straight into the output buffer; `row` and `mapping` modes write JSON from the
//! values with keys escaped once at compile time. See the README for measured rates.

mod error;
pub mod exact;
mod json;
mod json_strings;
mod record_info;
mod schema;
mod template;
mod value;
mod view;

use std::fmt;
use std::sync::{Arc, LazyLock};

use liquid_core::model::{KStringCow, ObjectView, ValueView};

pub use error::{CompileError, CompileErrors, Location, RenderError, RenderErrorKind};
pub use json::InvalidJson;
pub use record_info::RecordInfo;
pub use schema::{Row, Schema, SchemaError};
pub use template::{Escape, MAX_LOOP_ITERATIONS};
pub use value::{Object, Value};

use schema::RowView;
use template::CompiledTemplate;
use view::object_value_view;

/// Which change a row's message reports. Templates see it as `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The primary key is new.
    Added,
    /// The row differs from the last version sent.
    Changed,
    /// The primary key is gone from the model; the row is its last version sent.
    Removed,
}

impl Event {
    /// `"added"`, `"changed"` or `"removed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Added => "added",
            Event::Changed => "changed",
            Event::Removed => "removed",
        }
    }

    /// All three, in order.
    pub const ALL: [Event; 3] = [Event::Added, Event::Changed, Event::Removed];
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an event's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {name:?}: expected added, changed or removed")]
pub struct UnknownEvent {
    /// The name given.
    pub name: String,
}

impl std::str::FromStr for Event {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "added" => Ok(Event::Added),
            "changed" => Ok(Event::Changed),
            "removed" => Ok(Event::Removed),
            other => Err(UnknownEvent {
                name: other.to_owned(),
            }),
        }
    }
}

/// One field of a mapping: a source column and the name it is written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMapping {
    /// The column to read.
    pub from: String,
    /// The key to write it under.
    pub to: String,
}

impl FieldMapping {
    /// Maps column `from` to key `to`.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
        }
    }
}

/// How a row becomes a message, before it is checked against a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadSpec {
    /// The whole row as one JSON object, columns in schema order.
    Row,
    /// One column already holds the message: a JSON object or array, or a string that parses
    /// as one.
    Column {
        /// The column.
        column: String,
    },
    /// Chosen columns, each renamed, in the order given.
    Mapping {
        /// The fields.
        fields: Vec<FieldMapping>,
    },
    /// A Liquid template with `row`, `event` and `previous` in scope.
    Template {
        /// The template's text.
        source: String,
        /// JSON-safe (default) or plain Liquid.
        escape: Escape,
    },
}

impl PayloadSpec {
    /// The spec as one text, the same for equal specs from one kinesync version to the next:
    /// what a sync keeps (hashed) to notice that its messages changed. Each part is written
    /// after its length, so that no two specs give the same text.
    pub fn canonical(&self) -> String {
        let mut text = String::new();
        let mut part = |p: &str| text.push_str(&format!("{}:{p};", p.len()));
        match self {
            PayloadSpec::Row => part("row"),
            PayloadSpec::Column { column } => {
                part("column");
                part(column);
            }
            PayloadSpec::Mapping { fields } => {
                part("mapping");
                for field in fields {
                    part(&field.from);
                    part(&field.to);
                }
            }
            PayloadSpec::Template { source, escape } => {
                part("template");
                part(match escape {
                    Escape::Json => "json",
                    Escape::None => "none",
                });
                part(source);
            }
        }
        text
    }

    /// A JSON-safe template.
    pub fn template(source: impl Into<String>) -> Self {
        PayloadSpec::Template {
            source: source.into(),
            escape: Escape::Json,
        }
    }
}

/// What one message is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    /// The row: the new version for added and changed rows, the last sent one for removed.
    pub row: &'a Row,
    /// The change being reported.
    pub event: Event,
    /// For a changed row, the last version sent; otherwise `None`.
    pub previous: Option<&'a Row>,
    /// The record the message goes out in (templates: `record`), when the caller knows it.
    /// Without one, `record` is nil, and a template reading `record.id` fails for the row.
    pub record: Option<RecordInfo<'a>>,
    /// The largest message the caller takes (a stream's maximum record size): a template
    /// stops rendering as soon as its output passes it. [`MAX_MESSAGE_BYTES`] by default.
    pub max_bytes: usize,
}

/// The largest message by default: 10 MiB, the largest record any Kinesis stream takes.
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

impl<'a> RenderInput<'a> {
    /// `row` reported as `event`, without a previous version.
    pub fn new(row: &'a Row, event: Event) -> Self {
        Self {
            row,
            event,
            previous: None,
            record: None,
            max_bytes: MAX_MESSAGE_BYTES,
        }
    }

    /// The same input, for a caller that takes messages of at most `max_bytes`.
    pub fn with_max_bytes(self, max_bytes: usize) -> Self {
        Self { max_bytes, ..self }
    }

    /// The same input with the record it goes out in.
    pub fn with_record(self, record: RecordInfo<'a>) -> Self {
        Self {
            record: Some(record),
            ..self
        }
    }

    /// The same input with `previous` set.
    pub fn with_previous(self, previous: &'a Row) -> Self {
        Self {
            previous: Some(previous),
            ..self
        }
    }
}

/// A payload spec compiled against a schema: turns rows into messages.
#[derive(Debug)]
pub struct Payload {
    schema: Arc<Schema>,
    mode: Mode,
    /// What it was compiled from: a sync keeps it to notice that its messages changed.
    spec: PayloadSpec,
    /// The member the record's id is added as (modes other than a template).
    record_id_field: Option<String>,
}

enum Mode {
    Row(RowEncoder),
    Column {
        index: usize,
    },
    /// Column positions with their pre-escaped key prefixes.
    Mapping {
        fields: Vec<(usize, Vec<u8>)>,
    },
    Template(Box<CompiledTemplate>),
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Row(_) => f.write_str("Row"),
            Mode::Column { index } => f.debug_struct("Column").field("index", index).finish(),
            Mode::Mapping { fields } => f
                .debug_struct("Mapping")
                .field("fields", &fields.len())
                .finish(),
            Mode::Template(t) => t.fmt(f),
        }
    }
}

/// Writes a row as a JSON object, columns in schema order: the `row` payload mode, and
/// kinesync's canonical encoding of a row (what it fingerprints; the state store keeps the
/// values alone, see [`RowEncoder::encode_with_values`]). Keys are
/// escaped once, when the encoder is made; the JSON writer cannot write invalid JSON, so
/// nothing is checked per row.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    /// Pre-escaped `{"col":` / `,"col":` prefixes, one per column.
    prefixes: Vec<Vec<u8>>,
}

impl RowEncoder {
    /// An encoder for rows of `schema`.
    pub fn new(schema: &Schema) -> Self {
        Self {
            prefixes: schema
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| key_prefix(i == 0, c))
                .collect(),
        }
    }

    /// Appends `row` as a JSON object.
    pub fn encode(&self, row: &Row, out: &mut Vec<u8>) {
        for (i, prefix) in self.prefixes.iter().enumerate() {
            out.extend_from_slice(prefix);
            row.get(i).write_json(out);
        }
        out.push(b'}');
    }

    /// Appends `row` as a JSON object to `object` (what [`encode`](Self::encode) writes) and
    /// its values alone, in schema order, as a JSON array to `values`. Each value is written
    /// once and copied: kinesync fingerprints the object and stores the array, which is about
    /// 40% smaller when the column names are not stored with every row.
    pub fn encode_with_values(&self, row: &Row, object: &mut Vec<u8>, values: &mut Vec<u8>) {
        values.push(b'[');
        for (i, prefix) in self.prefixes.iter().enumerate() {
            if i > 0 {
                values.push(b',');
            }
            let start = values.len();
            row.get(i).write_json(values);
            object.extend_from_slice(prefix);
            object.extend_from_slice(&values[start..]);
        }
        values.push(b']');
        object.push(b'}');
    }
}

/// `{"key":` for the first key of an object, `,"key":` for the others.
fn key_prefix(first: bool, key: &str) -> Vec<u8> {
    let mut prefix = vec![if first { b'{' } else { b',' }];
    json::write_str(key, &mut prefix);
    prefix.push(b':');
    prefix
}

impl Payload {
    /// Checks `spec` against `schema`, reporting every problem found.
    pub fn compile(spec: &PayloadSpec, schema: Arc<Schema>) -> Result<Self, CompileErrors> {
        let mode = match spec {
            PayloadSpec::Row => Mode::Row(RowEncoder::new(&schema)),
            PayloadSpec::Column { column } => match schema.index_of(column) {
                Some(index) => Mode::Column { index },
                None => {
                    return Err(CompileErrors(vec![CompileError::UnknownSpecColumn {
                        setting: "payload.column".into(),
                        name: column.clone(),
                        suggestion: schema.closest_column(column),
                    }]));
                }
            },
            PayloadSpec::Mapping { fields } => Mode::Mapping {
                fields: compile_mapping(fields, &schema)?,
            },
            PayloadSpec::Template { source, escape } => Mode::Template(Box::new(
                CompiledTemplate::compile(source, *escape, &schema)?,
            )),
        };
        Ok(Self {
            schema,
            mode,
            spec: spec.clone(),
            record_id_field: None,
        })
    }

    /// Adds the record's id ([`RecordInfo::id`]) to every message as the member `field`,
    /// last: for the `row`, `column` and `mapping` modes (a template writes
    /// `{{ record.id }}` where it wants it). A message rendered without a record has no such
    /// member; in `column` mode, a column whose JSON is not an object is a row error.
    pub fn with_record_id_field(mut self, field: impl Into<String>) -> Result<Self, CompileErrors> {
        let field = field.into();
        let taken = match &self.spec {
            PayloadSpec::Row => self.schema.index_of(&field).is_some(),
            PayloadSpec::Mapping { fields } => fields.iter().any(|f| f.to == field),
            _ => false,
        };
        let clash = if matches!(self.mode, Mode::Template(_)) {
            Some(CompileError::RecordIdFieldInTemplate)
        } else if field.is_empty() || taken {
            Some(CompileError::RecordIdFieldTaken {
                field: field.clone(),
            })
        } else {
            None
        };
        match clash {
            Some(error) => Err(CompileErrors(vec![error])),
            None => {
                self.record_id_field = Some(field);
                Ok(self)
            }
        }
    }

    /// The member the record's id is added as, if any.
    pub fn record_id_field(&self) -> Option<&str> {
        self.record_id_field.as_deref()
    }

    /// Whether messages say anything about their record (a template that names `record`, or
    /// a record id field): a caller that knows the record gives it only then.
    pub fn wants_record(&self) -> bool {
        self.record_id_field.is_some()
            || matches!(&self.spec, PayloadSpec::Template { source, .. } if source.contains("record"))
    }

    /// The spec it was compiled from.
    pub fn spec(&self) -> &PayloadSpec {
        &self.spec
    }

    /// The schema the spec was compiled against.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Renders one message.
    pub fn render(&self, input: RenderInput<'_>) -> Result<Vec<u8>, RenderError> {
        let mut out = Vec::with_capacity(256);
        self.render_into(input, &mut out)?;
        Ok(out)
    }

    /// Renders one message into `out`, replacing what it held: a caller rendering many rows
    /// reuses one buffer. On error `out` holds no message.
    pub fn render_into(
        &self,
        input: RenderInput<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        out.clear();
        let result = self
            .render_unchecked(input, out)
            .and_then(|()| {
                json::finish(out, self.whitespace()).map_err(|e| match &self.mode {
                    Mode::Column { index } => RenderErrorKind::ColumnNotJson {
                        column: self.schema.columns()[*index].clone(),
                        reason: format!("invalid JSON at byte {}: {}", e.offset, e.reason),
                    },
                    _ => RenderErrorKind::InvalidJson(e),
                })
            })
            .and_then(|()| match (&self.record_id_field, input.record) {
                (Some(field), Some(record)) => record_info::add_id_field(out, field, record.id)
                    .map_err(|()| RenderErrorKind::NotAnObject {
                        field: field.clone(),
                    }),
                _ => Ok(()),
            });
        result.map_err(|kind| {
            out.clear();
            RenderError {
                primary_key: input
                    .row
                    .get(self.schema.primary_key_index())
                    .to_json_string(),
                kind,
            }
        })
    }

    fn whitespace(&self) -> json::Whitespace {
        match &self.mode {
            Mode::Row(_) | Mode::Mapping { .. } => json::Whitespace::Absent,
            // A column's stored JSON may be pretty-printed.
            Mode::Column { .. } => json::Whitespace::Possible,
            Mode::Template(t) => t.whitespace(),
        }
    }

    fn render_unchecked(
        &self,
        input: RenderInput<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderErrorKind> {
        let row = input.row;
        match &self.mode {
            Mode::Row(encoder) => encoder.encode(row, out),
            Mode::Mapping { fields } => {
                for (index, prefix) in fields {
                    out.extend_from_slice(prefix);
                    row.get(*index).write_json(out);
                }
                out.push(b'}');
            }
            Mode::Column { index } => {
                let column = || self.schema.columns()[*index].clone();
                match row.get(*index) {
                    v @ (Value::Object(_) | Value::Array(_)) => v.write_json(out),
                    Value::String(text) => {
                        let first = text.trim_start().as_bytes().first();
                        if !matches!(first, Some(b'{' | b'[')) {
                            return Err(RenderErrorKind::ColumnNotJson {
                                column: column(),
                                reason: "the string does not start with `{` or `[`".into(),
                            });
                        }
                        out.extend_from_slice(text.as_bytes());
                    }
                    other => {
                        return Err(RenderErrorKind::ColumnNotJson {
                            column: column(),
                            reason: format!("found {}", other.kind_name()),
                        });
                    }
                }
            }
            Mode::Template(template) => {
                let globals = Globals {
                    row: RowView {
                        schema: &self.schema,
                        row,
                    },
                    previous: input.previous.map(|row| RowView {
                        schema: &self.schema,
                        row,
                    }),
                    event: &EVENT_NAMES[input.event as usize],
                    record: input.record,
                };
                template
                    .render(&globals, out, input.max_bytes)
                    .map_err(|stop| match stop {
                        template::RenderStop::TooLarge => RenderErrorKind::TooLarge {
                            max_bytes: input.max_bytes,
                        },
                        template::RenderStop::Error { message, location } => {
                            RenderErrorKind::Template { message, location }
                        }
                    })?;
            }
        }
        if out.len() > input.max_bytes {
            return Err(RenderErrorKind::TooLarge {
                max_bytes: input.max_bytes,
            });
        }
        Ok(())
    }
}

fn compile_mapping(
    fields: &[FieldMapping],
    schema: &Schema,
) -> Result<Vec<(usize, Vec<u8>)>, CompileErrors> {
    let mut errors = Vec::new();
    if fields.is_empty() {
        errors.push(CompileError::EmptyMapping);
    }
    let mut compiled = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        match schema.index_of(&field.from) {
            Some(index) => compiled.push((index, key_prefix(i == 0, &field.to))),
            None => errors.push(CompileError::UnknownSpecColumn {
                setting: format!("payload.fields[{i}].from"),
                name: field.from.clone(),
                suggestion: schema.closest_column(&field.from),
            }),
        }
        if field.to.is_empty() {
            errors.push(CompileError::EmptyTarget {
                index: i,
                from: field.from.clone(),
            });
        } else if let Some(first) = fields[..i].iter().position(|f| f.to == field.to) {
            errors.push(CompileError::DuplicateTarget {
                index: i,
                first,
                to: field.to.clone(),
            });
        }
    }
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(CompileErrors(errors))
    }
}

/// The event names as Liquid values, made once.
static EVENT_NAMES: LazyLock<[liquid_core::Value; 3]> =
    LazyLock::new(|| Event::ALL.map(|e| liquid_core::Value::scalar(e.as_str())));

/// What `previous` reads as when there is none.
static NIL: liquid_core::Value = liquid_core::Value::Nil;

/// The names a template sees: `row`, `event`, `previous`, `record`.
#[derive(Debug)]
struct Globals<'a> {
    row: RowView<'a>,
    previous: Option<RowView<'a>>,
    event: &'static liquid_core::Value,
    record: Option<RecordInfo<'a>>,
}

impl Globals<'_> {
    const KEYS: [&'static str; 4] = ["row", "event", "previous", "record"];

    fn value(&self, key: &str) -> Option<&dyn ValueView> {
        match key {
            "row" => Some(&self.row),
            "event" => Some(self.event),
            "previous" => Some(match &self.previous {
                Some(p) => p as &dyn ValueView,
                None => &NIL,
            }),
            "record" => Some(match &self.record {
                Some(r) => r as &dyn ValueView,
                None => &NIL,
            }),
            _ => None,
        }
    }
}

object_value_view!(Globals<'_>);

impl ObjectView for Globals<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        Self::KEYS.len() as i64
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(Self::KEYS.iter().map(|k| KStringCow::from_static(k)))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(Self::KEYS.iter().filter_map(|k| self.value(k)))
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            Self::KEYS
                .iter()
                .filter_map(|k| Some((KStringCow::from_static(k), self.value(k)?))),
        )
    }
    fn contains_key(&self, index: &str) -> bool {
        Self::KEYS.contains(&index)
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        self.value(index)
    }
}
