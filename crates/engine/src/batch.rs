//! Stage 4, batch: records into PutRecords calls within the call limits and each shard's
//! budget, one record per partition key at a time. Pure: no I/O and no clock of its own (the
//! time is passed in), so its rules are property-tested without a sink or a state store.
//!
//! **Lanes.** Each open shard has a lane: the records that may go to it next, in model order.
//! A call takes from the lanes whose shard has budget now ([`Pacer`]), in turns, so a shard out
//! of budget holds back no other shard's records, and a call spreads over the shards that have
//! room.
//!
//! **Per-key order.** A partition key is *owned* by at most one record at a time: the record in
//! a lane, in a call, or waiting to be retried holds it until the stream acknowledges it. Later
//! records with the same key wait beside the lanes, and the next one takes the key when the
//! stream acknowledges its owner: no record overtakes an earlier one with the same key, even
//! when their explicit hash keys send them to different shards. A record that is given up keeps
//! its key for the rest of the run, so the records behind it stay pending: the next run sends
//! them all, in model order.
//!
//! **Aggregation** (when on). A call's Kinesis records are [`Unit`]s: a user record alone, or
//! many of one shard packed into an aggregated record ([`kinesync_transport::aggregate`]),
//! charged to the shard's budget as one record of its size. Packing takes a lane's records in
//! order and, behind each, the later records of its key bound for the same shard: an aggregate
//! is stored and read whole, so it may carry many records of a key, in model order, where
//! single records go one per key per call. The aggregate owns those keys until the stream
//! acknowledges it; one that fails is unpacked, each key's first record back in its lane (or
//! waiting for its retry) and the others at the front of their key's queue, and packed again.

use std::collections::{BTreeMap, VecDeque};

// tokio's clock type, not std's: it is the one that paused test time moves. The batcher never
// reads it; the time is always handed in.
use tokio::time::Instant;

use kinesync_keys::{ExplicitHashKey, HashKey};
use kinesync_state::Change;
use kinesync_transport::PutRecord;
use kinesync_transport::aggregate::Aggregator;

use crate::hashed::{HashedMap, HashedSet};
use crate::pace::Pacer;

/// One record waiting to be sent, with what to commit once it is acknowledged.
#[derive(Debug)]
pub(crate) struct Item {
    /// Position in the run's order.
    pub(crate) seq: u64,
    pub(crate) record: PutRecord,
    pub(crate) change: Change,
    /// Failed attempts so far (throttles are pacing, not failures, and do not count).
    pub(crate) attempts: u32,
    /// The partition key's XXH3-128: keys are owned by hash, so a record costs no key copy.
    pub(crate) key: u128,
    /// The hash key the stream routes the record by (its explicit hash key, or its
    /// partition key's MD5).
    pub(crate) hash: HashKey,
    /// The shard (its index in the stream's shard map) the record goes to.
    pub(crate) shard: usize,
    /// The judgement of its shard's throttles it was last sent after (see
    /// [`Pacer::judgement`]).
    pub(crate) sent_after: u32,
    /// Goes in a call of its own: a call it was in was refused whole as invalid, and calls of
    /// one record find the record the stream refuses.
    pub(crate) alone: bool,
}

impl Item {
    /// Record `seq`, routed by `hash` to `shard`.
    pub(crate) fn new(
        seq: u64,
        record: PutRecord,
        change: Change,
        hash: HashKey,
        shard: usize,
    ) -> Self {
        let key = xxhash_rust::xxh3::xxh3_128(record.partition_key.as_str().as_bytes());
        Self {
            seq,
            record,
            change,
            attempts: 0,
            key,
            hash,
            shard,
            sent_after: 0,
            alone: false,
        }
    }
}

/// One Kinesis record of a call.
#[derive(Debug)]
pub(crate) enum Unit {
    /// A user record, as it is.
    Single(Item),
    /// An aggregated record, and the user records it carries, each key's in model order.
    Packed { record: PutRecord, items: Vec<Item> },
}

impl Unit {
    /// What the stream counts: data plus partition key.
    pub(crate) fn size(&self) -> usize {
        match self {
            Unit::Single(item) => item.record.size(),
            Unit::Packed { record, .. } => record.size(),
        }
    }

    /// The shard it was packed for.
    pub(crate) fn shard(&self) -> usize {
        match self {
            Unit::Single(item) => item.shard,
            Unit::Packed { items, .. } => items[0].shard,
        }
    }

    /// The judgement of its shard's throttles it was sent after.
    pub(crate) fn sent_after(&self) -> u32 {
        match self {
            Unit::Single(item) => item.sent_after,
            Unit::Packed { items, .. } => items[0].sent_after,
        }
    }

    /// The user records it carries.
    pub(crate) fn user_records(&self) -> usize {
        match self {
            Unit::Single(_) => 1,
            Unit::Packed { items, .. } => items.len(),
        }
    }
}

/// Records waiting for a call: in their shards' lanes, behind their keys' owners, or waiting
/// for a retry.
#[derive(Debug)]
pub(crate) struct Batcher {
    max_records: usize,
    max_bytes: usize,
    /// Per shard, the records that may go next: each owns its key.
    lanes: Vec<VecDeque<Item>>,
    /// Per key, the later records waiting for its owner to be acknowledged, in model order.
    blocked: HashedMap<VecDeque<Item>>,
    /// Keys owned by a record in a lane, in a call or waiting for a retry.
    owned: HashedSet,
    retries: BTreeMap<(Instant, u64), Item>,
    /// Keys whose owner was given up: everything behind them stays pending.
    stranded: HashedSet,
    /// Records left for the next run so far.
    pending: u64,
    /// Records in lanes, blocked and waiting for a retry.
    backlog: usize,
    /// The lane a call starts taking from: each call starts one further on.
    turn: usize,
    /// The largest aggregated record, when records are packed.
    aggregate_max_bytes: Option<usize>,
}

impl Batcher {
    /// Calls of at most `max_records` Kinesis records and `max_bytes` bytes (partition keys
    /// included), to a stream of `shards` shards; records packed into aggregates of at most
    /// `aggregate_max_bytes`, when given.
    pub(crate) fn new(
        max_records: usize,
        max_bytes: usize,
        shards: usize,
        aggregate_max_bytes: Option<usize>,
    ) -> Self {
        Self {
            max_records,
            max_bytes,
            lanes: (0..shards.max(1)).map(|_| VecDeque::new()).collect(),
            blocked: HashedMap::default(),
            owned: HashedSet::default(),
            retries: BTreeMap::new(),
            stranded: HashedSet::default(),
            pending: 0,
            backlog: 0,
            turn: 0,
            aggregate_max_bytes,
        }
    }

    /// Queues a record behind everything queued before it for its key.
    pub(crate) fn push(&mut self, item: Item) {
        if self.stranded.contains(&item.key) {
            // Its key's owner gave up: it cannot go out this run without overtaking.
            self.pending += 1;
            return;
        }
        self.backlog += 1;
        if self.owned.insert(item.key) {
            let lane = item.shard.min(self.lanes.len() - 1);
            self.lanes[lane].push_back(item);
        } else {
            self.blocked.entry(item.key).or_default().push_back(item);
        }
    }

    /// Calls are at most `max_bytes` from now on (an endpoint refused a larger one).
    pub(crate) fn lower_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = self.max_bytes.min(max_bytes.max(1));
    }

    /// The most bytes a call carries.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Records queued or waiting for a retry.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog
    }

    /// Records left for the next run so far.
    pub(crate) fn pending(&self) -> u64 {
        self.pending
    }

    /// When the earliest retry falls due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.retries.keys().next().map(|(due, _)| *due)
    }

    /// When a call could next take a record: the earliest a lane's first record fits its
    /// shard's budget, or a retry falls due. `None` when nothing waits in a lane or for a
    /// retry.
    pub(crate) fn ready_at(&self, pacer: &mut Pacer, now: Instant) -> Option<Instant> {
        let lanes = self.lanes.iter().enumerate().filter_map(|(shard, lane)| {
            let front = lane.front()?;
            // Aggregating, the least it goes out as is an aggregate of one.
            let size = match self.aggregate_max_bytes {
                Some(max) => Aggregator::new(max).size_with(&front.record),
                None => front.record.size(),
            };
            Some(pacer.ready_at(shard, size, now))
        });
        lanes.chain(self.next_due()).min()
    }

    /// How many records a call could take now (by record counts: bytes may make it fewer).
    pub(crate) fn room(&self, pacer: &mut Pacer, now: Instant) -> usize {
        let lanes: usize = self
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, lane)| !lane.is_empty())
            .map(|(shard, lane)| lane.len().min(pacer.room(shard, now)))
            .sum();
        let due = self.retries.range(..(now, u64::MAX)).count();
        (lanes + due).min(self.max_records)
    }

    /// Records a call could take at `now` if budgets allowed: those in lanes, and retries
    /// due. (The others wait for their keys.)
    pub(crate) fn ready_records(&self, now: Instant) -> usize {
        let in_lanes: usize = self.lanes.iter().map(VecDeque::len).sum();
        in_lanes + self.retries.range(..(now, u64::MAX)).count()
    }

    /// Retries due by `now` go back to the front of their lanes, in model order.
    fn release_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due.sort_by_key(|item| std::cmp::Reverse(item.seq));
        for item in due {
            let lane = item.shard.min(self.lanes.len() - 1);
            self.lanes[lane].push_front(item);
        }
    }

    /// The next call's Kinesis records at `now`: from the lanes whose shard has budget, in
    /// turns, within the call limits. Each is charged to its shard's budget, and its records
    /// keep their keys until they are [acknowledged](Self::acknowledged),
    /// [requeued](Self::requeue), [retried](Self::retry_at) or [given up](Self::give_up).
    pub(crate) fn next_batch(&mut self, now: Instant, pacer: &mut Pacer) -> Vec<Unit> {
        self.release_due(now);
        let mut batch: Vec<Unit> = Vec::new();
        let mut bytes = 0;
        let lanes = self.lanes.len();
        let busy = self.lanes.iter().filter(|lane| !lane.is_empty()).count();
        if busy == 0 {
            return batch;
        }
        // Each busy lane gets a share of the call per turn, so that one shard does not fill
        // a call while others have room.
        let share = self.max_records.div_ceil(busy).max(1);
        let mut full = false;
        let mut taken_records = 0;
        loop {
            let taken_before = batch.len();
            for step in 0..lanes {
                let shard = (self.turn + step) % lanes;
                let mut taken = 0;
                while taken < share {
                    if batch.len() == self.max_records {
                        full = true;
                        break;
                    }
                    let room = self.max_bytes - bytes;
                    let Some(unit) = self.take(shard, room, batch.len(), now, pacer) else {
                        break;
                    };
                    let Ok(mut unit) = unit else {
                        full = true;
                        break;
                    };
                    let judgement = pacer.judgement(shard);
                    match &mut unit {
                        Unit::Single(item) => item.sent_after = judgement,
                        Unit::Packed { items, .. } => {
                            items.iter_mut().for_each(|i| i.sent_after = judgement);
                        }
                    }
                    bytes += unit.size();
                    taken_records += unit.user_records();
                    let alone = matches!(&unit, Unit::Single(item) if item.alone);
                    batch.push(unit);
                    taken += 1;
                    if alone {
                        // Nothing joins it.
                        full = true;
                        break;
                    }
                }
                if full {
                    break;
                }
            }
            if full || batch.len() == taken_before {
                break;
            }
        }
        self.turn = (self.turn + 1) % lanes;
        self.backlog -= taken_records;
        batch
    }

    /// The next Kinesis record from `shard`'s lane, charged to its budget: `None` when the
    /// lane is empty or the shard has no budget now, `Err` when the next record does not fit
    /// the `room` left in the call.
    fn take(
        &mut self,
        shard: usize,
        room: usize,
        taken_so_far: usize,
        now: Instant,
        pacer: &mut Pacer,
    ) -> Option<Result<Unit, ()>> {
        let front = self.lanes[shard].front()?;
        let size = front.record.size();
        if front.alone && taken_so_far > 0 {
            // It goes in a call of its own: not this one.
            return Some(Err(()));
        }
        if let Some(max) = self.aggregate_max_bytes.filter(|_| !front.alone) {
            let alone = Aggregator::new(max).size_with(&front.record);
            // Packed when it may share an aggregate, once the shard can take one with it;
            // otherwise (too large to share, or a rate cut so low that the shard's bucket
            // never holds that much) it goes as it is.
            if alone <= max && alone <= room && alone <= pacer.byte_ceiling(shard) {
                let budget = pacer.byte_room(shard, now);
                if pacer.room(shard, now) == 0 || budget < alone {
                    return None;
                }
                let unit = self.pack(shard, max.min(room).min(budget));
                if pacer.try_take(shard, unit.size(), now) {
                    return Some(Ok(unit));
                }
                self.put_back(unit);
                return None;
            }
        }
        if size > room {
            return Some(Err(()));
        }
        if !pacer.try_take(shard, size, now) {
            return None;
        }
        let item = self.lanes[shard].pop_front().expect("a front item");
        Some(Ok(Unit::Single(item)))
    }

    /// Packs records of `shard`'s lane into an aggregate of at most `limit` bytes: each lane
    /// record in order, and behind it the later records of its key bound for the same shard.
    /// The lane's first record must fit alone. One record alone goes as it is.
    fn pack(&mut self, shard: usize, limit: usize) -> Unit {
        let mut aggregator = Aggregator::new(limit);
        let mut items: Vec<Item> = Vec::new();
        while let Some(front) = self.lanes[shard].front() {
            if !aggregator.try_push(&front.record) {
                break;
            }
            let item = self.lanes[shard].pop_front().expect("a front item");
            let key = item.key;
            items.push(item);
            let Some(behind) = self.blocked.get_mut(&key) else {
                continue;
            };
            while let Some(next) = behind.front() {
                if next.shard != shard || !aggregator.try_push(&next.record) {
                    break;
                }
                items.push(behind.pop_front().expect("a front item"));
            }
            if behind.is_empty() {
                self.blocked.remove(&key);
            }
        }
        debug_assert!(!items.is_empty(), "the lane's first record fits alone");
        if items.len() == 1 {
            return Unit::Single(items.pop().expect("one item"));
        }
        // The first record's hash key lies in the shard's range, as every record's does: the
        // stream puts the aggregate on the shard each of them maps to.
        let record = aggregator.finish(ExplicitHashKey::new(items[0].hash.0));
        Unit::Packed { record, items }
    }

    /// A unit taken but not sent goes back where its records came from.
    fn put_back(&mut self, unit: Unit) {
        let owners = match unit {
            Unit::Single(item) => vec![item],
            Unit::Packed { items, .. } => {
                // Never counted out of the backlog: unpacking counts the ones behind back in.
                let taken = items.len();
                let owners = self.unpack(items);
                self.backlog -= taken - owners.len();
                owners
            }
        };
        for item in owners.into_iter().rev() {
            let lane = item.shard.min(self.lanes.len() - 1);
            self.lanes[lane].push_front(item);
        }
    }

    /// An aggregate's records, back from a call that did not deliver them: every record but
    /// each key's first goes back to the front of its key's queue (they were taken from there,
    /// in order), and the first ones are returned, in the aggregate's order, for the caller
    /// to [requeue](Self::requeue), [retry](Self::retry_at) or [give up](Self::give_up).
    pub(crate) fn unpack(&mut self, items: Vec<Item>) -> Vec<Item> {
        let mut keys = HashedSet::default();
        let (owners, behind): (Vec<Item>, Vec<Item>) =
            items.into_iter().partition(|item| keys.insert(item.key));
        for item in behind.into_iter().rev() {
            self.backlog += 1;
            self.blocked.entry(item.key).or_default().push_front(item);
        }
        owners
    }

    /// The stream acknowledged an aggregate: each of its keys passes on once.
    pub(crate) fn acknowledged_all(&mut self, items: &[Item]) {
        let mut keys = HashedSet::default();
        for item in items {
            if keys.insert(item.key) {
                self.acknowledged(item);
            }
        }
    }

    /// When aggregating: the earliest a call could carry a whole aggregate, from a lane that
    /// holds one's worth of records (when `finishing`, whatever a lane holds) and a shard
    /// whose budget takes that much. Such a call is worth making at once. `None` when not
    /// aggregating, or no lane holds enough.
    pub(crate) fn full_aggregate_at(
        &self,
        pacer: &mut Pacer,
        now: Instant,
        finishing: bool,
    ) -> Option<Instant> {
        let max = self.aggregate_max_bytes?;
        (0..self.lanes.len())
            .filter_map(|shard| {
                let held = self.bytes_ready(shard, max);
                if !(held >= max || (finishing && held > 0)) {
                    return None;
                }
                let need = held.min(max);
                if pacer.room(shard, now) > 0 && pacer.byte_room(shard, now) >= need {
                    return Some(now);
                }
                Some(pacer.ready_at(shard, need, now))
            })
            .min()
    }

    /// The bytes `shard`'s lane could pack now (its records, and the records of their keys
    /// behind them for the same shard), counted up to `enough`.
    fn bytes_ready(&self, shard: usize, enough: usize) -> usize {
        let mut total = 0;
        for item in &self.lanes[shard] {
            total += item.record.size();
            let behind = self.blocked.get(&item.key).into_iter().flatten();
            for next in behind.take_while(|next| next.shard == shard) {
                if total >= enough {
                    return total;
                }
                total += next.record.size();
            }
            if total >= enough {
                return total;
            }
        }
        total
    }

    /// The stream acknowledged `item`: the next record of its key, if one waits, takes the
    /// key and the front of its lane.
    pub(crate) fn acknowledged(&mut self, item: &Item) {
        let next = self
            .blocked
            .get_mut(&item.key)
            .and_then(VecDeque::pop_front);
        match next {
            Some(next) => {
                if self.blocked.get(&item.key).is_some_and(VecDeque::is_empty) {
                    self.blocked.remove(&item.key);
                }
                let lane = next.shard.min(self.lanes.len() - 1);
                self.lanes[lane].push_front(next);
            }
            None => {
                self.owned.remove(&item.key);
            }
        }
    }

    /// `item` was throttled: it goes back to the front of its lane, keeping its key, and
    /// goes out again when its shard has budget.
    pub(crate) fn requeue(&mut self, item: Item) {
        self.backlog += 1;
        let lane = item.shard.min(self.lanes.len() - 1);
        self.lanes[lane].push_front(item);
    }

    /// `item` goes out again at `due`; it keeps its key meanwhile.
    pub(crate) fn retry_at(&mut self, item: Item, due: Instant) {
        self.backlog += 1;
        self.retries.insert((due, item.seq), item);
    }

    /// `item` will not be sent this run: it and every later record of its key stay pending.
    pub(crate) fn give_up(&mut self, item: Item) {
        self.stranded.insert(item.key);
        let behind = self.blocked.remove(&item.key).map_or(0, |b| b.len());
        self.backlog -= behind;
        self.pending += 1 + behind as u64;
    }

    /// The stream now has `shards` shards: every waiting record moves to the lane of the
    /// shard `shard_of` gives it, in the order it waited (records in calls take theirs when
    /// they come back).
    pub(crate) fn remap(&mut self, shards: usize, shard_of: impl Fn(HashKey) -> usize) {
        let shards = shards.max(1);
        let mut lanes: Vec<VecDeque<Item>> = (0..shards).map(|_| VecDeque::new()).collect();
        let mut waiting: Vec<Item> = self
            .lanes
            .iter_mut()
            .flat_map(|lane| lane.drain(..))
            .collect();
        waiting.sort_by_key(|item| item.seq);
        for mut item in waiting {
            item.shard = shard_of(item.hash).min(shards - 1);
            lanes[item.shard].push_back(item);
        }
        self.lanes = lanes;
        for item in self
            .retries
            .values_mut()
            .chain(self.blocked.values_mut().flatten())
        {
            item.shard = shard_of(item.hash).min(shards - 1);
        }
        self.turn = 0;
    }

    /// Nothing more goes out this run: what waits is left pending. Returns how many records
    /// that was.
    pub(crate) fn abandon(&mut self) -> u64 {
        let left = self.backlog as u64;
        self.pending += left;
        self.lanes.iter_mut().for_each(VecDeque::clear);
        self.blocked.clear();
        self.retries.clear();
        self.backlog = 0;
        left
    }
}

#[cfg(test)]
mod tests;
