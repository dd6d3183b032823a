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

use std::collections::{BTreeMap, VecDeque};

// tokio's clock type, not std's: it is the one that paused test time moves. The batcher never
// reads it; the time is always handed in.
use tokio::time::Instant;

use kinesync_state::Change;
use kinesync_transport::PutRecord;

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
    /// The shard (its index in the stream's shard map) the record goes to.
    pub(crate) shard: usize,
    /// The judgement of its shard's throttles it was last sent after (see
    /// [`Pacer::judgement`]).
    pub(crate) sent_after: u32,
}

impl Item {
    pub(crate) fn new(seq: u64, record: PutRecord, change: Change, shard: usize) -> Self {
        let key = xxhash_rust::xxh3::xxh3_128(record.partition_key.as_str().as_bytes());
        Self {
            seq,
            record,
            change,
            attempts: 0,
            key,
            shard,
            sent_after: 0,
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
}

impl Batcher {
    /// Calls of at most `max_records` records and `max_bytes` bytes (partition keys included),
    /// to a stream of `shards` shards.
    pub(crate) fn new(max_records: usize, max_bytes: usize, shards: usize) -> Self {
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
            lane.front()
                .map(|item| pacer.ready_at(shard, item.record.size(), now))
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

    /// The next call's records at `now`: from the lanes whose shard has budget, in turns,
    /// within the call limits. Each record taken is charged to its shard's budget, and keeps
    /// its key until it is [`acknowledged`](Self::acknowledged), [requeued](Self::requeue),
    /// [retried](Self::retry_at) or [given up](Self::give_up).
    pub(crate) fn next_batch(&mut self, now: Instant, pacer: &mut Pacer) -> Vec<Item> {
        self.release_due(now);
        let mut batch: Vec<Item> = Vec::new();
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
        loop {
            let taken_before = batch.len();
            for step in 0..lanes {
                let shard = (self.turn + step) % lanes;
                let lane = &mut self.lanes[shard];
                let mut taken = 0;
                while taken < share {
                    let Some(item) = lane.front() else { break };
                    let size = item.record.size();
                    if batch.len() == self.max_records || bytes + size > self.max_bytes {
                        full = true;
                        break;
                    }
                    if !pacer.try_take(shard, size, now) {
                        break;
                    }
                    let mut item = lane.pop_front().expect("a front item");
                    item.sent_after = pacer.judgement(shard);
                    bytes += size;
                    batch.push(item);
                    taken += 1;
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
        self.backlog -= batch.len();
        batch
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
    pub(crate) fn remap(&mut self, shards: usize, shard_of: impl Fn(&PutRecord) -> usize) {
        let shards = shards.max(1);
        let mut lanes: Vec<VecDeque<Item>> = (0..shards).map(|_| VecDeque::new()).collect();
        let mut waiting: Vec<Item> = self
            .lanes
            .iter_mut()
            .flat_map(|lane| lane.drain(..))
            .collect();
        waiting.sort_by_key(|item| item.seq);
        for mut item in waiting {
            item.shard = shard_of(&item.record).min(shards - 1);
            lanes[item.shard].push_back(item);
        }
        self.lanes = lanes;
        for item in self
            .retries
            .values_mut()
            .chain(self.blocked.values_mut().flatten())
        {
            item.shard = shard_of(&item.record).min(shards - 1);
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
mod tests {
    //! The batcher's rules, without a sink or a state store: whatever the keys, shards, sizes,
    //! outcomes and limits, every call is within the limits, no key is in two places at once,
    //! no shard is offered more than its budget, every record is settled exactly once, and
    //! each key's records are acknowledged in model order.

    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use kinesync_keys::PartitionKey;
    use proptest::prelude::*;

    use super::*;
    use crate::pace::Ceiling;

    fn item(seq: u64, key: u8, data_len: usize, shard: usize) -> Item {
        let record = PutRecord::new(
            PartitionKey::new(format!("k{key}")).expect("a valid key"),
            vec![b'x'; data_len],
        );
        Item::new(
            seq,
            record,
            Change::Delete {
                key: seq.to_string(),
            },
            shard,
        )
    }

    fn pacer(shards: usize, records_per_second: f64, now: Instant) -> Pacer {
        Pacer::new(
            shards,
            Ceiling {
                records_per_second,
                bytes_per_second: 1024.0 * 1024.0,
            },
            now,
        )
    }

    /// What happens to a record in a call: acknowledged, throttled, retried, or given up.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Ack,
        Throttle,
        Retry,
        GiveUp,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            6 => Just(Fate::Ack),
            2 => Just(Fate::Throttle),
            2 => Just(Fate::Retry),
            1 => Just(Fate::GiveUp)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn calls_stay_within_limits_and_budgets_and_keys_keep_model_order(
            records in prop::collection::vec((0u8..12, 0usize..300, 0usize..8), 1..300),
            fates in prop::collection::vec(fate(), 1..64),
            max_records in 1usize..20,
            max_bytes in 320usize..2000,
            shards in 1usize..8,
            rate in 5.0f64..200.0,
        ) {
            let start = Instant::now();
            let mut pacer = pacer(shards, rate, start);
            let mut batcher = Batcher::new(max_records, max_bytes, shards);
            let mut key_of = BTreeMap::new();
            for (seq, (key, len, shard)) in records.iter().enumerate() {
                key_of.insert(seq as u64, *key);
                // Usually one shard per key; sometimes (an explicit hash key) another.
                let shard = if *shard == 0 { usize::from(*key) % shards } else { *shard % shards };
                batcher.push(item(seq as u64, *key, *len, shard));
            }
            let mut now = start;
            let mut acknowledged: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
            let mut given_up_keys = HashSet::new();
            let mut settled = 0u64;
            let mut fates = fates.iter().cycle();
            // A record throttled three times is acknowledged next (a stream that throttles
            // one record for ever is the outbox's retry budget's to end, not the batcher's).
            let mut throttles: BTreeMap<u64, u32> = BTreeMap::new();
            // When each shard was offered each record, to check the budget over any second.
            let mut offered: Vec<Vec<Instant>> = vec![Vec::new(); shards];
            let mut rounds = 0;
            while batcher.backlog() > 0 {
                rounds += 1;
                prop_assert!(rounds < 100_000, "the batcher stopped making progress");
                let batch = batcher.next_batch(now, &mut pacer);
                if batch.is_empty() {
                    let ready = batcher.ready_at(&mut pacer, now);
                    prop_assert!(ready.is_some(), "records wait with no call, no budget and no retry");
                    let ready = ready.unwrap();
                    prop_assert!(ready > now, "ready now, yet nothing was taken");
                    now = ready;
                    continue;
                }
                prop_assert!(batch.len() <= max_records);
                let bytes: usize = batch.iter().map(|i| i.record.size()).sum();
                prop_assert!(bytes <= max_bytes, "{bytes} bytes in a call of at most {max_bytes}");
                let keys: HashSet<u128> = batch.iter().map(|i| i.key).collect();
                prop_assert_eq!(keys.len(), batch.len(), "two records of one key in a call");
                for item in batch {
                    offered[item.shard].push(now);
                    let key = key_of[&item.seq];
                    prop_assert!(!given_up_keys.contains(&key), "a record sent behind one given up");
                    let fate = match fates.next().unwrap() {
                        Fate::Throttle if throttles.get(&item.seq).copied().unwrap_or(0) >= 3 => &Fate::Ack,
                        fate => fate,
                    };
                    match fate {
                        Fate::Ack => {
                            batcher.acknowledged(&item);
                            acknowledged.entry(key).or_default().push(item.seq);
                            settled += 1;
                        }
                        Fate::Throttle => {
                            *throttles.entry(item.seq).or_default() += 1;
                            pacer.throttled(item.shard, 1, item.sent_after, now);
                            batcher.requeue(item);
                        }
                        Fate::Retry if item.attempts < 3 => {
                            let mut item = item;
                            item.attempts += 1;
                            batcher.retry_at(item, now + Duration::from_millis(10));
                        }
                        Fate::Retry | Fate::GiveUp => {
                            given_up_keys.insert(key);
                            batcher.give_up(item);
                        }
                    }
                }
                // Time moves on between calls.
                now += Duration::from_millis(3);
            }
            // Every record is acknowledged or pending, once.
            prop_assert_eq!(settled + batcher.pending(), records.len() as u64);
            // Each key's acknowledged records are in model order, with no gap before a later
            // one: what is acknowledged of a key is a prefix of its records.
            for (key, seqs) in &acknowledged {
                let all: Vec<u64> = key_of.iter().filter(|(_, k)| *k == key).map(|(s, _)| *s).collect();
                prop_assert_eq!(&all[..seqs.len()], seqs.as_slice());
            }
            // No shard was offered more than a second's burst plus a second's rate in any
            // one-second window (the service's bucket, and the most this one gives).
            let most = (2.0 * rate).floor() as usize + 1;
            for times in &offered {
                for (i, start) in times.iter().enumerate() {
                    let within = times[i..].iter().take_while(|t| **t < *start + Duration::from_secs(1)).count();
                    prop_assert!(within <= most, "{within} records offered in one second, more than {most}");
                }
            }
        }
    }

    fn seqs(batch: Vec<Item>) -> Vec<u64> {
        batch.iter().map(|i| i.seq).collect()
    }

    #[test]
    fn a_record_waits_while_its_key_is_out_and_others_go_past_it() {
        let now = Instant::now();
        let mut pacer = pacer(1, 1000.0, now);
        let mut batcher = Batcher::new(10, 1 << 20, 1);
        batcher.push(item(1, 1, 10, 0));
        batcher.push(item(2, 1, 10, 0));
        batcher.push(item(3, 2, 10, 0));
        assert_eq!(seqs(batcher.next_batch(now, &mut pacer)), [1, 3]);
        assert!(
            batcher.next_batch(now, &mut pacer).is_empty(),
            "seq 2 must wait for seq 1"
        );
        batcher.acknowledged(&item(1, 1, 10, 0));
        assert_eq!(seqs(batcher.next_batch(now, &mut pacer)), [2]);
    }

    #[test]
    fn a_later_record_of_a_key_waits_even_on_another_shard() {
        let now = Instant::now();
        let mut pacer = pacer(2, 1000.0, now);
        let mut batcher = Batcher::new(10, 1 << 20, 2);
        batcher.push(item(1, 1, 10, 0));
        batcher.push(item(2, 1, 10, 1));
        assert_eq!(seqs(batcher.next_batch(now, &mut pacer)), [1]);
        assert!(batcher.next_batch(now, &mut pacer).is_empty());
        batcher.acknowledged(&item(1, 1, 10, 0));
        assert_eq!(seqs(batcher.next_batch(now, &mut pacer)), [2]);
    }

    #[test]
    fn a_shard_out_of_budget_holds_back_no_other_shard() {
        let now = Instant::now();
        // Two records per second per shard.
        let mut pacer = pacer(2, 2.0, now);
        let mut batcher = Batcher::new(100, 1 << 20, 2);
        for seq in 0..6 {
            batcher.push(item(seq, seq as u8, 10, 0));
        }
        batcher.push(item(6, 6, 10, 1));
        let first = seqs(batcher.next_batch(now, &mut pacer));
        assert_eq!(
            first.len(),
            3,
            "two for shard 0, one for shard 1: {first:?}"
        );
        assert!(first.contains(&6));
        assert!(
            batcher.next_batch(now, &mut pacer).is_empty(),
            "shard 0 is out of budget"
        );
        let ready = batcher.ready_at(&mut pacer, now).unwrap();
        assert!(
            ready >= now + Duration::from_millis(500),
            "one record per half second"
        );
        assert_eq!(batcher.next_batch(ready, &mut pacer).len(), 1);
    }

    #[test]
    fn a_retry_goes_first_once_due() {
        let now = Instant::now();
        let mut pacer = pacer(1, 1000.0, now);
        let mut batcher = Batcher::new(10, 1 << 20, 1);
        batcher.push(item(1, 1, 10, 0));
        batcher.push(item(2, 2, 10, 0));
        let mut batch = batcher.next_batch(now, &mut pacer);
        assert_eq!(batch.len(), 2);
        let second = batch.pop().unwrap();
        batcher.acknowledged(&batch.pop().unwrap());
        batcher.push(item(3, 3, 10, 0));
        batcher.retry_at(second, now + Duration::from_secs(1));
        assert_eq!(seqs(batcher.next_batch(now, &mut pacer)), [3]);
        assert_eq!(batcher.next_due(), Some(now + Duration::from_secs(1)));
        batcher.push(item(4, 4, 10, 0));
        assert_eq!(
            seqs(batcher.next_batch(now + Duration::from_secs(1), &mut pacer)),
            [2, 4]
        );
    }
}
