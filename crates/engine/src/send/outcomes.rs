//! The send stage's answers: each Kinesis record of a call acknowledged (or, an aggregate on a
//! shard it was not packed for, settled once the map is read again), throttled (back to its
//! lane), failed (retried after its backoff, or given up), or refused whole (split for an
//! endpoint's size cap, or sent one record a call to find the one the stream refuses).

use std::collections::BTreeMap;

use kinesync_keys::ShardMap;
use kinesync_transport::{ErrorKind, RecordFailure, RecordOutcome, TransportError};
use tokio::time::Instant;

use super::{Done, MAX_REFUSED_IN_A_ROW, Out, Outbox};
use crate::batch::{Item, Unit};

impl Outbox {
    /// A Kinesis record's user records, back from a call that did not deliver them, each
    /// routed by the map as it is now: each key's first record is returned, the others wait
    /// at the front of their key's queue (see [`crate::batch::Batcher::unpack`]).
    fn unpack(&mut self, unit: Unit) -> Vec<Item> {
        let items = match unit {
            Unit::Single(item) => vec![item],
            Unit::Packed { items, .. } => items,
        };
        self.unpack_items(items)
    }

    /// [`unpack`](Self::unpack), for user records out of their Kinesis record.
    fn unpack_items(&mut self, mut items: Vec<Item>) -> Vec<Item> {
        for item in &mut items {
            item.shard = self.map.index_for(item.hash);
        }
        if items.len() == 1 {
            return items;
        }
        self.batcher.unpack(items)
    }

    /// A throttled Kinesis record's user records go back to their lanes, first in line.
    fn requeue(&mut self, unit: Unit) {
        for item in self.unpack(unit).into_iter().rev() {
            self.batcher.requeue(item);
        }
    }

    /// A Kinesis record that failed (not throttled): its user records go out again after
    /// their backoff, or are given up after `max_attempts` failed attempts.
    fn failed_attempt(&mut self, mut unit: Unit) {
        match &mut unit {
            Unit::Single(item) => item.attempts += 1,
            Unit::Packed { items, .. } => items.iter_mut().for_each(|i| i.attempts += 1),
        }
        for item in self.unpack(unit) {
            if self.abandoned || item.attempts >= self.config.max_attempts {
                self.batcher.give_up(item);
                continue;
            }
            let due = Instant::now() + self.backoff.delay(item.attempts);
            self.counts.retries += 1;
            self.batcher.retry_at(item, due);
        }
    }

    /// A Kinesis record that will not go out again this run: its user records, and every
    /// later one of their keys, stay pending.
    fn give_up(&mut self, unit: Unit) {
        for item in self.unpack(unit) {
            self.batcher.give_up(item);
        }
    }

    /// The stream took a Kinesis record, on shard `shard_id`: its user records are
    /// acknowledged, or (an aggregate on a shard it was not packed for) held until the map is
    /// read again.
    fn accepted(
        &mut self,
        unit: Unit,
        shard_id: &str,
        acknowledged: &mut Vec<kinesync_state::Change>,
    ) {
        self.counts.kinesis_records += 1;
        self.counts.acknowledged_bytes += unit.size() as u64;
        let predicted = self
            .map
            .shards()
            .get(unit.shard())
            .is_some_and(|s| s.id() == shard_id);
        if !predicted {
            self.map_stale = true;
        }
        match unit {
            Unit::Single(item) => {
                // A record alone is always where its own key puts it.
                self.batcher.acknowledged(&item);
                acknowledged.push(settled(item.change));
            }
            Unit::Packed { items, .. } if !predicted => {
                self.misplaced.push((shard_id.to_owned(), items));
            }
            Unit::Packed { items, .. } => {
                self.batcher.acknowledged_all(&items);
                self.counts.aggregated += items.len() as u64;
                acknowledged.extend(items.into_iter().map(|i| settled(i.change)));
            }
        }
    }

    /// Aggregates the stream put on a shard other than the one they were packed for (the
    /// stream was resharded): a record whose hash key lies in that shard's range (as the map
    /// now has it) is where a consumer reads it, and is acknowledged. One that does not would
    /// be read on the wrong shard (the KCL drops such records), so it is sent again, packed
    /// for its shard, and with it every later record of its key in the aggregate, to keep
    /// their order. Returns what to commit.
    pub(super) fn settle_misplaced(&mut self) -> Vec<kinesync_state::Change> {
        let mut acknowledged = Vec::new();
        for (shard_id, items) in std::mem::take(&mut self.misplaced) {
            let range = self
                .map
                .shards()
                .iter()
                .find(|s| s.id() == shard_id)
                .cloned();
            let mut again_keys = crate::hashed::HashedSet::default();
            let (mut landed, mut again) = (Vec::new(), Vec::new());
            for item in items {
                let placed = range.as_ref().is_some_and(|r| r.contains(item.hash));
                if placed && !again_keys.contains(&item.key) {
                    landed.push(item);
                } else {
                    again_keys.insert(item.key);
                    again.push(item);
                }
            }
            // A key with a record to send again stays with that record.
            let passing: Vec<&Item> = landed
                .iter()
                .filter(|i| !again_keys.contains(&i.key))
                .collect();
            let mut passed = crate::hashed::HashedSet::default();
            for item in passing {
                if passed.insert(item.key) {
                    self.batcher.acknowledged(item);
                }
            }
            self.counts.aggregated += landed.len() as u64;
            acknowledged.extend(landed.into_iter().map(|i| settled(i.change)));
            if again.is_empty() {
                continue;
            }
            self.counts.retries += again.len() as u64;
            let giving_up = self.abandoned || self.stopped.is_some();
            for item in self.unpack_items(again).into_iter().rev() {
                if giving_up {
                    self.batcher.give_up(item);
                } else {
                    self.batcher.requeue(item);
                }
            }
        }
        acknowledged
    }

    /// A call the stream refused whole as invalid (`ValidationException`): the API's rules
    /// are kept before sending, so one record broke a rule kinesync does not know. Several
    /// records: each goes again in a call of its own, to find it. One: it is that row's error
    /// (pending, tried again by the next run), and the others go on.
    fn refused_invalid(&mut self, units: Vec<Unit>, error: &TransportError) {
        let alone = units.len() == 1 && units[0].user_records() == 1;
        if !alone {
            if !self
                .notes
                .iter()
                .any(|n| n.starts_with("the stream refused a call"))
            {
                self.notes.push(format!(
                    "the stream refused a call of {} records as invalid ({}): its records were sent one a call, to find the one it refuses",
                    units.iter().map(Unit::user_records).sum::<usize>(),
                    error.message()
                ));
            }
            for unit in units {
                for mut item in self.unpack(unit).into_iter().rev() {
                    item.alone = true;
                    self.batcher.requeue(item);
                }
            }
            return;
        }
        self.refused_in_a_row += 1;
        for item in self.unpack(units.into_iter().next().expect("one unit")) {
            self.refused_rows.push((
                item.change.key().to_owned(),
                format!("the stream refused this record: {}", error.message()),
            ));
            self.batcher.give_up(item);
        }
    }

    /// Sorts an answer's Kinesis records into acknowledged, throttled, retried and given up,
    /// and returns the changes of the acknowledged user records, in the call's order, to
    /// commit.
    pub(super) fn complete(&mut self, done: Done) -> Vec<kinesync_state::Change> {
        let now = Instant::now();
        self.counts.calls += 1;
        self.counts.bytes += done.bytes as u64;
        let units: Vec<Unit> = done
            .sent
            .into_iter()
            .zip(done.records)
            .map(|(out, record)| match out {
                Out::Single(s) => Unit::Single(Item {
                    seq: s.seq,
                    record,
                    change: s.change,
                    attempts: s.attempts,
                    key: s.key,
                    hash: s.hash,
                    shard: s.shard,
                    sent_after: s.sent_after,
                    alone: s.alone,
                }),
                Out::Packed(items) => Unit::Packed { record, items },
            })
            .collect();
        let mut acknowledged = Vec::new();
        // Throttles per shard (and the judgement they were sent after) in this answer: one
        // congestion signal each.
        let mut throttled: BTreeMap<(usize, u32), u64> = BTreeMap::new();
        let last_shard = self.pacer.shards() - 1;
        // Its shard as the map now has it (the stream may have been resharded while it was
        // out).
        let shard_now = |map: &ShardMap, unit: &Unit| {
            let hash = match unit {
                Unit::Single(item) => item.hash,
                Unit::Packed { items, .. } => items[0].hash,
            };
            map.index_for(hash).min(last_shard)
        };
        match done.result {
            Ok(outcomes) => {
                self.failed_calls = 0;
                self.refused_in_a_row = 0;
                self.held_until = None;
                for (unit, outcome) in units.into_iter().zip(outcomes) {
                    match outcome {
                        RecordOutcome::Accepted { shard_id, .. } => {
                            self.accepted(unit, &shard_id, &mut acknowledged);
                        }
                        RecordOutcome::Failed { .. } if self.abandoned => self.give_up(unit),
                        RecordOutcome::Failed {
                            failure: RecordFailure::Throttled,
                            ..
                        } => {
                            // Pacing, not a failure: back to its lane, its shard slower.
                            self.counts.throttled += 1;
                            self.counts.retries += 1;
                            *throttled
                                .entry((shard_now(&self.map, &unit), unit.sent_after()))
                                .or_default() += 1;
                            self.requeue(unit);
                        }
                        RecordOutcome::Failed { failure, message } => {
                            self.last_failure = Some(TransportError::new(
                                ErrorKind::Transient,
                                kinesync_transport::Operation::PutRecords,
                                format!("{}: {message}", failure.code()),
                            ));
                            self.failed_attempt(unit);
                        }
                    }
                }
                if !acknowledged.is_empty() {
                    self.progress_at = now;
                }
            }
            Err(error)
                if error.kind() == ErrorKind::RequestTooLarge
                    && units.len() > 1
                    && !self.abandoned =>
            {
                // An endpoint with a lower cap than the API's: calls of half this size from
                // now on (never below its largest record), and these records go again in them.
                let largest = units.iter().map(Unit::size).max().unwrap_or(0);
                let before = self.batcher.max_bytes();
                self.batcher.lower_max_bytes((done.bytes / 2).max(largest));
                if self.notes.is_empty() {
                    self.notes.push(format!(
                        "the endpoint refused a call of {} bytes as too large (HTTP 413), under the API's {} bytes: calls were made smaller ({} bytes at most) for the rest of the run",
                        done.bytes,
                        before,
                        self.batcher.max_bytes()
                    ));
                }
                for unit in units {
                    self.requeue(unit);
                }
            }
            Err(error)
                if error.kind() == ErrorKind::InvalidRequest
                    && !self.abandoned
                    && self.refused_in_a_row < MAX_REFUSED_IN_A_ROW =>
            {
                self.refused_invalid(units, &error);
            }
            Err(error) if error.is_retryable() && !self.abandoned => {
                // The whole call failed: its records go back to their lanes, and the sender
                // holds every call back for one backoff.
                self.failed_calls += 1;
                self.held_until = Some(now + self.backoff.delay(self.failed_calls));
                let give_up = self.failed_calls >= self.config.max_attempts;
                let call_throttled = error.kind() == ErrorKind::Throttled;
                for unit in units {
                    if call_throttled {
                        self.counts.throttled += 1;
                        *throttled
                            .entry((shard_now(&self.map, &unit), unit.sent_after()))
                            .or_default() += 1;
                    }
                    self.counts.retries += 1;
                    self.requeue(unit);
                }
                if give_up {
                    // As many calls in a row as a record gets attempts, and none got through.
                    let calls = self.failed_calls;
                    self.batcher.abandon();
                    self.stopped = Some(TransportError::new(
                        error.kind(),
                        kinesync_transport::Operation::PutRecords,
                        format!(
                            "{calls} calls in a row failed whole (max_attempts), so the run stopped; the last failure: {}",
                            error.message()
                        ),
                    ));
                }
                self.last_failure = Some(error);
            }
            Err(error) => {
                // Nothing more can go out: finish what is in flight, keep the rest pending.
                for unit in units {
                    self.give_up(unit);
                }
                self.batcher.abandon();
                if error.is_retryable() {
                    // Abandoned meanwhile: the error is not what stopped the run.
                    return acknowledged;
                }
                self.stopped.get_or_insert(error);
            }
        }
        for ((shard, sent_after), count) in throttled {
            self.pacer.throttled(shard, count, sent_after, now);
        }
        acknowledged
    }
}

/// What an acknowledged record commits: its row was stored when it was marked in doubt (see
/// [`crate::run`]), so an upsert only settles the mark with the row's fingerprint.
fn settled(change: kinesync_state::Change) -> kinesync_state::Change {
    match change {
        kinesync_state::Change::Upsert { key, .. } => kinesync_state::Change::Settle { key },
        other => other,
    }
}
