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
        HashKey(u128::from(key)),
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
        aggregate in prop::option::of(100usize..1500),
    ) {
        let start = Instant::now();
        let mut pacer = pacer(shards, rate, start);
        let mut batcher = Batcher::new(max_records, max_bytes, shards, aggregate);
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
        // A unit throttled three times is acknowledged next (a stream that throttles
        // one record for ever is the outbox's retry budget's to end, not the batcher's).
        let mut throttles: BTreeMap<u64, u32> = BTreeMap::new();
        // When each shard was offered each Kinesis record, to check the budget over any
        // second.
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
            let bytes: usize = batch.iter().map(Unit::size).sum();
            prop_assert!(bytes <= max_bytes, "{bytes} bytes in a call of at most {max_bytes}");
            let mut keys_in_call = HashSet::new();
            for unit in batch {
                offered[unit.shard()].push(now);
                let items = match unit {
                    Unit::Single(item) => vec![item],
                    Unit::Packed { record, items } => {
                        let max = aggregate.expect("packed only when aggregating");
                        prop_assert!(record.size() <= max, "an aggregate of {} bytes, over {max}", record.size());
                        let users = kinesync_testkit::deaggregate::deaggregate(&record.data)
                            .unwrap()
                            .expect("an aggregate");
                        let data: Vec<Vec<u8>> = items.iter().map(|i| i.record.data.to_vec()).collect();
                        prop_assert_eq!(users.into_iter().map(|u| u.data).collect::<Vec<_>>(), data);
                        prop_assert!(items.iter().all(|i| i.shard == items[0].shard), "an aggregate spans shards");
                        items
                    }
                };
                let unit_keys: HashSet<u128> = items.iter().map(|i| i.key).collect();
                for key in &unit_keys {
                    prop_assert!(keys_in_call.insert(*key), "one key in two Kinesis records of a call");
                }
                for item in &items {
                    prop_assert!(!given_up_keys.contains(&key_of[&item.seq]), "a record sent behind one given up");
                }
                let first = items[0].seq;
                let fate = match fates.next().unwrap() {
                    Fate::Throttle if throttles.get(&first).copied().unwrap_or(0) >= 3 => &Fate::Ack,
                    fate => fate,
                };
                match fate {
                    Fate::Ack => {
                        batcher.acknowledged_all(&items);
                        for item in &items {
                            acknowledged.entry(key_of[&item.seq]).or_default().push(item.seq);
                        }
                        settled += items.len() as u64;
                    }
                    Fate::Throttle => {
                        *throttles.entry(first).or_default() += 1;
                        pacer.throttled(items[0].shard, 1, items[0].sent_after, now);
                        for owner in batcher.unpack(items) {
                            batcher.requeue(owner);
                        }
                    }
                    Fate::Retry if items[0].attempts < 3 => {
                        for mut owner in batcher.unpack(items) {
                            owner.attempts += 1;
                            batcher.retry_at(owner, now + Duration::from_millis(10));
                        }
                    }
                    Fate::Retry | Fate::GiveUp => {
                        for owner in batcher.unpack(items) {
                            given_up_keys.insert(key_of[&owner.seq]);
                            batcher.give_up(owner);
                        }
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

fn seqs(batch: Vec<Unit>) -> Vec<u64> {
    seqs_of(&batch)
}

#[test]
fn a_record_waits_while_its_key_is_out_and_others_go_past_it() {
    let now = Instant::now();
    let mut pacer = pacer(1, 1000.0, now);
    let mut batcher = Batcher::new(10, 1 << 20, 1, None);
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
    let mut batcher = Batcher::new(10, 1 << 20, 2, None);
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
    let mut batcher = Batcher::new(100, 1 << 20, 2, None);
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
    let mut batcher = Batcher::new(10, 1 << 20, 1, None);
    batcher.push(item(1, 1, 10, 0));
    batcher.push(item(2, 2, 10, 0));
    let mut batch = batcher.next_batch(now, &mut pacer);
    assert_eq!(batch.len(), 2);
    let second = single(batch.pop().unwrap());
    batcher.acknowledged(&single(batch.pop().unwrap()));
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

fn single(unit: Unit) -> Item {
    match unit {
        Unit::Single(item) => item,
        Unit::Packed { .. } => panic!("a packed unit where one record was expected"),
    }
}

#[test]
fn one_key_packs_in_model_order_and_the_rest_waits_for_the_acknowledgement() {
    let now = Instant::now();
    let mut pacer = pacer(1, 1000.0, now);
    let mut batcher = Batcher::new(10, 1 << 20, 1, Some(1000));
    for seq in 0..30 {
        batcher.push(item(seq, 7, 100, 0));
    }
    let batch = batcher.next_batch(now, &mut pacer);
    assert_eq!(
        batch.len(),
        1,
        "one aggregate: the key's records cannot be split over two"
    );
    let Unit::Packed { record, items } = batch.into_iter().next().unwrap() else {
        panic!("packed")
    };
    assert!(record.size() <= 1000);
    let packed: Vec<u64> = items.iter().map(|i| i.seq).collect();
    assert_eq!(packed, (0..packed.len() as u64).collect::<Vec<_>>());
    assert!(
        packed.len() >= 8,
        "{} records of 100 bytes in 1,000",
        packed.len()
    );
    assert!(
        batcher.next_batch(now, &mut pacer).is_empty(),
        "the key is out"
    );
    batcher.acknowledged_all(&items);
    let next = seqs(batcher.next_batch(now, &mut pacer));
    assert_eq!(next[0], packed.len() as u64, "the next one in model order");
}

#[test]
fn a_failed_aggregate_is_packed_again_in_the_same_order() {
    let now = Instant::now();
    let mut pacer = pacer(1, 1000.0, now);
    let mut batcher = Batcher::new(10, 1 << 20, 1, Some(600));
    for seq in 0..12 {
        batcher.push(item(seq, (seq % 2) as u8, 100, 0));
    }
    let packed = |batch: &[Unit]| {
        let mut units: Vec<Vec<u64>> = batch
            .iter()
            .map(|u| seqs_of(std::slice::from_ref(u)))
            .collect();
        units.sort();
        units
    };
    let first = batcher.next_batch(now, &mut pacer);
    let before = packed(&first);
    assert_eq!(before, [vec![0, 2, 4, 6, 8], vec![1, 3, 5, 7, 9]]);
    for unit in first {
        let Unit::Packed { items, .. } = unit else {
            panic!("packed")
        };
        for owner in batcher.unpack(items).into_iter().rev() {
            batcher.requeue(owner);
        }
    }
    assert_eq!(batcher.backlog(), 12);
    let again = batcher.next_batch(now + Duration::from_secs(1), &mut pacer);
    assert_eq!(
        packed(&again),
        before,
        "each key's records, in the same order"
    );
}

fn seqs_of(batch: &[Unit]) -> Vec<u64> {
    batch
        .iter()
        .flat_map(|unit| match unit {
            Unit::Single(item) => vec![item.seq],
            Unit::Packed { items, .. } => items.iter().map(|i| i.seq).collect(),
        })
        .collect()
}

#[test]
fn a_record_too_large_to_share_goes_alone() {
    let now = Instant::now();
    let mut pacer = pacer(1, 1000.0, now);
    let mut batcher = Batcher::new(10, 1 << 20, 1, Some(500));
    batcher.push(item(0, 1, 800, 0));
    batcher.push(item(1, 2, 50, 0));
    batcher.push(item(2, 3, 50, 0));
    let batch = batcher.next_batch(now, &mut pacer);
    assert!(matches!(&batch[0], Unit::Single(item) if item.seq == 0));
    assert!(matches!(&batch[1], Unit::Packed { items, .. } if items.len() == 2));
}
