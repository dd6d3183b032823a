//! The aggregation format, checked against a reader written from the format's description
//! (`kinesync_testkit::deaggregate`), not against kinesync's own code.

use kinesync_keys::{ExplicitHashKey, PartitionKey};
use kinesync_testkit::deaggregate::{UserRecord, deaggregate};
use kinesync_transport::PutRecord;
use kinesync_transport::aggregate::{Aggregator, MAGIC};
use proptest::prelude::*;

fn user_record() -> impl Strategy<Value = PutRecord> {
    (
        // Few distinct keys, so tables have repeats; some multi-byte.
        prop_oneof![(0u8..6).prop_map(|k| format!("key-{k}")), "[a-zé😀]{1,40}",],
        prop::option::weighted(
            0.3,
            prop_oneof![Just(0u128), Just(u128::MAX), any::<u128>()],
        ),
        prop::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(|(key, explicit, data)| {
            let record = PutRecord::new(PartitionKey::new(key).unwrap(), data);
            match explicit {
                Some(e) => record.with_explicit_hash_key(ExplicitHashKey::new(e)),
                None => record,
            }
        })
}

fn as_user(record: &PutRecord) -> UserRecord {
    UserRecord {
        partition_key: record.partition_key.as_str().to_owned(),
        explicit_hash_key: record.explicit_hash_key.map(|e| e.to_string()),
        data: record.data.to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the records and the limit: the aggregate holds a prefix of them, in order,
    /// with their keys and data; its size is what was predicted and never over the limit; the
    /// tables hold each key once; the digest checks.
    #[test]
    fn aggregates_round_trip_within_their_limit(
        records in prop::collection::vec(user_record(), 1..80),
        max_bytes in 60usize..20_000,
    ) {
        let mut aggregator = Aggregator::new(max_bytes);
        let mut packed = Vec::new();
        for record in &records {
            let predicted = aggregator.size_with(record);
            if aggregator.try_push(record) {
                prop_assert_eq!(aggregator.size(), predicted);
                packed.push(as_user(record));
            } else {
                prop_assert!(predicted > max_bytes, "refused at {predicted} of {max_bytes} bytes");
                break;
            }
        }
        prop_assume!(!packed.is_empty());
        let size = aggregator.size();
        let aggregate = aggregator.finish(ExplicitHashKey::new(42));
        prop_assert_eq!(aggregate.size(), size);
        prop_assert!(aggregate.size() <= max_bytes);
        prop_assert_eq!(aggregate.partition_key.as_str(), records[0].partition_key.as_str());
        prop_assert_eq!(aggregate.explicit_hash_key, Some(ExplicitHashKey::new(42)));
        let decoded = deaggregate(&aggregate.data).unwrap().expect("an aggregate");
        prop_assert_eq!(decoded, packed);
        // Each key once in its table.
        let keys = records.iter().take(decoded_len(&aggregate)).map(|r| r.partition_key.as_str()).collect::<std::collections::BTreeSet<_>>();
        prop_assert_eq!(table_len(&aggregate.data, 1), keys.len());
    }
}

fn decoded_len(aggregate: &PutRecord) -> usize {
    deaggregate(&aggregate.data).unwrap().unwrap().len()
}

/// Entries of field `tag` at the top level of the aggregate's protobuf.
fn table_len(data: &[u8], tag: u8) -> usize {
    let mut message = &data[4..data.len() - 16];
    let mut count = 0;
    while !message.is_empty() {
        let key = message[0];
        let mut len = 0usize;
        let mut i = 1;
        for shift in (0..).step_by(7) {
            let byte = message[i];
            i += 1;
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if key >> 3 == tag {
            count += 1;
        }
        message = &message[i + len..];
    }
    count
}

#[test]
fn a_record_at_the_exact_limit_fits_and_one_byte_more_does_not() {
    let probe = PutRecord::new(PartitionKey::new("k").unwrap(), vec![1u8; 10]);
    let mut aggregator = Aggregator::new(1 << 20);
    assert!(aggregator.try_push(&probe));
    let limit = aggregator.size() + 1000;
    // Find the data length that lands exactly on the limit after the first record.
    let fitting = (0..1000)
        .rev()
        .map(|len| PutRecord::new(PartitionKey::new("k").unwrap(), vec![2u8; len]))
        .find(|r| aggregator.size_with(r) <= limit)
        .unwrap();
    let mut exact = Aggregator::new(aggregator.size_with(&fitting));
    assert!(exact.try_push(&probe));
    assert!(
        exact.try_push(&fitting),
        "a record that lands on the limit fits"
    );
    let mut over = Aggregator::new(exact.size() - 1);
    assert!(over.try_push(&probe));
    assert!(
        !over.try_push(&fitting),
        "one byte over the limit is refused"
    );
    assert_eq!(
        exact.finish(ExplicitHashKey::new(1)).size(),
        aggregator.size_with(&fitting)
    );
}

#[test]
fn a_corrupted_digest_is_not_an_aggregate() {
    let mut aggregator = Aggregator::new(1000);
    assert!(aggregator.try_push(&PutRecord::new(PartitionKey::new("k").unwrap(), &b"{}"[..])));
    let mut data = aggregator.finish(ExplicitHashKey::new(1)).data.to_vec();
    assert_eq!(data[..4], MAGIC);
    let last = data.len() - 1;
    data[last] ^= 1;
    assert!(
        deaggregate(&data).is_err(),
        "a reader takes it as a plain record"
    );
    assert_eq!(deaggregate(b"{\"plain\":true}").unwrap(), None);
}
