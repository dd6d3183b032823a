//! Pacing: how much each shard may be sent now, so that a sync fills the stream's capacity
//! and no more.
//!
//! A shard of a Kinesis stream takes 1,000 records and 1 MiB per second, counted as a token
//! bucket of one second (what it has not used in the last second, up to a second's worth, it
//! takes at once). Each open shard gets a bucket of its own here, of the same shape, so that
//! the calls offer each shard what it takes and a shard out of budget holds back no other
//! shard's records.
//!
//! The rate is found, not configured (closed loop): a shard that throttles has its rate cut
//! (multiplicative decrease, at most once per [`DECREASE_EVERY`], since the calls in flight
//! all meet the same congestion), and each second without a throttle gives back a share of the
//! ceiling (additive increase), up to the ceiling. Another producer writing to the stream, a
//! stream whose limits are not the defaults, or a shard hotter than its neighbours are found
//! this way. The ceiling is the service's limits unless `[sync]` lowers it.
//!
//! Pure: time is handed in (tokio's clock type, so that paused test time moves it), and the
//! pacer does no I/O.

use std::time::Duration;

use tokio::time::Instant;

/// What one shard is allowed at most: records and bytes (data plus partition key) per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ceiling {
    pub(crate) records_per_second: f64,
    pub(crate) bytes_per_second: f64,
}

/// The factor a throttle multiplies a shard's rate by.
const DECREASE: f64 = 0.75;
/// Throttles closer together than this are one congestion event: one decrease.
pub(crate) const DECREASE_EVERY: Duration = Duration::from_millis(500);
/// The share of the ceiling given back per second without a throttle, below the rate that
/// last throttled...
const INCREASE_PER_SECOND: f64 = 0.05;
/// ...and near it (within [`NEAR`] of it either way), where the limit probably is: slower, so
/// that finding it again costs few throttles.
const PROBE_PER_SECOND: f64 = 0.01;
/// Where probing starts, as a share of the rate that last throttled.
const NEAR: f64 = 0.95;
/// The lowest rate, as a share of the ceiling: a shard is never starved entirely.
const FLOOR: f64 = 0.02;

/// One shard's bucket and rate.
#[derive(Debug, Clone)]
struct Shard {
    /// Records per second now (the bytes rate is the same share of its ceiling).
    rate: f64,
    records: f64,
    bytes: f64,
    refilled: Instant,
    last_throttle: Option<Instant>,
    /// Where the shard's limit probably is: the rate it took when it last throttled.
    limit: Option<f64>,
    /// Records offered, and of them refused, since throttles were last judged: how far the
    /// rate is over the limit. Records sent before that judgement are not counted: their
    /// throttles were what it judged.
    since_judged: (u64, u64),
    /// When throttles were last judged, and how many times (a record sent before the last
    /// judgement carries an older count).
    judged_at: Option<Instant>,
    judgements: u32,
    /// Records taken and throttled so far, for the report.
    taken: u64,
    throttled: u64,
}

/// Every open shard's budget.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    ceiling: Ceiling,
    shards: Vec<Shard>,
    /// An infinite ceiling: a stream without limits (a benchmark's), sent as fast as it takes.
    unpaced: bool,
}

impl Pacer {
    /// `shards` buckets at the ceiling, full (as the service's are after a quiet second).
    pub(crate) fn new(shards: usize, ceiling: Ceiling, now: Instant) -> Self {
        let shard = Shard {
            rate: ceiling.records_per_second,
            records: ceiling.records_per_second,
            bytes: ceiling.bytes_per_second,
            refilled: now,
            last_throttle: None,
            limit: None,
            since_judged: (0, 0),
            judged_at: None,
            judgements: 0,
            taken: 0,
            throttled: 0,
        };
        Self {
            ceiling,
            shards: vec![shard; shards.max(1)],
            unpaced: !(ceiling.records_per_second.is_finite()
                && ceiling.bytes_per_second.is_finite()),
        }
    }

    /// How many shards are paced.
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Brings `shard`'s bucket and rate up to `now`.
    fn refill(&mut self, shard: usize, now: Instant) {
        let ceiling = self.ceiling;
        let s = &mut self.shards[shard];
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        // The rate climbs back from a second after the last throttle on.
        let calm_from = match s.last_throttle {
            Some(at) => s.refilled.max(at + Duration::from_secs(1)),
            None => s.refilled,
        };
        let calm = now.saturating_duration_since(calm_from).as_secs_f64();
        s.refilled = now;
        if calm > 0.0 && s.rate < ceiling.records_per_second {
            // Near where the shard last took records (within 5% either way) the limit probably
            // is: probe slowly. Past it, the limit has moved (another producer stopped): climb
            // as fast as below it.
            let near = s
                .limit
                .is_some_and(|limit| s.rate >= NEAR * limit && s.rate <= limit / NEAR);
            let step = if near {
                PROBE_PER_SECOND
            } else {
                INCREASE_PER_SECOND
            };
            s.rate =
                (s.rate + step * ceiling.records_per_second * calm).min(ceiling.records_per_second);
        }
        let share = s.rate / ceiling.records_per_second;
        let (max_records, max_bytes) = (s.rate, share * ceiling.bytes_per_second);
        s.records = (s.records + elapsed * max_records).min(max_records);
        s.bytes = (s.bytes + elapsed * max_bytes).min(max_bytes);
    }

    /// Takes one record of `bytes` from `shard`'s budget, if it has room now.
    pub(crate) fn try_take(&mut self, shard: usize, bytes: usize, now: Instant) -> bool {
        if self.unpaced {
            self.shards[shard].taken += 1;
            return true;
        }
        self.refill(shard, now);
        let s = &mut self.shards[shard];
        // A record larger than a whole second's bytes still goes, once the bucket is full.
        let bytes = (bytes as f64)
            .min(s.rate / self.ceiling.records_per_second * self.ceiling.bytes_per_second);
        if s.records >= 1.0 && s.bytes >= bytes {
            s.records -= 1.0;
            s.bytes -= bytes;
            s.taken += 1;
            s.since_judged.0 += 1;
            true
        } else {
            false
        }
    }

    /// Records `shard` could take now (ignoring bytes), for deciding whether a call would be
    /// worth making.
    pub(crate) fn room(&mut self, shard: usize, now: Instant) -> usize {
        if self.unpaced {
            return usize::MAX;
        }
        self.refill(shard, now);
        self.shards[shard].records.max(0.0) as usize
    }

    /// Bytes `shard` could take now: what an aggregate packed for it now may weigh.
    pub(crate) fn byte_room(&mut self, shard: usize, now: Instant) -> usize {
        if self.unpaced {
            return usize::MAX;
        }
        self.refill(shard, now);
        self.shards[shard].bytes.max(0.0) as usize
    }

    /// The most bytes `shard`'s bucket holds at its present rate: an aggregate larger than
    /// this would never find room.
    pub(crate) fn byte_ceiling(&self, shard: usize) -> usize {
        if self.unpaced {
            return usize::MAX;
        }
        let share = self.shards[shard].rate / self.ceiling.records_per_second;
        (share * self.ceiling.bytes_per_second) as usize
    }

    /// When `shard` will have room for a record of `bytes`, at its present rate.
    pub(crate) fn ready_at(&mut self, shard: usize, bytes: usize, now: Instant) -> Instant {
        if self.unpaced {
            return now;
        }
        self.refill(shard, now);
        let s = &self.shards[shard];
        let share = s.rate / self.ceiling.records_per_second;
        let bytes_rate = share * self.ceiling.bytes_per_second;
        let bytes = (bytes as f64).min(bytes_rate);
        let wait_records = (1.0 - s.records).max(0.0) / s.rate;
        let wait_bytes = (bytes - s.bytes).max(0.0) / bytes_rate;
        // A millisecond's margin, so that the bucket has refilled when the caller wakes.
        now + Duration::from_secs_f64(wait_records.max(wait_bytes)) + Duration::from_millis(1)
    }

    /// Which judgement of `shard`'s throttles a record sent now comes after: hand it back
    /// with the record's throttle ([`throttled`](Self::throttled)).
    pub(crate) fn judgement(&self, shard: usize) -> u32 {
        self.shards[shard].judgements
    }

    /// The stream throttled `records` of `shard`'s records, sent after judgement `sent_after`
    /// ([`judgement`](Self::judgement)): its bucket is emptied, as the service's is, and
    /// (at most once per [`DECREASE_EVERY`], when the shard refused more than a burst's
    /// worth) its rate drops towards what the shard took.
    pub(crate) fn throttled(&mut self, shard: usize, records: u64, sent_after: u32, now: Instant) {
        if self.unpaced {
            self.shards[shard].throttled += records;
            return;
        }
        self.refill(shard, now);
        let floor = FLOOR * self.ceiling.records_per_second;
        let s = &mut self.shards[shard];
        s.throttled += records;
        s.records = s.records.min(0.0);
        s.bytes = s.bytes.min(0.0);
        if sent_after != s.judgements {
            // Sent before the last judgement: part of what it judged.
            return;
        }
        s.since_judged.1 += records;
        let due = s
            .judged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= DECREASE_EVERY);
        if !due {
            return;
        }
        // The share of what the shard was offered since the last judgement that it took. A
        // few refused is a burst running out (this bucket and the service's a moment apart),
        // not a rate over the limit; more is, and the rate it took is where the limit is.
        let (offered, refused) = s.since_judged;
        let took = (1.0 - refused as f64 / offered.max(1) as f64).clamp(0.0, 1.0);
        s.since_judged = (0, 0);
        s.judged_at = Some(now);
        s.judgements = s.judgements.wrapping_add(1);
        if took < NEAR {
            let limit = s.rate * took;
            s.limit = Some(limit);
            s.rate = (NEAR * limit)
                .clamp(s.rate * 0.5, s.rate * DECREASE)
                .max(floor);
            s.last_throttle = Some(now);
        }
    }

    /// The stream's shards changed from `old` to `new` (ids, in map order): a shard in both
    /// keeps its budget, rate and counts; a new one starts at the ceiling with a full bucket,
    /// as the service's new shards do. (A closed shard's counts leave the report with it.)
    pub(crate) fn remap(&mut self, old: &[String], new: &[String], now: Instant) {
        let fresh = Pacer::new(1, self.ceiling, now).shards.remove(0);
        let shards = new
            .iter()
            .map(|id| {
                old.iter()
                    .position(|o| o == id)
                    .map_or_else(|| fresh.clone(), |i| self.shards[i].clone())
            })
            .collect();
        self.shards = shards;
    }

    /// Records taken and throttled per shard so far, and each shard's rate now (records/s).
    pub(crate) fn stats(&self) -> Vec<ShardStats> {
        (0..self.shards.len())
            .map(|i| ShardStats {
                taken: self.shards[i].taken,
                throttled: self.shards[i].throttled,
                rate: self.shards[i].rate,
            })
            .collect()
    }
}

/// One shard's counts, from the pacer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShardStats {
    pub(crate) taken: u64,
    pub(crate) throttled: u64,
    pub(crate) rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: Ceiling = Ceiling {
        records_per_second: 1000.0,
        bytes_per_second: 1024.0 * 1024.0,
    };

    #[test]
    fn a_full_bucket_gives_a_second_then_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1, SERVICE, start);
        let burst = (0..2000)
            .take_while(|_| pacer.try_take(0, 100, start))
            .count();
        assert_eq!(burst, 1000);
        let later = start + Duration::from_millis(100);
        let refilled = (0..2000)
            .take_while(|_| pacer.try_take(0, 100, later))
            .count();
        assert_eq!(refilled, 100);
        assert!(pacer.ready_at(0, 100, later) > later);
    }

    #[test]
    fn an_infinite_ceiling_paces_nothing() {
        let start = Instant::now();
        let unlimited = Ceiling {
            records_per_second: f64::INFINITY,
            bytes_per_second: f64::INFINITY,
        };
        let mut pacer = Pacer::new(1, unlimited, start);
        assert!((0..100_000).all(|_| pacer.try_take(0, 1 << 20, start)));
        pacer.throttled(0, 5, pacer.judgement(0), start);
        assert!(pacer.try_take(0, 1, start));
        assert_eq!(pacer.ready_at(0, 1, start), start);
    }

    #[test]
    fn bytes_limit_as_records_do() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1, SERVICE, start);
        // 100 KiB records: ten fit in a second's MiB.
        let taken = (0..100)
            .take_while(|_| pacer.try_take(0, 100 * 1024, start))
            .count();
        assert_eq!(taken, 10);
    }

    #[test]
    fn throttles_cut_the_rate_once_per_event_and_calm_restores_it() {
        let start = Instant::now();
        let mut pacer = Pacer::new(2, SERVICE, start);
        let take = |pacer: &mut Pacer, n: usize, at: Instant| {
            assert!((0..n).all(|_| pacer.try_take(0, 100, at)));
        };
        // Of 1,000 offered, 400 refused: the shard took 60% of 1,000/s.
        take(&mut pacer, 1000, start);
        let sent_after = pacer.judgement(0);
        pacer.throttled(0, 400, sent_after, start);
        // The answer of another call sent before that judgement.
        pacer.throttled(0, 200, sent_after, start + Duration::from_millis(100));
        assert_eq!(
            pacer.stats()[0].rate,
            570.0,
            "two answers of one event: one cut, to 95% of the 600/s the shard took"
        );
        assert_eq!(
            pacer.stats()[1].rate,
            1000.0,
            "the other shard is not touched"
        );
        // A few refused of many taken is a burst running out, not a rate over the limit.
        take(&mut pacer, 300, start + Duration::from_millis(700));
        pacer.throttled(0, 3, pacer.judgement(0), start + Duration::from_millis(700));
        assert_eq!(pacer.stats()[0].rate, 570.0);
        assert!(
            !pacer.try_take(0, 100, start + Duration::from_millis(700)),
            "the bucket is empty"
        );
        // Most refused: cut, but never by more than half (the rate had climbed back a little
        // in the 300 ms since a second after the last cut).
        pacer.refill(0, start + Duration::from_millis(1300));
        let before = pacer.stats()[0].rate;
        take(&mut pacer, 100, start + Duration::from_millis(1300));
        pacer.throttled(
            0,
            90,
            pacer.judgement(0),
            start + Duration::from_millis(1300),
        );
        let cut = pacer.stats()[0].rate;
        assert!((cut - before / 2.0).abs() < 1e-6, "{before} to {cut}");
        // Two seconds without a throttle (the first second does not count): the rate climbs
        // by 5% of the ceiling a second (the shard took 57/s last: far below).
        pacer.refill(0, start + Duration::from_millis(3300));
        let rate = pacer.stats()[0].rate;
        assert!((rate - cut - 50.0).abs() < 1e-6, "{rate}");
        pacer.refill(0, start + Duration::from_secs(60));
        assert_eq!(pacer.stats()[0].rate, 1000.0, "never past the ceiling");
    }

    #[test]
    fn near_the_rate_a_shard_last_took_the_rate_climbs_slowly() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1, SERVICE, start);
        // The shard took 60% of 1,000/s: the limit is about 600, the rate 570.
        assert!((0..1000).all(|_| pacer.try_take(0, 100, start)));
        pacer.throttled(0, 400, pacer.judgement(0), start);
        assert_eq!(pacer.stats()[0].rate, 570.0);
        // A second later it climbs at 1% of the ceiling a second while within 5% of 600...
        for ms in (10..=3000).step_by(10) {
            pacer.refill(0, start + Duration::from_millis(ms));
        }
        let rate = pacer.stats()[0].rate;
        assert!((rate - 590.0).abs() < 1e-6, "{rate}");
        // ...and past it at 5% again (the limit moved).
        for ms in (3010..=9000).step_by(10) {
            pacer.refill(0, start + Duration::from_millis(ms));
        }
        assert!(pacer.stats()[0].rate > 700.0, "{}", pacer.stats()[0].rate);
    }
}
