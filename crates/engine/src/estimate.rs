//! A dry run's estimate: how its records would pack (when aggregating) and how long the
//! stream's limits would take to take them, shard by shard.

use kinesync_transport::PutRecord;
use kinesync_transport::aggregate::Aggregator;

use crate::report::{Packing, SendEstimate};

/// One shard's share of a dry run.
#[derive(Debug, Default)]
struct Shard {
    user_records: u64,
    kinesis_records: u64,
    aggregated: u64,
    bytes: u64,
    open: Option<Aggregator>,
}

impl Shard {
    /// Closes the aggregate being filled.
    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            if open.len() > 1 {
                self.aggregated += open.len() as u64;
            }
            self.kinesis_records += 1;
            self.bytes += open.size() as u64;
        }
    }
}

/// The tally of a dry run's records, by shard index.
#[derive(Debug)]
pub(crate) struct Estimate {
    shards: Vec<Shard>,
    aggregate_max_bytes: Option<usize>,
}

impl Estimate {
    pub(crate) fn new(shards: usize, aggregate_max_bytes: Option<usize>) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            aggregate_max_bytes,
        }
    }

    /// Counts `record`, bound for `shard`: packed as the sender would pack records arriving
    /// in this order (one key's records together, as the sender's are).
    pub(crate) fn add(&mut self, shard: usize, record: &PutRecord) {
        let last = self.shards.len() - 1;
        let s = &mut self.shards[shard.min(last)];
        s.user_records += 1;
        let Some(max) = self.aggregate_max_bytes else {
            s.kinesis_records += 1;
            s.bytes += record.size() as u64;
            return;
        };
        if let Some(open) = &mut s.open
            && open.try_push(record)
        {
            return;
        }
        s.close();
        let mut open = Aggregator::new(max);
        if open.try_push(record) {
            s.open = Some(open);
        } else {
            // Too large to share an aggregate: alone.
            s.kinesis_records += 1;
            s.bytes += record.size() as u64;
        }
    }

    /// The packing (when aggregating) and the least time at `records_per_second` and
    /// `bytes_per_second` per shard: the busiest shard's, after its one-second burst.
    pub(crate) fn finish(
        mut self,
        records_per_second: f64,
        bytes_per_second: f64,
    ) -> (Option<Packing>, SendEstimate) {
        self.shards.iter_mut().for_each(Shard::close);
        let total: u64 = self.shards.iter().map(|s| s.user_records).sum();
        let packing = self.aggregate_max_bytes.map(|max_bytes| Packing {
            max_bytes,
            user_records: total,
            kinesis_records: self.shards.iter().map(|s| s.kinesis_records).sum(),
            aggregated: self.shards.iter().map(|s| s.aggregated).sum(),
        });
        let seconds = |s: &Shard| {
            let records =
                (s.kinesis_records as f64 - records_per_second).max(0.0) / records_per_second;
            let bytes = (s.bytes as f64 - bytes_per_second).max(0.0) / bytes_per_second;
            records.max(bytes)
        };
        let least_seconds = self.shards.iter().map(seconds).fold(0.0, f64::max);
        let busiest = self
            .shards
            .iter()
            .map(|s| s.user_records)
            .max()
            .unwrap_or(0);
        let estimate = SendEstimate {
            shard_records_per_second: records_per_second,
            shard_bytes_per_second: bytes_per_second,
            least_seconds,
            busiest_share: busiest as f64 / total.max(1) as f64,
            shards: self.shards.len(),
        };
        (packing, estimate)
    }
}

#[cfg(test)]
mod tests {
    use kinesync_keys::PartitionKey;

    use super::*;

    fn record(len: usize) -> PutRecord {
        PutRecord::new(PartitionKey::new("k").unwrap(), vec![b'x'; len])
    }

    #[test]
    fn bytes_bound_the_estimate_when_records_are_large() {
        // 1,500 records of 2 KiB on one shard: half a second after the burst as records, but
        // 3,000 KiB, almost two seconds after the burst as bytes.
        let mut estimate = Estimate::new(2, None);
        (0..1500).for_each(|_| estimate.add(0, &record(2047)));
        let (packing, estimate) = estimate.finish(1000.0, 1024.0 * 1024.0);
        assert!(packing.is_none());
        let bytes_seconds = (1500.0 * 2048.0 - 1024.0 * 1024.0) / (1024.0 * 1024.0);
        assert!(
            (estimate.least_seconds - bytes_seconds).abs() < 1e-9,
            "{}",
            estimate.least_seconds
        );
        assert_eq!(estimate.busiest_share, 1.0);
    }

    #[test]
    fn aggregated_records_count_as_their_aggregates() {
        let mut estimate = Estimate::new(1, Some(10_000));
        (0..1000).for_each(|_| estimate.add(0, &record(99)));
        estimate.add(0, &record(20_000));
        let (packing, _) = estimate.finish(1000.0, 1024.0 * 1024.0);
        let packing = packing.unwrap();
        assert_eq!(packing.user_records, 1001);
        assert_eq!(packing.aggregated, 1000);
        // About 100 records of 100 bytes (and their framing) fit in 10,000 bytes.
        assert!(
            (11..=12).contains(&(packing.kinesis_records - 1)),
            "{packing:?}"
        );
    }
}
