//! Key rules checked against independent MD5 vectors and as properties over the whole range.

use kinesync_keys::{
    ExplicitHashKey, HashKey, KeyError, KeyInput, MAX_PARTITION_KEY_CHARS, PartitionKey, ShardMap,
};
use proptest::prelude::*;

fn vectors() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/keys/md5-vectors.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("fixtures/keys/md5-vectors.jsonl is readable");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each vector line is JSON"))
        .collect()
}

#[test]
fn hash_keys_match_independently_computed_md5_vectors() {
    let vectors = vectors();
    assert!(vectors.len() > 50, "the fixture has its vectors");
    for v in vectors {
        let key = PartitionKey::new(v["partition_key"].as_str().unwrap()).unwrap();
        let expected: u128 = v["hash_key"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            HashKey::of_partition_key(&key).0,
            expected,
            "hash of {key:?}"
        );
        for (shards, shard_id) in v["shard_of_even"].as_object().unwrap() {
            let map = ShardMap::even(shards.parse().unwrap()).unwrap();
            assert_eq!(
                map.shard_for(HashKey(expected)).id(),
                shard_id.as_str().unwrap(),
                "shard of {key:?} among {shards}"
            );
        }
    }
}

fn any_u128() -> impl Strategy<Value = u128> {
    prop_oneof![
        any::<u128>(),
        Just(0u128),
        Just(u128::MAX),
        (0u32..128).prop_map(|b| 1u128 << b),
        (1u32..128).prop_map(|b| (1u128 << b) - 1),
    ]
}

proptest! {
    #[test]
    fn hashing_is_deterministic(key in "\\PC{1,128}") {
        let a = PartitionKey::new(key.clone()).unwrap();
        let b = PartitionKey::new(key).unwrap();
        prop_assert_eq!(HashKey::of_partition_key(&a), HashKey::of_partition_key(&b));
    }

    #[test]
    fn every_hash_key_has_exactly_one_shard(hash in any_u128(), shards in 1u32..64) {
        let map = ShardMap::even(shards).unwrap();
        let owners = map.shards().iter().filter(|s| s.contains(HashKey(hash))).count();
        prop_assert_eq!(owners, 1);
        prop_assert!(map.shard_for(HashKey(hash)).contains(HashKey(hash)));
    }

    #[test]
    fn even_shards_tile_the_whole_space(shards in 1u32..2000) {
        let map = ShardMap::even(shards).unwrap();
        prop_assert_eq!(map.len(), shards as usize);
        // from_ranges checks the tiling: start at 0, contiguous, end at 2^128-1.
        prop_assert!(ShardMap::from_ranges(map.shards().to_vec()).is_ok());
    }

    #[test]
    fn explicit_hash_key_decimal_round_trips(value in any_u128()) {
        let text = value.to_string();
        let parsed: ExplicitHashKey = text.parse().unwrap();
        prop_assert_eq!(parsed.get(), value);
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn explicit_hash_key_refuses_anything_but_the_pattern(text in "[-+ 0-9a-z.]{0,41}") {
        let pattern_ok = text == "0"
            || (!text.is_empty() && text.len() <= 39 && !text.starts_with('0')
                && text.bytes().all(|b| b.is_ascii_digit()));
        match text.parse::<ExplicitHashKey>() {
            Ok(k) => {
                prop_assert!(pattern_ok, "{:?} accepted", text);
                prop_assert_eq!(k.to_string(), text);
            }
            Err(KeyError::ExplicitHashKeyOutOfRange { .. }) => {
                prop_assert!(pattern_ok && text.len() == 39);
            }
            Err(_) => prop_assert!(!pattern_ok, "{:?} refused", text),
        }
    }

    #[test]
    fn partition_key_length_rule_counts_utf16_units(ch in "\\PC", len in 1usize..300) {
        // As the service (Java) counts: a character beyond U+FFFF is two units.
        let key = ch.repeat(len);
        let units = key.encode_utf16().count();
        let result = PartitionKey::new(key);
        prop_assert_eq!(result.is_ok(), units <= MAX_PARTITION_KEY_CHARS);
    }

    #[test]
    fn integer_partition_keys_are_plain_decimal(i in any::<i64>()) {
        let key = PartitionKey::from_input(KeyInput::Integer(i)).unwrap();
        prop_assert_eq!(key.as_str(), i.to_string());
    }
}

#[test]
fn limits_hold_at_their_exact_edges() {
    assert!(PartitionKey::new("k".repeat(256)).is_ok());
    assert_eq!(
        PartitionKey::new("k".repeat(257)),
        Err(KeyError::PartitionKeyTooLong {
            chars: 257,
            utf16_units: 257
        })
    );
    // The service counts UTF-16 units: an emoji is two.
    assert!(
        PartitionKey::new("🦀".repeat(128)).is_ok(),
        "128 characters, 256 UTF-16 units"
    );
    assert_eq!(
        PartitionKey::new("🦀".repeat(256)),
        Err(KeyError::PartitionKeyTooLong {
            chars: 256,
            utf16_units: 512
        }),
        "256 characters, 512 UTF-16 units: the service refuses it"
    );
    assert!(PartitionKey::new("é".repeat(256)).is_ok(), "one unit each");
    assert_eq!(
        u128::MAX
            .to_string()
            .parse::<ExplicitHashKey>()
            .unwrap()
            .get(),
        u128::MAX
    );
    assert!(matches!(
        "340282366920938463463374607431768211456".parse::<ExplicitHashKey>(),
        Err(KeyError::ExplicitHashKeyOutOfRange { .. })
    ));
}

#[test]
fn unsigned_64_bit_integers_are_keys_digit_for_digit() {
    let key = PartitionKey::from_input(KeyInput::Unsigned(u64::MAX)).unwrap();
    assert_eq!(key.as_str(), "18446744073709551615");
    for value in [1u64 << 63, u64::MAX] {
        let ehk = ExplicitHashKey::from_input(KeyInput::Unsigned(value)).unwrap();
        assert_eq!(
            ehk.get(),
            u128::from(value),
            "a JSON integer at or above 2^63"
        );
    }
}
