//! What defines a sync, kept in its state: the primary key, the payload, the keys and the
//! stream. A changed config is not a changed model, and the state is how a run tells them
//! apart.
//!
//! - A changed **primary key** would make every row look removed (its old key) and added (its
//!   new one): the run refuses to start, and says how to start over.
//! - A changed **payload**, **partition key**, **explicit hash key** or **stream** sends
//!   nothing by itself (a row's fingerprint is of its values, not of its message), so the run
//!   says so in its report; a resync ([`crate::EngineBuilder::resync`]) sends every row again.
//!
//! The definition is written when a run ends (not a dry run), so that the run that first
//! meets a change is the one that reports it, whatever stops it.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use kinesync_state::StateStore;

use crate::error::Error;
use crate::record::RecordBuilder;

/// The name the definition is kept under in the store's meta values.
const META: &str = "sync";

/// A part of a sync's definition that differs from the last run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncChange {
    /// The payload spec (mode, template, mapping, column): rows sent before keep their old
    /// messages.
    Payload,
    /// The partition key column.
    PartitionKey,
    /// The explicit hash key column.
    ExplicitHashKey,
    /// The stream: rows sent before went to the old one.
    Stream,
}

impl std::fmt::Display for SyncChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncChange::Payload => "payload",
            SyncChange::PartitionKey => "partition key",
            SyncChange::ExplicitHashKey => "explicit hash key",
            SyncChange::Stream => "stream",
        })
    }
}

/// What defines a sync, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Definition {
    primary_key: String,
    /// The XXH3-128 of the payload spec's canonical text (and its record id field), in hex.
    payload: String,
    partition_key: String,
    explicit_hash_key: Option<String>,
    stream: String,
}

impl Definition {
    pub(crate) fn of(records: &RecordBuilder, stream: &str) -> Self {
        let (partition_key, explicit_hash_key) = records.key_columns();
        let mut payload = records.payload().spec().canonical();
        if let Some(field) = records.payload().record_id_field() {
            payload.push_str(&format!("record_id_field {}:{field}", field.len()));
        }
        Self {
            primary_key: records.schema().primary_key().to_owned(),
            payload: format!("{:032x}", xxh3_128(payload.as_bytes())),
            partition_key: partition_key.to_owned(),
            explicit_hash_key: explicit_hash_key.map(str::to_owned),
            stream: stream.to_owned(),
        }
    }

    /// Compares this definition with the store's. A changed primary key is an error while the
    /// store holds rows; other changes are returned, for the report.
    pub(crate) fn compare(&self, store: &mut dyn StateStore) -> Result<Vec<SyncChange>, Error> {
        // A definition that cannot be read is replaced at the end of the run.
        let Some(previous) = store
            .meta(META)?
            .and_then(|text| serde_json::from_str::<Definition>(&text).ok())
        else {
            return Ok(Vec::new());
        };
        if previous.primary_key != self.primary_key && store.key_count()? > 0 {
            return Err(Error::PrimaryKeyChanged {
                was: previous.primary_key,
                now: self.primary_key.clone(),
            });
        }
        let mut changes = Vec::new();
        if previous.payload != self.payload {
            changes.push(SyncChange::Payload);
        }
        if previous.partition_key != self.partition_key {
            changes.push(SyncChange::PartitionKey);
        }
        if previous.explicit_hash_key != self.explicit_hash_key {
            changes.push(SyncChange::ExplicitHashKey);
        }
        if previous.stream != self.stream {
            changes.push(SyncChange::Stream);
        }
        Ok(changes)
    }

    /// Keeps this definition in the store.
    pub(crate) fn store(&self, store: &mut dyn StateStore) -> Result<(), Error> {
        let text = serde_json::to_string(self).expect("a definition is plain strings");
        Ok(store.set_meta(META, &text)?)
    }
}
