//! A simulated Kinesis stream that behaves like the service.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use kinesync_keys::{
    ExplicitHashKey, HashKey, PartitionKey, ShardMap, ShardRange, shard_id as shard_id_of,
};

use crate::{
    CapacityMode, DEFAULT_MAX_RECORD_BYTES, Encryption, ErrorKind, KinesisSink, Operation,
    PutRecord, RecordOutcome, StreamDescription, StreamName, StreamStatus, TransportError,
    validate_batch,
};

/// How a simulated stream is made.
///
/// Build it from [`StreamConfig::with_shards`] and change what you need:
/// `StreamConfig { keep_records: false, ..StreamConfig::with_shards(4) }`. New settings will
/// come with defaults, so a struct written that way keeps compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Open shards, split evenly over the hash key space.
    pub shards: u32,
    /// The largest record (partition key plus data), in bytes.
    pub max_record_bytes: usize,
    /// Reported by describe.
    pub capacity_mode: CapacityMode,
    /// Reported by describe.
    pub encryption: Encryption,
    /// Whether records are kept for read-back. A load test that only needs counts turns it
    /// off, so the simulated stream does not hold every message in memory.
    pub keep_records: bool,
}

impl StreamConfig {
    /// A provisioned, unencrypted stream of `shards` shards with the default 1 MiB records.
    pub fn with_shards(shards: u32) -> Self {
        Self {
            shards,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            capacity_mode: CapacityMode::Provisioned,
            encryption: Encryption::None,
            keep_records: true,
        }
    }
}

/// A record as stored in a simulated shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The shard it is on.
    pub shard_id: String,
    /// Its sequence number (grows within a shard).
    pub sequence_number: String,
    /// Its partition key.
    pub partition_key: PartitionKey,
    /// Its explicit hash key, if it had one.
    pub explicit_hash_key: Option<ExplicitHashKey>,
    /// Its data.
    pub data: bytes::Bytes,
}

struct SimStream {
    config: StreamConfig,
    /// The open shards.
    map: ShardMap,
    /// Per open shard, in the map's order: its slot below.
    slots: Vec<usize>,
    /// Per shard ever opened (closed ones too), in the order they opened: its id, the
    /// records in arrival order (when kept), and how many arrived.
    shards: Vec<(String, Vec<StoredRecord>, u64)>,
}

/// A faithful simulated stream: shards with hash ranges, per-shard sequence numbers, the
/// service's validation and limits, and read-back. Throughput limits and faults are not here:
/// wrap it in [`crate::LimitSink`] and [`crate::FaultySink`].
pub struct InMemorySink {
    // A std mutex: it is never held across an await, and every operation is short.
    streams: Mutex<BTreeMap<String, SimStream>>,
}

impl Default for InMemorySink {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("InMemorySink")
            .field("streams", &names)
            .finish()
    }
}

impl fmt::Display for InMemorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("in-memory Kinesis")
    }
}

impl InMemorySink {
    /// A sink with no streams.
    pub fn new() -> Self {
        Self {
            streams: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SimStream>> {
        // A panic while holding the lock cannot leave a stream half-written (every write is a
        // single push), so a poisoned lock is still consistent.
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates (or replaces) a stream.
    pub fn create_stream(&self, name: &StreamName, config: StreamConfig) {
        let map = ShardMap::even(config.shards.max(1)).expect("1..=100000 shards");
        let shards = map
            .shards()
            .iter()
            .map(|r| (r.id().to_owned(), Vec::new(), 0))
            .collect();
        self.lock().insert(
            name.as_str().to_owned(),
            SimStream {
                config,
                slots: (0..map.len()).collect(),
                map,
                shards,
            },
        );
    }

    /// Splits open shard `shard_id` of `stream` at the middle of its hash range, as
    /// `SplitShard` does: the shard closes (its records stay readable) and two new shards,
    /// with new ids, take its range. `false` when there is no such open shard (or its range is
    /// a single hash key).
    pub fn split_shard(&self, stream: &StreamName, shard_id: &str) -> bool {
        let mut streams = self.lock();
        let Some(sim) = streams.get_mut(stream.as_str()) else {
            return false;
        };
        let Some(index) = sim.map.shards().iter().position(|r| r.id() == shard_id) else {
            return false;
        };
        let parent = sim.map.shards()[index].clone();
        if parent.start() == parent.end() {
            return false;
        }
        let middle = parent.start() + (parent.end() - parent.start()) / 2;
        let mut ranges: Vec<ShardRange> = sim.map.shards().to_vec();
        ranges.remove(index);
        for (start, end) in [(parent.start(), middle), (middle + 1, parent.end())] {
            let id = shard_id_of(sim.shards.len() as u64);
            sim.shards.push((id.clone(), Vec::new(), 0));
            ranges.push(ShardRange::new(id, start, end));
        }
        self.reopen(sim, ranges)
    }

    /// `sim`'s open shards become `ranges` (sorted by the map; each open shard's slot follows
    /// its id).
    fn reopen(&self, sim: &mut SimStream, ranges: Vec<ShardRange>) -> bool {
        let Ok(map) = ShardMap::from_ranges(ranges) else {
            return false;
        };
        let slots: Option<Vec<usize>> = map
            .shards()
            .iter()
            .map(|r| sim.shards.iter().position(|(id, _, _)| id == r.id()))
            .collect();
        let Some(slots) = slots else {
            return false;
        };
        sim.slots = slots;
        sim.map = map;
        true
    }

    /// Merges open shards `first` and `second` of `stream`, adjacent in the hash key space
    /// (`first` below), as `MergeShards` does: both close (their records stay readable) and one
    /// new shard, with a new id, takes their ranges. `false` when they are not two adjacent
    /// open shards.
    pub fn merge_shards(&self, stream: &StreamName, first: &str, second: &str) -> bool {
        let mut streams = self.lock();
        let Some(sim) = streams.get_mut(stream.as_str()) else {
            return false;
        };
        let shards = sim.map.shards();
        let Some(index) = shards.iter().position(|r| r.id() == first) else {
            return false;
        };
        if shards.get(index + 1).is_none_or(|next| next.id() != second) {
            return false;
        }
        let (start, end) = (shards[index].start(), shards[index + 1].end());
        let mut ranges: Vec<ShardRange> = shards.to_vec();
        ranges.drain(index..=index + 1);
        let id = shard_id_of(sim.shards.len() as u64);
        sim.shards.push((id.clone(), Vec::new(), 0));
        ranges.push(ShardRange::new(id, start, end));
        self.reopen(sim, ranges)
    }

    /// Every record of `stream`, shard by shard (in the order the shards opened), each shard
    /// in arrival order. `None` for an unknown stream.
    pub fn records(&self, stream: &StreamName) -> Option<Vec<StoredRecord>> {
        self.lock().get(stream.as_str()).map(|s| {
            s.shards
                .iter()
                .flat_map(|(_, records, _)| records)
                .cloned()
                .collect()
        })
    }

    /// How many records each shard received, by shard id, closed shards too (kept even when
    /// records are not).
    pub fn shard_counts(&self, stream: &StreamName) -> Option<Vec<(String, u64)>> {
        let streams = self.lock();
        let s = streams.get(stream.as_str())?;
        Some(
            s.shards
                .iter()
                .map(|(id, _, count)| (id.clone(), *count))
                .collect(),
        )
    }

    /// The records of one shard (open or closed), in arrival order.
    pub fn shard_records(&self, stream: &StreamName, shard_id: &str) -> Option<Vec<StoredRecord>> {
        let streams = self.lock();
        let s = streams.get(stream.as_str())?;
        s.shards
            .iter()
            .find(|(id, _, _)| id == shard_id)
            .map(|(_, records, _)| records.clone())
    }

    fn not_found(operation: Operation, stream: &StreamName) -> TransportError {
        TransportError::new(
            ErrorKind::StreamNotFound,
            operation,
            format!("Stream {stream} under account 000000000000 not found."),
        )
        .with_stream(stream.as_str())
        .with_code("ResourceNotFoundException")
    }
}

#[async_trait]
impl KinesisSink for InMemorySink {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let mut streams = self.lock();
        let sim = streams
            .get_mut(stream.as_str())
            .ok_or_else(|| Self::not_found(Operation::PutRecords, stream))?;
        validate_batch(stream, records, sim.config.max_record_bytes)?;
        let outcomes = records
            .iter()
            .map(|record| {
                let hash = HashKey::for_record(&record.partition_key, record.explicit_hash_key);
                let slot = sim.slots[sim.map.index_for(hash)];
                let (id, stored, count) = &mut sim.shards[slot];
                let shard_id = id.clone();
                let sequence_number = sequence_number(slot, *count);
                *count += 1;
                if sim.config.keep_records {
                    stored.push(StoredRecord {
                        shard_id: shard_id.clone(),
                        sequence_number: sequence_number.clone(),
                        partition_key: record.partition_key.clone(),
                        explicit_hash_key: record.explicit_hash_key,
                        data: record.data.clone(),
                    });
                }
                RecordOutcome::Accepted {
                    shard_id,
                    sequence_number,
                }
            })
            .collect();
        Ok(outcomes)
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError> {
        let streams = self.lock();
        let sim = streams
            .get(stream.as_str())
            .ok_or_else(|| Self::not_found(Operation::DescribeStreamSummary, stream))?;
        Ok(StreamDescription {
            name: stream.as_str().to_owned(),
            arn: Some(format!(
                "arn:aws:kinesis:local:000000000000:stream/{stream}"
            )),
            status: StreamStatus::Active,
            shards: sim.map.clone(),
            max_record_bytes: sim.config.max_record_bytes,
            encryption: sim.config.encryption.clone(),
            capacity_mode: sim.config.capacity_mode.clone(),
        })
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        Ok(self.lock().keys().cloned().collect())
    }
}

/// A sequence number of 56 digits like the service's: `49`, the shard's index in 6 digits,
/// then its arrival count in 48. Written by hand: `format!` with padding cost more than the
/// rest of a simulated call.
fn sequence_number(index: usize, count: u64) -> String {
    let mut out = String::with_capacity(56);
    out.push_str("49");
    push_padded(&mut out, index as u64, 6);
    push_padded(&mut out, count, 48);
    out
}

/// `value` in decimal, left-padded with zeros to `width` digits (at most 48).
fn push_padded(out: &mut String, value: u64, width: usize) {
    const ZEROS: &str = "000000000000000000000000000000000000000000000000";
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value);
    out.push_str(&ZEROS[..width.min(ZEROS.len()).saturating_sub(digits.len())]);
    out.push_str(digits);
}

#[cfg(test)]
mod tests {
    use super::sequence_number;

    #[test]
    fn sequence_numbers_are_56_digits_that_sort_in_arrival_order() {
        let first = sequence_number(3, 9);
        let later = sequence_number(3, 10);
        assert_eq!(first.len(), 56);
        assert!(first.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(&first[..8], "49000003");
        assert!(first.ends_with("09"));
        assert!(first < later, "{first} sorts before {later}");
        assert_eq!(sequence_number(0, u64::MAX).len(), 56);
    }
}
