//! Rows to records: every key rule surfaces as a row error naming the row and the column.

use kinesync_engine::{KeySpec, RecordBuilder, RowError};
use kinesync_keys::{HashKey, KeyError, PartitionKey};
use kinesync_payload::{Event, Payload, PayloadSpec, RenderInput, Row, Schema, Value};

fn builder(explicit: Option<&str>) -> RecordBuilder {
    let schema = Schema::new(["id", "key", "hash"], "id").unwrap();
    let payload = Payload::compile(&PayloadSpec::Row, schema.clone()).unwrap();
    RecordBuilder::new(
        payload,
        KeySpec::new(&schema, Some("key"), explicit).unwrap(),
    )
}

fn build(
    builder: &RecordBuilder,
    key: Value,
    hash: Value,
) -> Result<kinesync_engine::Record, RowError> {
    let row = Row::new(vec![Value::from("r-1"), key, hash]);
    builder.build(RenderInput::new(&row, Event::Added))
}

#[test]
fn partition_key_rules_are_row_errors() {
    let b = builder(None);
    for (value, expected) in [
        (Value::Null, KeyError::NullPartitionKey),
        (Value::from(""), KeyError::EmptyPartitionKey),
        (
            Value::from("k".repeat(257)),
            KeyError::PartitionKeyTooLong {
                chars: 257,
                utf16_units: 257,
            },
        ),
        (
            Value::Float(1.5),
            KeyError::UnsupportedType {
                what: "float",
                role: "partition key",
            },
        ),
        (
            Value::Bool(true),
            KeyError::UnsupportedType {
                what: "boolean",
                role: "partition key",
            },
        ),
    ] {
        let err = build(&b, value.clone(), Value::Null).unwrap_err();
        assert_eq!(
            err,
            RowError::Key {
                primary_key: "\"r-1\"".into(),
                column: "key".into(),
                error: expected
            },
            "{value:?}"
        );
        assert_eq!(err.kind(), "partition_key");
        assert!(
            err.to_string().starts_with("row \"r-1\": column \"key\": "),
            "{err}"
        );
    }
    let ok = build(&b, Value::from("é".repeat(256)), Value::Null).unwrap();
    assert_eq!(ok.partition_key.as_str().chars().count(), 256);
    let int = build(&b, Value::Int(-12), Value::Null).unwrap();
    assert_eq!(int.partition_key.as_str(), "-12");
    assert_eq!(
        int.hash_key(),
        HashKey::of_partition_key(&PartitionKey::new("-12").unwrap())
    );
}

#[test]
fn explicit_hash_keys_route_and_their_rules_are_row_errors() {
    let b = builder(Some("hash"));
    let max = build(&b, Value::from("k"), Value::from(u128::MAX.to_string())).unwrap();
    assert_eq!(
        max.hash_key(),
        HashKey(u128::MAX),
        "the explicit hash key, not the MD5, routes"
    );
    assert_eq!(
        build(&b, Value::from("k"), Value::Int(7))
            .unwrap()
            .hash_key(),
        HashKey(7)
    );
    for value in [
        Value::Null,
        Value::from("01"),
        Value::from("-1"),
        Value::Int(-1),
        Value::from("340282366920938463463374607431768211456"),
        Value::Float(1.0),
    ] {
        let err = build(&b, Value::from("k"), value.clone()).unwrap_err();
        assert_eq!(err.kind(), "explicit_hash_key", "{value:?}: {err}");
        assert!(matches!(err, RowError::Key { ref column, .. } if column == "hash"));
    }
}

#[test]
fn key_columns_are_checked_against_the_schema() {
    let schema = Schema::new(["id", "user_id"], "id").unwrap();
    let err = KeySpec::new(&schema, Some("userid"), None).unwrap_err();
    // The library speaks of keys and columns; the config file's setting names are the
    // orchestrator's (tested through the CLI).
    assert_eq!(
        err.to_string(),
        "the partition key column \"userid\" is not in the model; did you mean \"user_id\"?"
    );
    assert!(matches!(
        err,
        kinesync_engine::Error::UnknownKeyColumn {
            role: kinesync_engine::KeyRole::PartitionKey,
            ..
        }
    ));
    let err = KeySpec::new(&schema, None, Some("hash")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the explicit hash key column \"hash\" is not in the model")
    );
}
