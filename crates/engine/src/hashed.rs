//! Maps and sets keyed by XXH3-128 hashes (of primary keys, of partition keys).
//!
//! Such a key is already evenly spread, so its low 64 bits index a hash table as they are.
//! The standard library's default hasher (SipHash) would hash each one again, on the sync's own
//! thread, once per row. The keys come from the model, which is the user's own data, so the
//! flooding attacks SipHash guards against are not a concern here.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A map from a key's XXH3-128 hash.
pub(crate) type HashedMap<V> = HashMap<u128, V, AlreadyHashed>;

/// A set of keys' XXH3-128 hashes.
pub(crate) type HashedSet = HashSet<u128, AlreadyHashed>;

/// Builds [`LowBits`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AlreadyHashed;

impl BuildHasher for AlreadyHashed {
    type Hasher = LowBits;

    fn build_hasher(&self) -> LowBits {
        LowBits(0)
    }
}

/// Hashes a `u128` hash to its low 64 bits.
#[derive(Debug)]
pub(crate) struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, hash: u128) {
        self.0 = hash as u64;
    }

    /// Only `u128` keys are hashed here; bytes of any other kind are still spread (FNV-1a),
    /// so that a change of key type would be slower, never wrong.
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_its_own_low_bits_and_maps_still_find_every_key() {
        let hash = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(AlreadyHashed.hash_one(hash), 0xfedc_ba98_7654_3210);
        let keys: Vec<u128> = (0..10_000u32)
            .map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()))
            .collect();
        let mut map = HashedMap::default();
        for (i, k) in keys.iter().enumerate() {
            map.insert(*k, i);
        }
        assert!(keys.iter().enumerate().all(|(i, k)| map.get(k) == Some(&i)));
        assert_eq!(map.len(), keys.len());
    }
}
