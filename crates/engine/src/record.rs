//! From a row to the exact Kinesis record that would be sent: message bytes, partition key,
//! explicit hash key, and the 128-bit hash key that picks the shard.

use std::sync::Arc;

use kinesync_keys::{ExplicitHashKey, HashKey, KeyError, KeyInput, PartitionKey};
use kinesync_payload::{Payload, RenderError, RenderErrorKind, RenderInput, Schema, Value};

use crate::error::{Error, KeyRole};

thread_local! {
    /// Where [`RecordBuilder::build`] renders a message.
    static MESSAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Lets a per-thread buffer go after an unusually large message or row, so that one huge row
/// does not stay allocated for the life of the thread.
pub(crate) fn shrink_if_large(buffer: &mut Vec<u8>) {
    const KEEP: usize = 1 << 20;
    if buffer.capacity() > KEEP {
        *buffer = Vec::new();
    }
}

/// Which columns a record's keys come from, checked against the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    partition_key: usize,
    explicit_hash_key: Option<usize>,
}

impl KeySpec {
    /// The partition key from column `partition_key` (the primary key when `None`), and the
    /// explicit hash key from column `explicit_hash_key`, if given.
    pub fn new(
        schema: &Schema,
        partition_key: Option<&str>,
        explicit_hash_key: Option<&str>,
    ) -> Result<Self, Error> {
        let column = |role: KeyRole, name: &str| {
            schema
                .index_of(name)
                .ok_or_else(|| Error::UnknownKeyColumn {
                    role,
                    name: name.to_owned(),
                    suggestion: schema.closest_column(name),
                })
        };
        Ok(Self {
            partition_key: match partition_key {
                Some(name) => column(KeyRole::PartitionKey, name)?,
                None => schema.primary_key_index(),
            },
            explicit_hash_key: explicit_hash_key
                .map(|name| column(KeyRole::ExplicitHashKey, name))
                .transpose()?,
        })
    }
}

/// A column value as the key rules see it.
fn key_input(value: &Value) -> KeyInput<'_> {
    match value {
        Value::Null => KeyInput::Null,
        Value::Int(i) => KeyInput::Integer(*i),
        Value::UInt(u) => KeyInput::Unsigned(*u),
        // Its digits: a partition key as they are, an explicit hash key if within 2^128.
        Value::Decimal(digits) => KeyInput::Text(digits),
        Value::String(s) => KeyInput::Text(s),
        other => KeyInput::Unsupported(other.kind_name()),
    }
}

/// One record, ready for PutRecords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partition key.
    pub partition_key: PartitionKey,
    /// The explicit hash key, when configured.
    pub explicit_hash_key: Option<ExplicitHashKey>,
    /// The message: compact JSON.
    pub data: Vec<u8>,
}

impl Record {
    /// The hash key the service routes by: the explicit hash key, or the MD5 of the partition
    /// key. Computed when asked (a preview or dry run asks; sending does not need it).
    pub fn hash_key(&self) -> HashKey {
        HashKey::for_record(&self.partition_key, self.explicit_hash_key)
    }
}

/// Why one row could not become a record. The run reports it with the row's primary key and
/// goes on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// The payload could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A key column's value is not a valid key.
    #[error("row {primary_key}: column {column:?}: {error}")]
    Key {
        /// The row's primary key, as JSON.
        primary_key: String,
        /// The key column.
        column: String,
        /// What is wrong with its value.
        error: KeyError,
    },
}

impl RowError {
    /// The row's primary key, as JSON.
    pub fn primary_key(&self) -> &str {
        match self {
            RowError::Render(e) => &e.primary_key,
            RowError::Key { primary_key, .. } => primary_key,
        }
    }

    /// A short, stable name for the kind of problem (`invalid_json`, `partition_key`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            RowError::Render(e) => e.kind.name(),
            RowError::Key {
                error:
                    KeyError::NullExplicitHashKey
                    | KeyError::MalformedExplicitHashKey { .. }
                    | KeyError::ExplicitHashKeyOutOfRange { .. },
                ..
            } => "explicit_hash_key",
            RowError::Key {
                error:
                    KeyError::UnsupportedType {
                        role: "explicit hash key",
                        ..
                    },
                ..
            } => "explicit_hash_key",
            RowError::Key { .. } => "partition_key",
        }
    }

    /// The message without the primary key prefix (for reports that show the key apart).
    pub fn reason(&self) -> String {
        match self {
            RowError::Render(e) => e.kind.to_string(),
            RowError::Key { column, error, .. } => format!("column {column:?}: {error}"),
        }
    }

    /// [`reason`](Self::reason) without the excerpt of the rendered message an invalid-JSON
    /// error quotes: messages hold users' data, which a run's report keeps only when asked.
    pub fn reason_without_excerpt(&self) -> String {
        match self {
            RowError::Render(RenderError {
                kind: RenderErrorKind::InvalidJson(invalid),
                ..
            }) => format!(
                "output is not valid JSON at byte {}: {} (the message is not shown; --debug-payloads shows it)",
                invalid.offset, invalid.reason
            ),
            other => other.reason(),
        }
    }
}

/// Turns rows into records: a compiled payload plus key columns.
///
/// ```
/// use kinesync::payload::{Event, Payload, PayloadSpec, RenderInput, Row, Schema, Value};
/// use kinesync::{KeySpec, RecordBuilder};
///
/// let schema = Schema::new(["id", "email"], "id").unwrap();
/// let payload = Payload::compile(&PayloadSpec::Row, schema.clone()).unwrap();
/// let builder = RecordBuilder::new(payload, KeySpec::new(&schema, None, None).unwrap());
/// let row = Row::new(vec![Value::Int(42), Value::from("ada@example.com")]);
/// let record = builder.build(RenderInput::new(&row, Event::Added)).unwrap();
/// assert_eq!(record.partition_key.as_str(), "42");
/// assert_eq!(record.data, br#"{"id":42,"email":"ada@example.com"}"#);
/// ```
#[derive(Debug)]
pub struct RecordBuilder {
    payload: Payload,
    keys: KeySpec,
}

impl RecordBuilder {
    /// A builder from a compiled payload and key spec (made against the same schema).
    pub fn new(payload: Payload, keys: KeySpec) -> Self {
        Self { payload, keys }
    }

    /// The model's schema.
    pub fn schema(&self) -> &Arc<Schema> {
        self.payload.schema()
    }

    /// The compiled payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The partition key's column, and the explicit hash key's if there is one.
    pub fn key_columns(&self) -> (&str, Option<&str>) {
        let columns = self.payload.schema().columns();
        (
            &columns[self.keys.partition_key],
            self.keys.explicit_hash_key.map(|i| columns[i].as_str()),
        )
    }

    /// Builds one record.
    pub fn build(&self, input: RenderInput<'_>) -> Result<Record, RowError> {
        let (partition_key, explicit_hash_key) = self.keys(input)?;
        // Rendered into this thread's buffer, then copied out at its exact size: one
        // allocation per message, never a regrowth, and a buffer the stream's byte type
        // takes over as it is.
        let data = MESSAGE.with_borrow_mut(|message| {
            let rendered = self
                .payload
                .render_into(input, message)
                .map(|()| message.as_slice().to_vec());
            shrink_if_large(message);
            rendered
        })?;
        Ok(Record {
            partition_key,
            explicit_hash_key,
            data,
        })
    }

    /// The keys of a row, checked.
    pub fn keys(
        &self,
        input: RenderInput<'_>,
    ) -> Result<(PartitionKey, Option<ExplicitHashKey>), RowError> {
        let schema = self.payload.schema();
        let row = input.row;
        let key_error = |column: usize, error: KeyError| RowError::Key {
            primary_key: row.get(schema.primary_key_index()).to_json_string(),
            column: schema.columns()[column].clone(),
            error,
        };
        let column = self.keys.partition_key;
        let partition_key = PartitionKey::from_input(key_input(row.get(column)))
            .map_err(|e| key_error(column, e))?;
        let explicit_hash_key = match self.keys.explicit_hash_key {
            Some(column) => Some(
                ExplicitHashKey::from_input(key_input(row.get(column)))
                    .map_err(|e| key_error(column, e))?,
            ),
            None => None,
        };
        Ok((partition_key, explicit_hash_key))
    }
}
