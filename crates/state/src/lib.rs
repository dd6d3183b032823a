//! What each primary key last sent: the memory that makes a sync incremental.
//!
//! Where it sits in a sync (source → engine: prepare, diff, build, batch, send, commit → sink):
//! beside the engine: the diff stage asks it what was sent before, the commit stage tells it
//! what the stream acknowledged.
//!
//! Per primary key the store keeps a fingerprint of the row as last acknowledged by the stream
//! and that row itself (for `previous` in templates, and to build a `removed` event). Before a
//! record goes out, its key is marked [in doubt](Seen::InDoubt) with the version it carries:
//! a record whose answer is never read (a kill mid-call, a lost answer) may have landed, and
//! the next run then sends the key again, or its removal, instead of forgetting it. A sync
//! reads the model in chunks, asks the store for the fingerprints of each chunk's keys (added:
//! absent; changed: different), and at the end walks the store's keys to find those the model
//! no longer has (removed). Acknowledged changes are committed batch by batch, each commit
//! atomic, so a crash at any point leaves only rows the stream acknowledged (all of them but
//! the last few batches still queued for writing, which the next run sends again).
//!
//! Three stores: [`SqliteStore`] (a file; the default), [`PostgresStore`] (tables in the
//! warehouse, beside a Postgres model) and [`MemoryStore`] (tests). Keys are
//! the primary key's JSON text (`42`, `"u-1"`), so `1` and `"1"` stay different keys.
//!
//! The SQLite store loads nothing whole: lookups go chunk by chunk, and the walk over keys
//! page by page.

mod lock;
mod memory;
mod postgres;
mod sqlite;

pub use lock::LockHolder;
pub use memory::MemoryStore;
pub use postgres::{POSTGRES_SCHEMA_VERSION, PostgresStore};
pub use sqlite::{COMMITS_AHEAD, SqliteStore};

/// The version of the SQLite schema this build writes and reads.
///
/// Version 2 added values a caller keeps beside its rows ([`StateStore::meta`]; kinesync
/// keeps the column names of its stored rows there and stores each row's values alone), and
/// stores non-negative integer keys after their length, so that the key index is in numeric
/// order for them. Version 1 files are upgraded when opened: their integer keys are rewritten
/// in place, and their rows stay as they are, readable.
///
/// Version 3 added the keys in doubt (a table beside the rows). Files of versions 1 and 2 are
/// upgraded when opened.
pub const SCHEMA_VERSION: i64 = 3;

/// A 128-bit fingerprint of a row's content: kinesync's XXH3-128 of it, or for a row of a
/// PostgreSQL model the server's 64-bit hash of it (in the low half).
pub type Fingerprint = u128;

/// What the store knows of a key's last record, and the row it holds for the key
/// ([`StateStore::seen_with_rows`]).
pub type SeenRow = (Seen, Vec<u8>);

/// What the store knows of the last record sent for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The stream acknowledged the version with this fingerprint.
    Acknowledged(Fingerprint),
    /// A record went out for the key and no answer about it was read (the process was
    /// killed mid-call, the answer was lost or unreadable, the run ended before a retry got
    /// through): it may have landed, or not. The stored row is the version it carried.
    InDoubt(Doubt),
}

/// A record [in doubt](Seen::InDoubt): its event, and the id it was sent with, so that a resend
/// of the same event carries the same id (what lets a consumer drop the copy it already has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubt {
    /// The event sent.
    pub event: Unanswered,
    /// The record's id (0 when it was marked without one).
    pub record_id: u128,
}

impl Doubt {
    /// How the mark is stored: the event's byte, then the id's 16 bytes (big-endian).
    pub(crate) fn to_blob(self) -> [u8; 17] {
        let mut blob = [0; 17];
        blob[0] = self.event.marker();
        blob[1..].copy_from_slice(&self.record_id.to_be_bytes());
        blob
    }

    /// The mark read back; `None` for a blob that is not one.
    pub(crate) fn from_blob(blob: &[u8]) -> Option<Self> {
        let (&marker, id) = blob.split_first()?;
        let event = Unanswered::from_marker(marker)?;
        let record_id = match id.len() {
            0 => 0,
            16 => u128::from_be_bytes(id.try_into().ok()?),
            _ => return None,
        };
        Some(Self { event, record_id })
    }
}

/// The event of a record [in doubt](Seen::InDoubt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The key had no acknowledged version: consumers may or may not have the row.
    Added,
    /// The key had an acknowledged version, and the stored row is the newer one sent.
    Changed,
    /// The key's removal was sent; the stored row is the version last acknowledged.
    Removed,
}

impl Unanswered {
    fn marker(self) -> u8 {
        match self {
            Self::Added => b'a',
            Self::Changed => b'c',
            Self::Removed => b'r',
        }
    }

    fn from_marker(marker: u8) -> Option<Self> {
        match marker {
            b'a' => Some(Self::Added),
            b'c' => Some(Self::Changed),
            b'r' => Some(Self::Removed),
            _ => None,
        }
    }
}

/// What the store holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// The fingerprint of the row below.
    pub fingerprint: Fingerprint,
    /// That row, as the caller encoded it (kinesync stores its values as a JSON array, after
    /// the number of its column list, which it keeps in [`StateStore::meta`]): the version
    /// the stream acknowledged, or the one sent when the key is in doubt.
    pub row: Vec<u8>,
    /// Set while a record for the key is in doubt.
    pub doubt: Option<Doubt>,
}

impl StoredRow {
    /// What the store knows of the key's last record.
    pub fn seen(&self) -> Seen {
        match self.doubt {
            Some(doubt) => Seen::InDoubt(doubt),
            None => Seen::Acknowledged(self.fingerprint),
        }
    }
}

/// One change to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The stream acknowledged this version of the key's row.
    Upsert {
        /// The primary key.
        key: String,
        /// The row's fingerprint.
        fingerprint: Fingerprint,
        /// The row.
        row: Vec<u8>,
    },
    /// The stream acknowledged the record the key was marked [in doubt](Change::InDoubt)
    /// for: the version the mark stored becomes the acknowledged one. What a sync commits for
    /// a record it marked, so that the row (already stored by the mark) is not written again.
    Settle {
        /// The primary key.
        key: String,
    },
    /// The stream acknowledged the key's removal.
    Delete {
        /// The primary key.
        key: String,
    },
    /// A record for the key is about to go out: until its answer is committed, the key is
    /// [in doubt](Seen::InDoubt). Committed (and flushed) before the record is sent, so that
    /// whatever stops the answer from being read (a kill, a lost answer), the next run knows
    /// the record may have landed.
    InDoubt {
        /// The primary key.
        key: String,
        /// The event sent, and the record's id.
        doubt: Doubt,
        /// The version sent (its fingerprint and row), stored in place of the acknowledged
        /// one; `None` for a removal, which keeps the stored row.
        sent: Option<(Fingerprint, Vec<u8>)>,
    },
}

impl Change {
    /// The primary key changed.
    pub fn key(&self) -> &str {
        match self {
            Self::Upsert { key, .. }
            | Self::Settle { key, .. }
            | Self::Delete { key }
            | Self::InDoubt { key, .. } => key,
        }
    }
}

/// What can go wrong with a store. Every variant says which store and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// SQLite failed.
    #[error("state store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// PostgreSQL refused or failed (a state kept in the warehouse).
    #[error("state store {place}: {message}")]
    Postgres {
        /// The server and database (never the password), and the table.
        place: String,
        /// What went wrong, and what to do.
        message: String,
    },
    /// The thread writing the store could not start, or stopped.
    #[error("state store {path}: {message}")]
    Thread {
        /// The database file.
        path: String,
        /// What happened.
        message: String,
    },
    /// The file is of an older schema version and was opened without its upgrade
    /// ([`SqliteStore::open_without_upgrade`], as a dry run does): it is read, never written.
    #[error(
        "state store {path} is of an older schema version and was opened without upgrading it (as a dry run does), so it cannot be written; run once without --dry-run to upgrade it"
    )]
    NotUpgraded {
        /// The database file.
        path: String,
    },
    /// Another run holds the store: one sync at a time per state.
    #[error("state store {path} is in use by {}: one sync at a time per state; wait for that run to finish, or stop it", holder.as_ref().map_or_else(|| "another run".to_owned(), ToString::to_string))]
    Locked {
        /// The database file.
        path: String,
        /// Who holds it, when its note could be read.
        holder: Option<LockHolder>,
    },
    /// The lock file beside the store could not be opened or written.
    #[error("cannot lock the state store with {path}: {source}")]
    Lock {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file was written by another version of kinesync.
    #[error(
        "state store {path} has schema version {found}, this kinesync reads version {expected}; use the kinesync that wrote it, or start over with a new state file (everything is then sent again)"
    )]
    SchemaVersion {
        /// The database file.
        path: String,
        /// The version found.
        found: i64,
        /// The version expected.
        expected: i64,
    },
}

/// A place to keep what each key last sent.
pub trait StateStore: Send {
    /// Whether a first run has recorded its baseline.
    fn has_baseline(&self) -> Result<bool, StateError>;

    /// Records that the first run's baseline is in place.
    fn set_baseline(&mut self) -> Result<(), StateError>;

    /// What the store knows of `keys`, in order (`None`: not in the store).
    fn seen(&mut self, keys: &[String]) -> Result<Vec<Option<Seen>>, StateError>;

    /// The rows last acknowledged for `keys`, in order.
    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError>;

    /// [`seen`](Self::seen) and [`rows`](Self::rows) of `keys` together, in order (what a
    /// removal needs): one lookup where the store can (the Postgres store reads each key once
    /// instead of twice).
    fn seen_with_rows(&mut self, keys: &[String]) -> Result<Vec<Option<SeenRow>>, StateError> {
        let seen = self.seen(keys)?;
        let rows = self.rows(keys)?;
        Ok(seen.into_iter().zip(rows).map(|(s, r)| s.zip(r)).collect())
    }

    /// Up to `limit` keys of the store after `after`, in the store's own order of keys (the
    /// same from call to call): how a run walks the whole store, page after page, each page
    /// starting after the last key of the one before, to find the keys its model no longer
    /// has. [`MemoryStore`] orders keys as text; [`SqliteStore`] puts non-negative integers
    /// first, in numeric order.
    fn keys_after(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StateError>;

    /// Applies `changes` atomically: all or none. A store may write them in the background
    /// ([`SqliteStore`] does): lookups see them once [`flush`](Self::flush) has returned.
    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StateError>;

    /// Waits until every change committed so far is written, and reports a write that failed.
    fn flush(&mut self) -> Result<(), StateError> {
        Ok(())
    }

    /// Ends a run's commits: [`flush`](Self::flush), and whatever a store keeps aside while a
    /// run goes on (the Postgres store's marks not settled yet) written to the keys' rows.
    fn close_run(&mut self) -> Result<(), StateError> {
        self.flush()
    }

    /// How many keys the store holds.
    fn key_count(&self) -> Result<usize, StateError>;

    /// The value the caller keeps under `name`, if any. kinesync keeps the column names of its
    /// stored rows here, so that each row is stored as its values alone.
    fn meta(&mut self, name: &str) -> Result<Option<String>, StateError>;

    /// Keeps `value` under `name`. Written in order with commits: a commit made after it is
    /// never in the store without it.
    fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StateError>;
}

/// A boxed store is a store: what lets a store chosen at run time be shared like any other.
/// Every method is forwarded, the provided ones too, so that a store's own `flush` is never
/// replaced by the default.
#[deny(clippy::missing_trait_methods)]
impl<S: StateStore + ?Sized> StateStore for Box<S> {
    fn has_baseline(&self) -> Result<bool, StateError> {
        (**self).has_baseline()
    }

    fn set_baseline(&mut self) -> Result<(), StateError> {
        (**self).set_baseline()
    }

    fn seen(&mut self, keys: &[String]) -> Result<Vec<Option<Seen>>, StateError> {
        (**self).seen(keys)
    }

    fn rows(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        (**self).rows(keys)
    }

    fn seen_with_rows(&mut self, keys: &[String]) -> Result<Vec<Option<SeenRow>>, StateError> {
        (**self).seen_with_rows(keys)
    }

    fn keys_after(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StateError> {
        (**self).keys_after(after, limit)
    }

    fn commit(&mut self, changes: Vec<Change>) -> Result<(), StateError> {
        (**self).commit(changes)
    }

    fn flush(&mut self) -> Result<(), StateError> {
        (**self).flush()
    }

    fn close_run(&mut self) -> Result<(), StateError> {
        (**self).close_run()
    }

    fn key_count(&self) -> Result<usize, StateError> {
        (**self).key_count()
    }

    fn meta(&mut self, name: &str) -> Result<Option<String>, StateError> {
        (**self).meta(name)
    }

    fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StateError> {
        (**self).set_meta(name, value)
    }
}
