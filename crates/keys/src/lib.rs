//! Kinesis record keys: which shard a record lands on, computed exactly as the service does.
//!
//! Where it sits in a sync (source → engine: prepare, diff, build, batch, send, commit → sink):
//! the keys of the build stage: the engine's `RecordBuilder` asks it for each record's
//! partition key, explicit hash key and shard.
//!
//! Kinesis routes a record by a 128-bit *hash key*: the MD5 digest of the partition key's
//! UTF-8 bytes read as a big-endian integer, or, when the caller supplies one, the explicit
//! hash key. The record goes to the open shard whose inclusive `[starting, ending]` hash range
//! holds that number. This crate models each step with a type that can only hold a value the
//! service would accept:
//!
//! - [`PartitionKey`]: 1..=256 UTF-16 code units, as the service counts (not bytes; an emoji
//!   counts twice; never truncated).
//! - [`ExplicitHashKey`]: a decimal in `0..=2^128-1`, written without sign or leading zeros.
//! - [`HashKey`]: the 128-bit number the shard map is searched with.
//! - [`ShardMap`]: the open shards of a stream and their hash ranges.
//!
//! The crate is pure and synchronous: no I/O, no clock, no randomness.
//!
//! ```
//! use kinesync::keys::{HashKey, PartitionKey, ShardMap};
//!
//! let key = PartitionKey::new("user-42").unwrap();
//! let shards = ShardMap::even(4).unwrap();
//! let shard = shards.shard_for(HashKey::of_partition_key(&key));
//! assert!(shard.id().starts_with("shardId-"));
//! ```

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

/// The longest partition key, in UTF-16 code units: the service counts a key's length as Java
/// does, so a character outside the Basic Multilingual Plane (an emoji) counts twice.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// The largest number of shards [`ShardMap::even`] builds; the service's own per-stream
/// default quota is far lower, this only keeps the map from being absurd.
pub const MAX_EVEN_SHARDS: u32 = 100_000;

/// Why a key value was refused. Each variant says what the service would have said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The partition key's source value was null.
    #[error("partition key is null; every record needs a partition key of 1 to 256 characters")]
    NullPartitionKey,
    /// The partition key was the empty string.
    #[error("partition key is empty; Kinesis needs 1 to 256 characters")]
    EmptyPartitionKey,
    /// The partition key is longer than 256, counted as the service counts: in UTF-16 code
    /// units.
    #[error(
        "partition key is {utf16_units} long as Kinesis counts ({chars} characters; a character \
         beyond U+FFFF, such as an emoji, counts as two), more than the {MAX_PARTITION_KEY_CHARS} \
         it allows; kinesync never truncates keys, so choose a shorter key column"
    )]
    PartitionKeyTooLong {
        /// How many Unicode characters the key had.
        chars: usize,
        /// Its length as the service counts it: UTF-16 code units.
        utf16_units: usize,
    },
    /// The key's source value was of a type that has no key text (a float, a bool, ...).
    #[error("{what} cannot be a {role}: only strings and integers can")]
    UnsupportedType {
        /// The value's type, as a user would name it ("float", "boolean", ...).
        what: &'static str,
        /// Which key was being built: "partition key" or "explicit hash key".
        role: &'static str,
    },
    /// The explicit hash key's source value was null.
    #[error("explicit hash key is null; give a decimal in 0..=2^128-1 or leave the column unset")]
    NullExplicitHashKey,
    /// The explicit hash key text is not a decimal written as the service expects.
    #[error(
        "explicit hash key {text:?} is not a decimal of the form 0|[1-9][0-9]{{0,38}} \
         (no sign, no leading zeros, no spaces)"
    )]
    MalformedExplicitHashKey {
        /// The refused text, cut to 60 characters so a bad value cannot flood a report.
        text: String,
    },
    /// The explicit hash key is a well-formed decimal, but above 2^128-1 or below zero.
    #[error(
        "explicit hash key {text} is outside 0..=2^128-1 (340282366920938463463374607431768211455)"
    )]
    ExplicitHashKeyOutOfRange {
        /// The refused value, as text.
        text: String,
    },
}

/// A partition key the service will accept: 1 to 256 UTF-16 code units (256 characters of
/// the Basic Multilingual Plane; characters beyond it count twice).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey(String);

impl PartitionKey {
    /// Checks `key` against the service's rule (1..=256 UTF-16 code units).
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::EmptyPartitionKey);
        }
        // Counting stops at 257: a 10 MB string costs no more than a short one.
        let units = key.encode_utf16().take(MAX_PARTITION_KEY_CHARS + 1).count();
        if units > MAX_PARTITION_KEY_CHARS {
            return Err(KeyError::PartitionKeyTooLong {
                chars: key.chars().count(),
                utf16_units: key.encode_utf16().count(),
            });
        }
        Ok(Self(key))
    }

    /// Builds the key from a column value: strings as they are, integers in plain decimal.
    pub fn from_input(input: KeyInput<'_>) -> Result<Self, KeyError> {
        match input {
            KeyInput::Null => Err(KeyError::NullPartitionKey),
            KeyInput::Integer(i) => Self::new(i.to_string()),
            KeyInput::Unsigned(u) => Self::new(u.to_string()),
            KeyInput::Text(s) => Self::new(s),
            KeyInput::Unsupported(what) => Err(KeyError::UnsupportedType {
                what,
                role: "partition key",
            }),
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's UTF-8 length, which counts against the record size limit.
    pub fn byte_len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PartitionKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for PartitionKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A column value seen by the key rules. Callers convert their own value type into this, so
/// that this crate knows nothing about rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyInput<'a> {
    /// A null (or missing) value.
    Null,
    /// An integer.
    Integer(i64),
    /// An integer above `i64::MAX` (an unsigned 64-bit id).
    Unsigned(u64),
    /// A string.
    Text(&'a str),
    /// Any other type, named for the error message ("float", "boolean", "array", "object").
    Unsupported(&'static str),
}

/// An explicit hash key: a value in `0..=2^128-1` that overrides the partition key's MD5
/// for shard choice. Displayed in the decimal form the API takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExplicitHashKey(u128);

impl ExplicitHashKey {
    /// Wraps a hash key value; every `u128` is in range.
    pub const fn new(value: u128) -> Self {
        Self(value)
    }

    /// The numeric value.
    pub const fn get(self) -> u128 {
        self.0
    }

    /// Builds the key from a column value: a non-negative integer, or a decimal string.
    pub fn from_input(input: KeyInput<'_>) -> Result<Self, KeyError> {
        match input {
            KeyInput::Null => Err(KeyError::NullExplicitHashKey),
            KeyInput::Integer(i) => {
                u128::try_from(i)
                    .map(Self)
                    .map_err(|_| KeyError::ExplicitHashKeyOutOfRange {
                        text: i.to_string(),
                    })
            }
            KeyInput::Unsigned(u) => Ok(Self(u128::from(u))),
            KeyInput::Text(s) => s.parse(),
            KeyInput::Unsupported(what) => Err(KeyError::UnsupportedType {
                what,
                role: "explicit hash key",
            }),
        }
    }
}

impl FromStr for ExplicitHashKey {
    type Err = KeyError;

    /// Accepts exactly the service's pattern `0|([1-9]\d{0,38})` with a value ≤ 2^128-1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || KeyError::MalformedExplicitHashKey {
            text: s.chars().take(60).collect(),
        };
        let bytes = s.as_bytes();
        let well_formed = !bytes.is_empty()
            && bytes.len() <= 39
            && bytes.iter().all(u8::is_ascii_digit)
            && (bytes[0] != b'0' || bytes.len() == 1);
        if !well_formed {
            return Err(malformed());
        }
        // 39 digits can exceed u128::MAX (3.4e38); everything shorter cannot.
        s.parse::<u128>()
            .map(Self)
            .map_err(|_| KeyError::ExplicitHashKeyOutOfRange { text: s.to_owned() })
    }
}

impl fmt::Display for ExplicitHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The 128-bit number that decides a record's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The MD5 of the partition key's UTF-8 bytes, read big-endian: the service's own rule.
    pub fn of_partition_key(key: &PartitionKey) -> Self {
        Self::of_bytes(key.as_str().as_bytes())
    }

    /// The MD5 of any bytes, read big-endian.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let digest: [u8; 16] = Md5::digest(bytes).into();
        Self(u128::from_be_bytes(digest))
    }

    /// The hash key a record is routed by: the explicit hash key when given, otherwise the
    /// partition key's MD5.
    pub fn for_record(key: &PartitionKey, explicit: Option<ExplicitHashKey>) -> Self {
        match explicit {
            Some(e) => Self(e.get()),
            None => Self::of_partition_key(key),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One open shard and the inclusive hash range it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    id: String,
    start: u128,
    end: u128,
}

impl ShardRange {
    /// A shard owning `start..=end`.
    pub fn new(id: impl Into<String>, start: u128, end: u128) -> Self {
        Self {
            id: id.into(),
            start,
            end,
        }
    }

    /// The shard id, as the service writes it (`shardId-000000000000`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The first hash key the shard owns.
    pub fn start(&self) -> u128 {
        self.start
    }

    /// The last hash key the shard owns (inclusive).
    pub fn end(&self) -> u128 {
        self.end
    }

    /// Whether the shard owns `hash`.
    pub fn contains(&self, hash: HashKey) -> bool {
        self.start <= hash.0 && hash.0 <= self.end
    }
}

/// Why a set of hash ranges is not a usable shard map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardMapError {
    /// No shards at all.
    #[error("a stream needs at least one open shard")]
    Empty,
    /// More shards than [`MAX_EVEN_SHARDS`] were asked of [`ShardMap::even`].
    #[error("{0} shards is more than kinesync simulates ({MAX_EVEN_SHARDS})")]
    TooManyShards(u32),
    /// A range whose start is above its end.
    #[error("shard {id} has its starting hash key above its ending hash key")]
    Inverted {
        /// The shard.
        id: String,
    },
    /// The ranges leave a hole or overlap, so some hash key has no shard or two.
    #[error(
        "the open shards do not tile 0..=2^128-1: after shard {after} the next range starts at {next_start}"
    )]
    NotContiguous {
        /// The shard before the gap or overlap.
        after: String,
        /// Where the next range starts.
        next_start: u128,
    },
    /// The ranges do not start at 0 or do not end at 2^128-1.
    #[error("the open shards do not cover the whole hash key space 0..=2^128-1")]
    NotCovering,
}

/// The open shards of a stream, sorted by hash range, covering every hash key exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    shards: Vec<ShardRange>,
}

impl ShardMap {
    /// The map of a stream created with `count` shards: shard `i` starts at
    /// `floor(i * 2^128 / count)` and ends one below where the next starts; the last ends at
    /// `2^128 - 1`. Ids read `shardId-000000000000`, `shardId-000000000001`, ...
    pub fn even(count: u32) -> Result<Self, ShardMapError> {
        if count == 0 {
            return Err(ShardMapError::Empty);
        }
        if count > MAX_EVEN_SHARDS {
            return Err(ShardMapError::TooManyShards(count));
        }
        let starts: Vec<u128> = (0..count).map(|i| even_start(i, count)).collect();
        let shards = starts
            .iter()
            .enumerate()
            .map(|(i, &start)| {
                let end = starts.get(i + 1).map_or(u128::MAX, |next| next - 1);
                ShardRange::new(shard_id(i as u64), start, end)
            })
            .collect();
        Ok(Self { shards })
    }

    /// A map from the open shards a stream describes, in any order. The ranges must tile the
    /// whole hash key space, as the open shards of a real stream always do.
    pub fn from_ranges(mut shards: Vec<ShardRange>) -> Result<Self, ShardMapError> {
        if shards.is_empty() {
            return Err(ShardMapError::Empty);
        }
        shards.sort_by_key(|s| s.start);
        if let Some(bad) = shards.iter().find(|s| s.start > s.end) {
            return Err(ShardMapError::Inverted { id: bad.id.clone() });
        }
        if shards[0].start != 0 || shards[shards.len() - 1].end != u128::MAX {
            return Err(ShardMapError::NotCovering);
        }
        for pair in shards.windows(2) {
            if pair[0].end.checked_add(1) != Some(pair[1].start) {
                return Err(ShardMapError::NotContiguous {
                    after: pair[0].id.clone(),
                    next_start: pair[1].start,
                });
            }
        }
        Ok(Self { shards })
    }

    /// The shard that owns `hash`. Every hash key has exactly one.
    pub fn shard_for(&self, hash: HashKey) -> &ShardRange {
        &self.shards[self.index_for(hash)]
    }

    /// The position in [`ShardMap::shards`] of the shard that owns `hash`.
    pub fn index_for(&self, hash: HashKey) -> usize {
        // The ranges tile the space in order, so the owner is the last shard starting at or
        // below the hash; index 0 starts at 0, so there always is one.
        self.shards.partition_point(|s| s.start <= hash.0) - 1
    }

    /// The shards, sorted by starting hash key.
    pub fn shards(&self) -> &[ShardRange] {
        &self.shards
    }

    /// How many open shards there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: a shard map has at least one shard. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }
}

/// `floor(i * 2^128 / n)` without overflowing 128 bits: with `2^128 = q*n + r`,
/// `i * 2^128 / n = i*q + i*r/n`, and `i*r < n^2` fits easily.
fn even_start(i: u32, n: u32) -> u128 {
    let n = u128::from(n);
    let i = u128::from(i);
    // 2^128 = q*n + r with r in 1..=n (r == n when n divides 2^128); for i < n neither
    // i*q (< 2^128) nor i*r (< n^2) overflows.
    let q = u128::MAX / n;
    let r = u128::MAX % n + 1;
    i * q + (i * r) / n
}

/// The service's shard id for the `index`-th shard of a new stream.
pub fn shard_id(index: u64) -> String {
    format!("shardId-{index:012}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_map_matches_the_formula_for_small_counts() {
        let two = ShardMap::even(2).unwrap();
        assert_eq!(two.shards()[0].end(), (1u128 << 127) - 1);
        assert_eq!(two.shards()[1].start(), 1u128 << 127);
        assert_eq!(two.shards()[1].end(), u128::MAX);
        let one = ShardMap::even(1).unwrap();
        assert_eq!(
            (one.shards()[0].start(), one.shards()[0].end()),
            (0, u128::MAX)
        );
        // 2^128 / 3 = 113427455640312821154458202477256070485.33..
        let three = ShardMap::even(3).unwrap();
        assert_eq!(
            three.shards()[1].start(),
            113_427_455_640_312_821_154_458_202_477_256_070_485
        );
        assert_eq!(
            three.shards()[2].start(),
            226_854_911_280_625_642_308_916_404_954_512_140_970
        );
        assert_eq!(three.shards()[2].id(), "shardId-000000000002");
    }

    #[test]
    fn zero_shards_is_an_error() {
        assert_eq!(ShardMap::even(0), Err(ShardMapError::Empty));
    }

    #[test]
    fn from_ranges_refuses_gaps_and_partial_cover() {
        let gap = vec![
            ShardRange::new("a", 0, 10),
            ShardRange::new("b", 12, u128::MAX),
        ];
        assert!(matches!(
            ShardMap::from_ranges(gap),
            Err(ShardMapError::NotContiguous { .. })
        ));
        let short = vec![ShardRange::new("a", 0, 10)];
        assert_eq!(
            ShardMap::from_ranges(short),
            Err(ShardMapError::NotCovering)
        );
        let shuffled = vec![
            ShardRange::new("b", 11, u128::MAX),
            ShardRange::new("a", 0, 10),
        ];
        let map = ShardMap::from_ranges(shuffled).unwrap();
        assert_eq!(map.shard_for(HashKey(10)).id(), "a");
        assert_eq!(map.shard_for(HashKey(11)).id(), "b");
    }

    #[test]
    fn partition_key_edges() {
        assert_eq!(PartitionKey::new(""), Err(KeyError::EmptyPartitionKey));
        assert!(
            PartitionKey::new("é".repeat(256)).is_ok(),
            "256 two-byte characters fit"
        );
        assert_eq!(
            PartitionKey::new("é".repeat(257)),
            Err(KeyError::PartitionKeyTooLong {
                chars: 257,
                utf16_units: 257
            })
        );
        assert_eq!(
            PartitionKey::from_input(KeyInput::Integer(-7))
                .unwrap()
                .as_str(),
            "-7"
        );
        assert_eq!(
            PartitionKey::from_input(KeyInput::Null),
            Err(KeyError::NullPartitionKey)
        );
        assert!(matches!(
            PartitionKey::from_input(KeyInput::Unsupported("float")),
            Err(KeyError::UnsupportedType { what: "float", .. })
        ));
    }

    #[test]
    fn explicit_hash_key_edges() {
        let max = "340282366920938463463374607431768211455";
        assert_eq!(max.parse::<ExplicitHashKey>().unwrap().get(), u128::MAX);
        assert!(matches!(
            "340282366920938463463374607431768211456".parse::<ExplicitHashKey>(),
            Err(KeyError::ExplicitHashKeyOutOfRange { .. })
        ));
        for bad in [
            "",
            "01",
            "-1",
            "+1",
            " 1",
            "1.0",
            "1e3",
            "0x10",
            "1000000000000000000000000000000000000000",
        ] {
            assert!(
                bad.parse::<ExplicitHashKey>().is_err(),
                "{bad:?} must be refused"
            );
        }
        assert_eq!("0".parse::<ExplicitHashKey>().unwrap().get(), 0);
        assert!(matches!(
            ExplicitHashKey::from_input(KeyInput::Integer(-1)),
            Err(KeyError::ExplicitHashKeyOutOfRange { .. })
        ));
    }
}
