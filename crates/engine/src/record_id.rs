//! Record ids: what a consumer deduplicates on, and orders a key's versions by.
//!
//! An id is made when an event is first sent, and kept with the key's in-doubt mark in the
//! state, so that every resend of that event (a retry, or the next run after a crash or a lost
//! answer) carries the same id, and the row's next change a new one. Ids are UUIDv7: the first
//! 48 bits are the Unix time in milliseconds (and within a process each id is greater than the
//! one before), so a key's later events have greater ids, and a
//! consumer that keeps the greatest id applied per key can drop both copies it already has
//! and stale copies that arrive late (see the README's "Late copies").

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::xxh3_128;

use kinesync_state::{Doubt, Seen, Unanswered};

/// A new id: the time now, then random bits, with the UUID version (7) and variant set;
/// greater than every id this process made before, even within one millisecond.
pub(crate) fn new_id() -> u128 {
    static MADE: AtomicU64 = AtomicU64::new(0);
    static LAST: Mutex<u128> = Mutex::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Unique, not secret: the time to the nanosecond, the process and a count of ids made,
    // mixed by a 128-bit hash.
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&now.as_nanos().to_le_bytes());
    seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    seed[20..28].copy_from_slice(&MADE.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let id = id_at(now.as_millis() as u64, xxh3_128(&seed));
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Within one millisecond, one more than the last: the random bits are the low 62, which
    // one more leaves in place but for a chance of 2^-62.
    *last = if id > *last { id } else { *last + 1 };
    *last
}

/// The id of time `millis` with `random` bits.
fn id_at(millis: u64, random: u128) -> u128 {
    let mut id = u128::from(millis & 0xFFFF_FFFF_FFFF) << 80 | random & ((1 << 80) - 1);
    id = id & !(0xF << 76) | 0x7 << 76; // version 7
    id & !(0b11 << 62) | 0b10 << 62 // variant RFC 9562
}

/// The id as UUID text (`0192f0c4-7a1e-7c3d-9f00-…`): lower-case hex, which sorts as the
/// ids do.
pub(crate) fn format_id(id: u128) -> String {
    let hex = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The id a record of `event` takes: the one it was sent with when the key is in doubt for
/// the same event with the same stored version (`same_version`), otherwise a new one.
pub(crate) fn id_for(known: Option<Seen>, event: Unanswered, same_version: bool) -> u128 {
    match known {
        Some(Seen::InDoubt(Doubt {
            event: sent,
            record_id,
        })) if sent == event && same_version && record_id != 0 => record_id,
        _ => new_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_and_ordered_by_time() {
        // A later millisecond sorts later, whatever the random bits.
        let first = id_at(1_764_500_000_000, u128::MAX);
        let second = id_at(1_764_500_000_001, 0);
        assert!(second > first);
        assert_eq!(first >> 80, 1_764_500_000_000);
        assert!(new_id() > second, "now is later than 2025");
        // Many in one millisecond: still each greater than the one before.
        let ids: Vec<u128> = (0..10_000).map(|_| new_id()).collect();
        assert!(ids.windows(2).all(|w| w[1] > w[0]));
        let text = format_id(first);
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "7", "{text}");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        assert!(format_id(second) > text, "text sorts as the ids do");
    }
}
