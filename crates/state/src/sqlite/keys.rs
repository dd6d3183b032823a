//! How keys are stored in the `rows` table, and read back.
//!
//! Kept apart because this is the on-disk form of every key: the schema upgrade in
//! [`schema`](super::schema) rewrites version 1 files into it with SQL, the writer stores keys
//! in it, and lookups and the walk over keys translate to and from it. A change here is a
//! change of schema version.

use std::borrow::Cow;

/// How a file stores its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyForm {
    /// Integers after their length (see [`stored_key`]): schema version 2.
    ByLength,
    /// As the caller wrote them: a version 1 file opened without its upgrade.
    AsWritten,
}

impl KeyForm {
    pub(super) fn stored(self, key: &str) -> Cow<'_, str> {
        match self {
            KeyForm::ByLength => stored_key(key),
            KeyForm::AsWritten => Cow::Borrowed(key),
        }
    }

    pub(super) fn caller_key(self, stored: String) -> String {
        match self {
            KeyForm::ByLength => key_from_stored(stored),
            KeyForm::AsWritten => stored,
        }
    }
}

/// The longest run of digits stored with a length: 20 digits hold any 64-bit integer.
const MAX_LENGTH_PREFIXED: usize = 20;

/// How a key is stored. A non-negative integer's digits go after a character that gives their
/// count (`42` → `\u{2}42`), so that the key index's order is the integers' order: a model
/// read by ascending id then appends to the index instead of splitting pages in its middle
/// (text order puts `10` before `9`). A key that itself starts with a control character
/// (kinesync's never do: they are compact JSON) goes after [`ESCAPED`], so that a stored key
/// starts with a control character exactly when one was added. Any other key is stored as it
/// is.
pub(super) fn stored_key(key: &str) -> Cow<'_, str> {
    let digits = key.len();
    let prefix =
        if (1..=MAX_LENGTH_PREFIXED).contains(&digits) && key.bytes().all(|b| b.is_ascii_digit()) {
            char::from(digits as u8)
        } else if key.as_bytes().first().is_some_and(|&b| b < 0x20) {
            ESCAPED
        } else {
            return Cow::Borrowed(key);
        };
    let mut stored = String::with_capacity(key.len() + 1);
    stored.push(prefix);
    stored.push_str(key);
    Cow::Owned(stored)
}

/// What a stored key that starts with a control character of its own starts with (the lengths
/// of integers take 0x01 to 0x14).
const ESCAPED: char = '\u{1f}';

/// A key as the caller knows it, from its stored form: without the character
/// [`stored_key`] added, if it added one.
fn key_from_stored(mut stored: String) -> String {
    if stored.as_bytes().first().is_some_and(|&b| b < 0x20) {
        stored.remove(0);
    }
    stored
}
