//! What the store tests share: the changes they commit, and how they walk a store's keys.

#![allow(dead_code, unreachable_pub)] // each test file uses its own share of these

use kinesync_state::{Change, Doubt, StateStore, Unanswered};

pub fn upsert(key: &str, fingerprint: u128) -> Change {
    Change::Upsert {
        key: key.into(),
        fingerprint,
        row: format!("{{\"k\":{key:?}}}").into_bytes(),
    }
}

/// A key marked in doubt, with the row sent (`Some`: the row names the fingerprint given, so
/// that stores can be compared on it), and a record id made from the key.
pub fn in_doubt(key: &str, event: Unanswered, sent: Option<&u128>) -> Change {
    Change::InDoubt {
        key: key.into(),
        doubt: doubt(key, event),
        sent: sent.map(|fp| (*fp, format!("{{\"sent\":{fp}}}").into_bytes())),
    }
}

pub fn doubt(key: &str, event: Unanswered) -> Doubt {
    Doubt {
        event,
        record_id: key
            .bytes()
            .fold(0x7000, |id: u128, b| id.wrapping_mul(31) + u128::from(b)),
    }
}

pub fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The change a property test's `op` (0 to 10) makes to `key`: deletes, marks of each
/// event, settles and (most often) upserts, so that every kind meets every other.
pub fn random_change(key: &str, op: u8, fingerprint: &u128) -> Change {
    match op {
        0 | 1 => Change::Delete { key: key.into() },
        2 => in_doubt(key, Unanswered::Added, Some(fingerprint)),
        3 => in_doubt(key, Unanswered::Changed, Some(fingerprint)),
        4 => in_doubt(key, Unanswered::Removed, None),
        5 => Change::Settle { key: key.into() },
        _ => upsert(key, *fingerprint),
    }
}

/// Every key of the store, walked `page` keys at a time, in the order the pages give them.
pub fn walk_in_order(store: &mut dyn StateStore, page: usize) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let next = store
            .keys_after(all.last().map(String::as_str), page)
            .unwrap();
        if next.is_empty() {
            break;
        }
        all.extend(next);
    }
    all
}
