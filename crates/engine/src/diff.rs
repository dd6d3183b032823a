//! Stage 2, diff: each prepared row is added (a new primary key), changed (a new
//! fingerprint) or unchanged; a key read twice stops the run; once the whole model is read,
//! the keys the state has and the model lacks are removed.
//!
//! The run's keys and the state's keys are each sorted by their XXH3-128 hash (in memory up to
//! [`crate::Limits::keys_in_memory`], in sorted runs on temporary files beyond) and compared in
//! one pass, so a run's memory is the same whatever the model's size. While the model is small
//! enough, its keys are also in a hash set, so that a key read twice stops the run before the
//! second row is sent.

use std::iter::Peekable;
use std::sync::Arc;

use kinesync_payload::{Event, Schema};
use kinesync_state::{Change, Seen, StateStore, Unanswered};
use xxhash_rust::xxh3::xxh3_128;

use crate::build::ToBuild;
use crate::codec::RowCodec;
use crate::error::{Error, spill_error};
use crate::hashed::HashedSet;
use crate::prepare::Prepared;
use crate::record_id;
use crate::report::{EventCounts, RunReport};
use crate::settings::Events;
use crate::sorted_keys::{Hashes, Key, Merged, Sorter};

/// A primary key read twice: the key, and the lines it was read from.
#[derive(Debug)]
pub(crate) struct Duplicate {
    pub(crate) key: String,
    pub(crate) first: u64,
    pub(crate) again: u64,
}

/// The primary keys of the model read so far.
pub(crate) struct ModelKeys {
    /// Every key, sorted by hash (on disk past `keys_in_memory`).
    seen: Sorter,
    /// Every key's hash while there are at most `keys_in_memory`; then dropped.
    recent: Option<HashedSet>,
    keys_in_memory: usize,
}

impl ModelKeys {
    pub(crate) fn new(keys_in_memory: usize) -> Self {
        Self {
            seen: Sorter::new(keys_in_memory),
            recent: Some(HashedSet::default()),
            keys_in_memory,
        }
    }

    /// Notes a chunk's keys (`rows_before` rows were read before it). A key read twice that
    /// the in-memory set catches is returned at once.
    pub(crate) fn note(
        &mut self,
        chunk: &[Prepared],
        rows_before: u64,
    ) -> Result<Option<Duplicate>, Error> {
        for (i, read) in chunk.iter().enumerate() {
            self.seen
                .push(Key {
                    hash: read.key_hash,
                    // Without a line, the row's place in the model.
                    line: if read.line > 0 {
                        read.line
                    } else {
                        rows_before + i as u64 + 1
                    },
                    key: read.key.clone(),
                })
                .map_err(spill_error)?;
        }
        if let Some(keys) = &mut self.recent {
            if let Some(again) = chunk.iter().find(|r| !keys.insert(r.key_hash)) {
                return self.duplicate_of(again.key_hash).map(Some);
            }
            if keys.len() > self.keys_in_memory {
                self.recent = None;
            }
        }
        Ok(None)
    }

    /// Once the model is read: the first key read twice. Needed only when the keys outgrew
    /// the in-memory set (otherwise a duplicate already stopped the run).
    pub(crate) fn duplicate_at_end(&mut self) -> Result<Option<Duplicate>, Error> {
        if self.recent.is_some() {
            return Ok(None);
        }
        // The hashes alone rule duplicates out; only when there is one are the keys read.
        if !self.seen.has_equal_hashes().map_err(spill_error)? {
            return Ok(None);
        }
        let mut previous: Option<Key> = None;
        for entry in self.seen.sorted().map_err(spill_error)? {
            let entry = entry.map_err(spill_error)?;
            if let Some(previous) = previous.take_if(|p| p.hash == entry.hash) {
                return Ok(Some(Duplicate {
                    key: entry.key,
                    first: previous.line,
                    again: entry.line,
                }));
            }
            previous = Some(entry);
        }
        Ok(None)
    }

    /// The duplicate whose hash is `hash`, with both its lines.
    fn duplicate_of(&mut self, hash: u128) -> Result<Duplicate, Error> {
        let mut lines = Vec::with_capacity(2);
        let mut key = String::new();
        for entry in self.seen.sorted().map_err(spill_error)? {
            let entry = entry.map_err(spill_error)?;
            if entry.hash == hash {
                lines.push(entry.line);
                key = entry.key;
            }
        }
        lines.sort_unstable();
        Ok(Duplicate {
            key,
            first: lines.first().copied().unwrap_or_default(),
            again: lines.get(1).copied().unwrap_or_default(),
        })
    }

    /// The removal walk: the state's keys, read page by page and sorted by hash, ready to be
    /// compared with the model's.
    pub(crate) fn removal_walk(
        self,
        state: &mut dyn StateStore,
        page_size: usize,
    ) -> Result<RemovalWalk, Error> {
        let mut stored = Sorter::new(self.keys_in_memory);
        let mut after: Option<String> = None;
        loop {
            let page = state.keys_after(after.as_deref(), page_size)?;
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
        Ok(RemovalWalk {
            model: self.seen,
            stored,
        })
    }
}

/// Where a run finds the keys gone from the model.
pub(crate) enum Gone {
    /// In the state's keys less the model's (a model read whole).
    Walk(ModelKeys),
    /// Listed by the model itself (a model diffed where it lives).
    Listed(Listed),
}

/// The keys gone from the model, as a model diffed where it lives lists them: sorted by hash
/// (on disk past `keys_in_memory`), as the walk gives them, so a run's memory stays the
/// same whatever the number.
pub(crate) struct Listed {
    keys: Sorter,
    pub(crate) count: u64,
}

impl Listed {
    pub(crate) fn new(keys_in_memory: usize) -> Self {
        Self {
            keys: Sorter::new(keys_in_memory),
            count: 0,
        }
    }

    pub(crate) fn push(&mut self, key: String) -> Result<(), Error> {
        self.count += 1;
        self.keys
            .push(Key {
                hash: xxh3_128(key.as_bytes()),
                line: 0,
                key,
            })
            .map_err(spill_error)
    }

    /// The keys, in hash order.
    pub(crate) fn keys(
        &mut self,
    ) -> Result<Box<dyn Iterator<Item = Result<String, Error>> + Send + '_>, Error> {
        let sorted = self.keys.sorted().map_err(spill_error)?;
        Ok(Box::new(
            sorted.map(|entry| entry.map(|e| e.key).map_err(spill_error)),
        ))
    }
}

/// The model's keys and the state's, both sorted by hash.
pub(crate) struct RemovalWalk {
    model: Sorter,
    stored: Sorter,
}

impl RemovalWalk {
    /// The keys the state has and the model does not, in hash order.
    pub(crate) fn gone(&mut self) -> Result<GoneKeys<'_>, Error> {
        // The model's side needs only its hashes.
        Ok(GoneKeys {
            model: self.model.hashes().map_err(spill_error)?.peekable(),
            stored: self.stored.sorted().map_err(spill_error)?,
        })
    }
}

/// See [`RemovalWalk::gone`].
pub(crate) struct GoneKeys<'a> {
    model: Peekable<Hashes<'a>>,
    stored: Merged<'a>,
}

impl Iterator for GoneKeys<'_> {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.stored.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(spill_error(e))),
            };
            // Skip the model's hashes below this one; then it is in the model if the next
            // one is equal.
            let in_model = loop {
                match self
                    .model
                    .next_if(|m| m.as_ref().is_ok_and(|m| *m < entry.hash))
                {
                    Some(_) => continue,
                    None => match self.model.peek() {
                        Some(Ok(m)) => break *m == entry.hash,
                        Some(Err(_)) => match self.model.next() {
                            Some(Err(e)) => return Some(Err(spill_error(e))),
                            _ => unreachable!("peeked an error"),
                        },
                        None => break false,
                    },
                }
            };
            if !in_model {
                return Some(Ok(entry.key));
            }
        }
    }
}

/// What a chunk is compared with the state by: the same for every chunk of a run.
pub(crate) struct DiffContext {
    pub(crate) codec: RowCodec,
    pub(crate) schema: Arc<Schema>,
    pub(crate) events: Events,
    pub(crate) dry_run: bool,
    /// Every row is sent again, unchanged ones as changed.
    pub(crate) resync: bool,
    /// A store with nothing in it has nothing to look up.
    pub(crate) state_was_empty: bool,
}

/// A chunk, sorted into events.
#[derive(Debug, Default)]
pub(crate) struct Diffed {
    /// The rows whose records the trigger sends.
    pub(crate) to_build: Vec<ToBuild>,
    /// Added, changed, unchanged and not triggered rows, counted.
    pub(crate) events: EventCounts,
    /// Changed rows whose last sent version cannot be read: not sent (see
    /// [`report_unreadable`]).
    pub(crate) unreadable: Vec<String>,
    /// Rows whose key the state has (acknowledged or in doubt): what the removal threshold
    /// subtracts from the state's keys to count the removed ones.
    pub(crate) in_state: u64,
}

/// Sorts a chunk into events against the store, and moves the store on to the changes the
/// trigger does not send. Blocking: the run calls it on tokio's blocking pool.
///
/// `diffed_at_source`: the rows are those a diff where the model lives found may need sending
/// (most are changed), so each key's stored row is read with its state, in one lookup, rather
/// than the changed ones' in a second.
pub(crate) fn diff_chunk(
    state: &mut dyn StateStore,
    chunk: Vec<Prepared>,
    context: &DiffContext,
    diffed_at_source: bool,
) -> Result<Diffed, Error> {
    let mut read_with_state: Option<Vec<Option<Vec<u8>>>> = None;
    let known = if context.state_was_empty {
        vec![None; chunk.len()]
    } else {
        let keys: Vec<String> = chunk.iter().map(|r| r.key.clone()).collect();
        if diffed_at_source {
            let (known, rows) = state
                .seen_with_rows(&keys)?
                .into_iter()
                .map(|found| match found {
                    Some((seen, row)) => (Some(seen), Some(row)),
                    None => (None, None),
                })
                .unzip();
            read_with_state = Some(rows);
            known
        } else {
            state.seen(&keys)?
        }
    };
    let events: Vec<Option<Event>> = chunk
        .iter()
        .zip(&known)
        .map(|(read, known)| event_of(*known, read.fingerprint, context.resync))
        .collect();
    // The stored versions needed: `previous` of a changed row (the version acknowledged, or
    // the one that may have landed), and the version sent of a key in doubt (its record id is
    // kept when the same version goes out again).
    let wanted: Vec<usize> = (0..chunk.len())
        .filter(|&i| {
            (events[i] == Some(Event::Changed) && context.events.changed)
                || matches!(known[i], Some(Seen::InDoubt(_)))
        })
        .collect();
    let mut stored: Vec<Option<Vec<u8>>> = vec![None; chunk.len()];
    if let Some(mut rows) = read_with_state {
        for i in wanted {
            stored[i] = rows[i].take();
        }
    } else if !wanted.is_empty() {
        let keys: Vec<String> = wanted.iter().map(|&i| chunk[i].key.clone()).collect();
        for (i, row) in wanted.into_iter().zip(state.rows(&keys)?) {
            stored[i] = row;
        }
    }
    let mut diffed = Diffed {
        to_build: Vec::with_capacity(chunk.len()),
        in_state: known.iter().filter(|k| k.is_some()).count() as u64,
        ..Diffed::default()
    };
    let mut untriggered = Vec::new();
    for (((read, event), known), stored) in chunk.into_iter().zip(events).zip(known).zip(stored) {
        let Some(event) = event else {
            diffed.events.unchanged += 1;
            continue;
        };
        match event {
            Event::Added => diffed.events.added += 1,
            _ => diffed.events.changed += 1,
        }
        let same_version = stored.as_deref() == Some(read.stored.as_slice());
        let unanswered = match event {
            Event::Changed => Unanswered::Changed,
            _ => Unanswered::Added,
        };
        let record_id = record_id::id_for(known, unanswered, same_version);
        let change = Change::Upsert {
            key: read.key,
            fingerprint: read.fingerprint,
            row: read.stored,
        };
        if !context.events.sends(event) {
            diffed.events.not_triggered += 1;
            untriggered.push(change);
            continue;
        }
        let previous_row = match (event, stored) {
            (Event::Changed, Some(stored)) => {
                match context.codec.decode(&context.schema, &stored) {
                    Some(row) => Some(row),
                    None => {
                        diffed.unreadable.push(change.key().to_owned());
                        continue;
                    }
                }
            }
            _ => None,
        };
        diffed.to_build.push(ToBuild {
            row: read.row,
            event,
            previous: previous_row,
            change,
            record_id,
        });
    }
    crate::commit::without_sending(state, untriggered, context.dry_run)?;
    Ok(diffed)
}

/// The event of a model row, from what the state knows of its key; `None` when it is
/// unchanged.
///
/// A key in doubt is always sent again, since its last record may or may not have landed: as
/// added when the stream never acknowledged a version of it (or its removal may have landed),
/// as changed when it did, with the version that may have landed as `previous`.
///
/// On a resync, a row as last sent is sent again too, as changed.
fn event_of(known: Option<Seen>, fingerprint: u128, resync: bool) -> Option<Event> {
    match known {
        None => Some(Event::Added),
        Some(Seen::InDoubt(doubt)) => Some(match doubt.event {
            Unanswered::Changed => Event::Changed,
            Unanswered::Added | Unanswered::Removed => Event::Added,
        }),
        Some(Seen::Acknowledged(stored)) if stored != fingerprint => Some(Event::Changed),
        Some(Seen::Acknowledged(_)) if resync => Some(Event::Changed),
        Some(Seen::Acknowledged(_)) => None,
    }
}

/// A row whose last sent version in the state cannot be read: reported against its key, and
/// not sent (a `previous` or `removed` built from nothing would tell consumers a falsehood).
pub(crate) fn report_unreadable(report: &mut RunReport, key: String) {
    report.row_errors.add(
        key,
        "unreadable_state_row",
        "the state store's copy of this row, as last sent, cannot be read: the store was \
         changed by something other than kinesync; `previous` and removed events need it"
            .to_owned(),
    );
}
