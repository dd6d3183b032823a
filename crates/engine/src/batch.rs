//! Stage 4, batch: records into PutRecords calls within the limits, in model order, one
//! record per partition key at a time. Pure: no I/O and no clock of its own (the time is
//! passed in), so its rules are property-tested without a sink or a state store.
//!
//! **Per-key order.** A partition key is *owned* by at most one record at a time: the record
//! in a call, or waiting to be retried, holds it until the stream acknowledges it. Later
//! records with the same key wait in the queue, so no record overtakes an earlier one with the
//! same key: not while in flight (one per key per call, one call per key), and not across a
//! retry. A record that is given up keeps its key for the rest of the run, so the records
//! behind it wait too and stay pending: the next run sends them all, in model order.

use std::collections::{BTreeMap, VecDeque};

// tokio's clock type, not std's: it is the one that paused test time moves. The batcher never
// reads it; the time is always handed in.
use tokio::time::Instant;

use kinesync_state::Change;
use kinesync_transport::PutRecord;

use crate::hashed::{HashedMap, HashedSet};

/// One record waiting to be sent, with what to commit once it is acknowledged.
#[derive(Debug)]
pub(crate) struct Item {
    /// Position in the run's order.
    pub(crate) seq: u64,
    pub(crate) record: PutRecord,
    pub(crate) change: Change,
    /// Failed attempts so far.
    pub(crate) attempts: u32,
    /// The partition key's XXH3-128: keys are owned by hash, so a record costs no key copy.
    pub(crate) key: u128,
}

impl Item {
    pub(crate) fn new(seq: u64, record: PutRecord, change: Change) -> Self {
        let key = xxhash_rust::xxh3::xxh3_128(record.partition_key.as_str().as_bytes());
        Self {
            seq,
            record,
            change,
            attempts: 0,
            key,
        }
    }
}

/// How far past records whose key is taken a batch looks for records it may send.
const SCAN_WINDOW: usize = 4096;

/// Records waiting for a call: the queue in model order, the retries by due time, and which
/// keys are taken.
#[derive(Debug)]
pub(crate) struct Batcher {
    max_records: usize,
    max_bytes: usize,
    queue: VecDeque<Item>,
    retries: BTreeMap<(Instant, u64), Item>,
    /// Partition key (hash) → the seq of the record that owns it.
    owners: HashedMap<u64>,
    /// Keys whose owner was given up: everything behind them stays pending.
    stranded: HashedSet,
    /// Records left for the next run: given up, or behind one that was.
    pending: u64,
}

impl Batcher {
    /// Calls of at most `max_records` records and `max_bytes` bytes (partition keys included).
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Self {
        Self {
            max_records,
            max_bytes,
            queue: VecDeque::new(),
            retries: BTreeMap::new(),
            owners: HashedMap::default(),
            stranded: HashedSet::default(),
            pending: 0,
        }
    }

    /// Queues a record behind everything queued before it.
    pub(crate) fn push(&mut self, item: Item) {
        self.queue.push_back(item);
    }

    /// Records queued or waiting for a retry.
    pub(crate) fn backlog(&self) -> usize {
        self.queue.len() + self.retries.len()
    }

    /// Records left for the next run so far.
    pub(crate) fn pending(&self) -> u64 {
        self.pending
    }

    /// When the earliest retry falls due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.retries.keys().next().map(|(due, _)| *due)
    }

    /// The next call's records at `now`: retries due first, then queued records in order,
    /// one record per key, within the call limits. Each record's key is taken until it is
    /// [`acknowledged`](Self::acknowledged) or [`given up`](Self::give_up).
    pub(crate) fn next_batch(&mut self, now: Instant) -> Vec<Item> {
        let mut batch: Vec<Item> = Vec::new();
        let mut bytes = 0;
        while let Some(entry) = self.retries.first_entry() {
            let (due, _) = *entry.key();
            if due > now
                || batch.len() == self.max_records
                || bytes + entry.get().record.size() > self.max_bytes
            {
                break;
            }
            let item = entry.remove();
            bytes += item.record.size();
            batch.push(item);
        }
        let mut i = 0;
        let mut scanned = 0;
        while i < self.queue.len() && batch.len() < self.max_records && scanned < SCAN_WINDOW {
            let item = &self.queue[i];
            if self.owners.contains_key(&item.key) {
                if self.stranded.contains(&item.key) {
                    // Its key's owner gave up: it cannot go out this run without overtaking.
                    self.queue.remove(i);
                    self.pending += 1;
                } else {
                    i += 1;
                    scanned += 1;
                }
                continue;
            }
            if bytes + item.record.size() > self.max_bytes {
                break;
            }
            let item = self.queue.remove(i).expect("index is in range");
            self.owners.insert(item.key, item.seq);
            bytes += item.record.size();
            batch.push(item);
        }
        batch
    }

    /// The stream acknowledged `item`: its key is free for the next record.
    pub(crate) fn acknowledged(&mut self, item: &Item) {
        self.owners.remove(&item.key);
    }

    /// `item` goes out again at `due`; it keeps its key meanwhile.
    pub(crate) fn retry_at(&mut self, item: Item, due: Instant) {
        self.retries.insert((due, item.seq), item);
    }

    /// `item` will not be sent this run: it and every later record of its key stay pending.
    pub(crate) fn give_up(&mut self, item: Item) {
        self.stranded.insert(item.key);
        self.pending += 1;
    }

    /// Nothing more goes out this run: what waits is left pending. Returns how many records
    /// that was.
    pub(crate) fn abandon(&mut self) -> u64 {
        let left = self.backlog() as u64;
        self.pending += left;
        self.queue.clear();
        self.retries.clear();
        left
    }
}

#[cfg(test)]
mod tests {
    //! The batcher's rules, without a sink or a state store: whatever the keys, sizes,
    //! outcomes and limits, every call is within the limits, no key is in two places at once,
    //! every record is settled exactly once, and each key's records are acknowledged in model
    //! order.

    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use kinesync_keys::PartitionKey;
    use proptest::prelude::*;

    use super::*;

    fn item(seq: u64, key: u8, data_len: usize) -> Item {
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
        )
    }

    /// What happens to a record in a call: acknowledged, retried, or given up.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Ack,
        Retry,
        GiveUp,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![6 => Just(Fate::Ack), 3 => Just(Fate::Retry), 1 => Just(Fate::GiveUp)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn calls_stay_within_limits_and_keys_keep_model_order(
            records in prop::collection::vec((0u8..12, 0usize..300), 1..300),
            fates in prop::collection::vec(fate(), 1..64),
            max_records in 1usize..20,
            max_bytes in 320usize..2000,
        ) {
            let mut batcher = Batcher::new(max_records, max_bytes);
            let mut key_of = BTreeMap::new();
            for (seq, (key, len)) in records.iter().enumerate() {
                key_of.insert(seq as u64, *key);
                batcher.push(item(seq as u64, *key, *len));
            }
            let start = Instant::now();
            let mut now = start;
            let mut acknowledged: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
            let mut given_up_keys = HashSet::new();
            let mut settled = 0u64;
            let mut fates = fates.iter().cycle();
            let mut rounds = 0;
            while batcher.backlog() > 0 {
                rounds += 1;
                prop_assert!(rounds < 100_000, "the batcher stopped making progress");
                let batch = batcher.next_batch(now);
                if batch.is_empty() {
                    if batcher.backlog() == 0 {
                        // The last records were behind keys given up: left pending.
                        break;
                    }
                    // Only retries not yet due can be left: move the clock to the first.
                    let due = batcher.next_due();
                    prop_assert!(due.is_some(), "records wait with no call and no retry");
                    now = due.unwrap();
                    continue;
                }
                prop_assert!(batch.len() <= max_records);
                let bytes: usize = batch.iter().map(|i| i.record.size()).sum();
                prop_assert!(bytes <= max_bytes, "{bytes} bytes in a call of at most {max_bytes}");
                let keys: HashSet<u128> = batch.iter().map(|i| i.key).collect();
                prop_assert_eq!(keys.len(), batch.len(), "two records of one key in a call");
                for item in batch {
                    let key = key_of[&item.seq];
                    prop_assert!(!given_up_keys.contains(&key), "a record sent behind one given up");
                    match fates.next().unwrap() {
                        Fate::Ack => {
                            batcher.acknowledged(&item);
                            acknowledged.entry(key).or_default().push(item.seq);
                            settled += 1;
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
            }
            // Every record is acknowledged or pending, once.
            prop_assert_eq!(settled + batcher.pending(), records.len() as u64);
            // Each key's acknowledged records are in model order, with no gap before a later
            // one: what is acknowledged of a key is a prefix of its records.
            for (key, seqs) in &acknowledged {
                let all: Vec<u64> = key_of.iter().filter(|(_, k)| *k == key).map(|(s, _)| *s).collect();
                prop_assert_eq!(&all[..seqs.len()], seqs.as_slice());
            }
        }
    }

    #[test]
    fn a_record_waits_while_its_key_is_out_and_others_go_past_it() {
        let mut batcher = Batcher::new(10, 1 << 20);
        batcher.push(item(1, 1, 10));
        batcher.push(item(2, 1, 10));
        batcher.push(item(3, 2, 10));
        let now = Instant::now();
        let first: Vec<u64> = batcher.next_batch(now).iter().map(|i| i.seq).collect();
        assert_eq!(first, [1, 3]);
        assert!(
            batcher.next_batch(now).is_empty(),
            "seq 2 must wait for seq 1"
        );
        batcher.acknowledged(&item(1, 1, 10));
        let second: Vec<u64> = batcher.next_batch(now).iter().map(|i| i.seq).collect();
        assert_eq!(second, [2]);
    }

    #[test]
    fn a_retry_goes_first_once_due() {
        let mut batcher = Batcher::new(10, 1 << 20);
        batcher.push(item(1, 1, 10));
        batcher.push(item(2, 2, 10));
        let now = Instant::now();
        let mut batch = batcher.next_batch(now);
        assert_eq!(batch.len(), 2);
        let second = batch.pop().unwrap();
        batcher.acknowledged(&batch.pop().unwrap());
        batcher.push(item(3, 3, 10));
        batcher.retry_at(second, now + Duration::from_secs(1));
        let seqs = |b: Vec<Item>| b.iter().map(|i| i.seq).collect::<Vec<_>>();
        assert_eq!(seqs(batcher.next_batch(now)), [3]);
        assert_eq!(batcher.next_due(), Some(now + Duration::from_secs(1)));
        assert_eq!(seqs(batcher.next_batch(now + Duration::from_secs(1))), [2]);
    }
}
