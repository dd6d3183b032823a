//! Aggregation: many user records in one Kinesis record, in the format of the Kinesis Producer
//! Library, which the KCL, Lambda's deaggregation modules and the Flink and Spark sources read
//! transparently.
//!
//! An aggregated record's data is the 4 magic bytes [`MAGIC`], then a protobuf (proto2)
//! `AggregatedRecord` (a table of partition keys, a table of explicit hash keys, and the
//! records, each naming its keys by index), then the 16-byte MD5 of the protobuf bytes. A
//! reader that finds no magic or a digest that does not match takes the data as one ordinary
//! record, so aggregated and plain records can share a stream.
//!
//! The stream routes the aggregate by its own keys, not its user records' keys: whoever packs
//! records must pack only records bound for one shard, and give the aggregate an explicit
//! hash key inside that shard (see [`Aggregator::finish`]).
//!
//! [`Aggregator`] keeps the encoded size exact as records are added, so that an aggregate is
//! never a byte over its limit and no record is encoded twice to find out.

use std::collections::HashMap;

use bytes::Bytes;
use kinesync_keys::ExplicitHashKey;
use md5::{Digest, Md5};
use prost::Message;
use prost::encoding::encoded_len_varint;

use crate::PutRecord;

/// The first 4 bytes of every aggregated record's data.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The MD5 digest that ends an aggregated record's data.
const DIGEST_BYTES: usize = 16;

/// The KPL's default (and the reason for it: a consumer decoding an aggregate holds all of it),
/// 50 KiB.
pub const DEFAULT_AGGREGATE_MAX_BYTES: usize = 51_200;

/// The protobuf messages of the format (`messages.proto` of the KPL), derived with prost.
/// Records' tags (field 4) are not written: no consumer needs them, and an absent repeated
/// field is an empty one.
mod proto {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub(super) partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub(super) explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub(super) records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Record {
        #[prost(uint64, required, tag = "1")]
        pub(super) partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub(super) explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "bytes", required, tag = "3")]
        pub(super) data: Bytes,
    }
}

/// The bytes of a length-delimited field with a tag below 16: one key byte, the length as a
/// varint, the content.
fn field_len(content: usize) -> usize {
    1 + encoded_len_varint(content as u64) + content
}

/// The decimal digits of an explicit hash key, as the table holds it.
fn decimal_len(value: u128) -> usize {
    value
        .checked_ilog10()
        .map_or(1, |digits| digits as usize + 1)
}

/// One aggregated record being filled.
#[derive(Debug)]
pub struct Aggregator {
    max_bytes: usize,
    message: proto::AggregatedRecord,
    partition_keys: HashMap<String, u64>,
    explicit_hash_keys: HashMap<u128, u64>,
    /// The protobuf's encoded length so far.
    encoded: usize,
}

impl Aggregator {
    /// An empty aggregate that may grow to `max_bytes`, counted as the stream counts a record:
    /// its data (magic, protobuf and digest) plus its partition key.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            message: proto::AggregatedRecord::default(),
            partition_keys: HashMap::new(),
            explicit_hash_keys: HashMap::new(),
            encoded: 0,
        }
    }

    /// User records so far.
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// The size of the aggregate as it stands (data plus partition key); 0 when empty.
    pub fn size(&self) -> usize {
        match self.message.partition_key_table.first() {
            Some(first) => MAGIC.len() + self.encoded + DIGEST_BYTES + first.len(),
            None => 0,
        }
    }

    /// What `record` would add to the protobuf.
    fn growth(&self, record: &PutRecord) -> usize {
        let key = record.partition_key.as_str();
        let (key_index, key_entry) = match self.partition_keys.get(key) {
            Some(index) => (*index, 0),
            None => (
                self.message.partition_key_table.len() as u64,
                field_len(key.len()),
            ),
        };
        let (explicit, explicit_entry) = match record.explicit_hash_key {
            None => (0, 0),
            Some(ehk) => match self.explicit_hash_keys.get(&ehk.get()) {
                Some(index) => (1 + encoded_len_varint(*index), 0),
                None => {
                    let index = self.message.explicit_hash_key_table.len() as u64;
                    (
                        1 + encoded_len_varint(index),
                        field_len(decimal_len(ehk.get())),
                    )
                }
            },
        };
        let inner = 1 + encoded_len_varint(key_index) + explicit + field_len(record.data.len());
        key_entry + explicit_entry + field_len(inner)
    }

    /// The size the aggregate would have with `record` added.
    pub fn size_with(&self, record: &PutRecord) -> usize {
        let first_key = self
            .message
            .partition_key_table
            .first()
            .map_or(record.partition_key.byte_len(), String::len);
        MAGIC.len() + self.encoded + self.growth(record) + DIGEST_BYTES + first_key
    }

    /// Adds `record` if the aggregate stays within its maximum; `false` (and nothing added)
    /// if it would not.
    pub fn try_push(&mut self, record: &PutRecord) -> bool {
        let growth = self.growth(record);
        if self.size_with(record) > self.max_bytes {
            return false;
        }
        let key = record.partition_key.as_str();
        let partition_key_index = match self.partition_keys.get(key) {
            Some(index) => *index,
            None => {
                let index = self.message.partition_key_table.len() as u64;
                self.message.partition_key_table.push(key.to_owned());
                self.partition_keys.insert(key.to_owned(), index);
                index
            }
        };
        let explicit_hash_key_index = record.explicit_hash_key.map(|ehk| {
            *self.explicit_hash_keys.entry(ehk.get()).or_insert_with(|| {
                self.message.explicit_hash_key_table.push(ehk.to_string());
                self.message.explicit_hash_key_table.len() as u64 - 1
            })
        });
        self.message.records.push(proto::Record {
            partition_key_index,
            explicit_hash_key_index,
            data: record.data.clone(),
        });
        self.encoded += growth;
        true
    }

    /// The aggregated record: the first user record's partition key, and `explicit_hash_key`,
    /// which must lie in the hash range of the shard every user record maps to, so that the
    /// stream puts the aggregate there and each user record is read on its own key's shard.
    ///
    /// # Panics
    ///
    /// When no record was added: an empty aggregate is a caller's bug, not an input.
    pub fn finish(self, explicit_hash_key: ExplicitHashKey) -> PutRecord {
        let first_key = self
            .message
            .partition_key_table
            .first()
            .expect("an aggregate has at least one record")
            .clone();
        debug_assert_eq!(self.message.encoded_len(), self.encoded);
        let mut data = Vec::with_capacity(MAGIC.len() + self.encoded + DIGEST_BYTES);
        data.extend_from_slice(&MAGIC);
        self.message
            .encode(&mut data)
            .expect("a Vec grows to take the whole message");
        let digest = Md5::digest(&data[MAGIC.len()..]);
        data.extend_from_slice(&digest);
        let partition_key = kinesync_keys::PartitionKey::new(first_key)
            .expect("the first user record's partition key was valid");
        PutRecord::new(partition_key, Bytes::from(data)).with_explicit_hash_key(explicit_hash_key)
    }
}

#[cfg(test)]
mod tests {
    use kinesync_keys::PartitionKey;

    use super::*;

    fn record(key: &str, data_len: usize) -> PutRecord {
        PutRecord::new(PartitionKey::new(key).unwrap(), vec![b'x'; data_len])
    }

    #[test]
    fn the_predicted_size_is_the_encoded_size_at_every_step() {
        let mut aggregator = Aggregator::new(1 << 20);
        for (i, len) in [0, 1, 127, 128, 300, 16_383, 16_384, 5]
            .into_iter()
            .enumerate()
        {
            let mut r = record(&format!("key-{}", i % 3), len);
            if i % 2 == 1 {
                r = r.with_explicit_hash_key(ExplicitHashKey::new(10u128.pow(i as u32)));
            }
            let predicted = aggregator.size_with(&r);
            assert!(aggregator.try_push(&r));
            assert_eq!(aggregator.size(), predicted);
        }
        let size = aggregator.size();
        let finished = aggregator.finish(ExplicitHashKey::new(7));
        assert_eq!(finished.size(), size);
        assert_eq!(finished.data[..4], MAGIC);
        assert_eq!(finished.partition_key.as_str(), "key-0");
    }

    #[test]
    fn a_record_that_would_pass_the_limit_is_refused_and_nothing_changes() {
        let one = Aggregator::new(1000).size_with(&record("k", 100));
        let mut aggregator = Aggregator::new(one * 2);
        assert!(aggregator.try_push(&record("k", 100)));
        let before = aggregator.size();
        assert!(!aggregator.try_push(&record("another", one)));
        assert_eq!(aggregator.size(), before);
        assert_eq!(aggregator.len(), 1);
    }
}
