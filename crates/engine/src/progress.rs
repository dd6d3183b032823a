//! Live counters of a run, for a progress bar or periodic log lines.
//!
//! The engine and its sender store into these as they go (relaxed atomics: each is a count on
//! its own, and a display that is a moment behind is fine); a caller reads them from another
//! task or thread while the run goes on.

use std::sync::atomic::{AtomicU64, Ordering};

/// A run's counters so far; share one through [`crate::EngineBuilder::progress`].
#[derive(Debug, Default)]
pub struct Progress {
    rows_read: AtomicU64,
    to_send: AtomicU64,
    acknowledged: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    calls: AtomicU64,
    capacity: AtomicU64,
    paced: AtomicU64,
    busiest_permille: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Model rows read.
    pub rows_read: u64,
    /// Records built to send.
    pub to_send: u64,
    /// Records the stream acknowledged (and that were committed).
    pub acknowledged: u64,
    /// Records throttled, each time.
    pub throttled: u64,
    /// Records sent again.
    pub retries: u64,
    /// `PutRecords` calls made.
    pub calls: u64,
    /// Records (rows' records) per second the stream takes: its open shards times what one
    /// takes, its records' ceiling or as many records as its bytes' ceiling holds, whichever
    /// is fewer, as measured on the records acknowledged so far (aggregated, each Kinesis
    /// record holds many); 0 when unpaced.
    pub capacity_per_second: u64,
    /// Records per second the shards are paced at now: below the capacity when some throttled.
    pub paced_per_second: u64,
    /// The share, in thousandths, of the records sent that went to the busiest shard: 1000 /
    /// shards when spread evenly, 1000 when every record goes to one shard.
    pub busiest_shard_permille: u64,
}

impl Progress {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            rows_read: self.rows_read.load(Ordering::Relaxed),
            to_send: self.to_send.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            capacity_per_second: self.capacity.load(Ordering::Relaxed),
            paced_per_second: self.paced.load(Ordering::Relaxed),
            busiest_shard_permille: self.busiest_permille.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        self.store(ProgressSnapshot::default());
    }

    pub(crate) fn set_read(&self, rows_read: u64, to_send: u64) {
        self.rows_read.store(rows_read, Ordering::Relaxed);
        self.to_send.store(to_send, Ordering::Relaxed);
    }

    pub(crate) fn set_sent(&self, acknowledged: u64, throttled: u64, retries: u64, calls: u64) {
        self.acknowledged.store(acknowledged, Ordering::Relaxed);
        self.throttled.store(throttled, Ordering::Relaxed);
        self.retries.store(retries, Ordering::Relaxed);
        self.calls.store(calls, Ordering::Relaxed);
    }

    pub(crate) fn set_pacing(&self, capacity: u64, paced: u64, busiest_permille: u64) {
        self.capacity.store(capacity, Ordering::Relaxed);
        self.paced.store(paced, Ordering::Relaxed);
        self.busiest_permille
            .store(busiest_permille, Ordering::Relaxed);
    }

    fn store(&self, s: ProgressSnapshot) {
        self.set_read(s.rows_read, s.to_send);
        self.set_sent(s.acknowledged, s.throttled, s.retries, s.calls);
        self.set_pacing(
            s.capacity_per_second,
            s.paced_per_second,
            s.busiest_shard_permille,
        );
    }
}
