//! Properties of every payload mode: whatever the values, a rendered message is valid,
//! compact JSON that decodes back to the values it was made from.

use std::sync::Arc;

use kinesync_payload::{
    Escape, Event, FieldMapping, Object, Payload, PayloadSpec, RenderInput, Row, RowEncoder,
    Schema, Value,
};
use proptest::prelude::*;

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,20}",
        // Characters that need escaping, and characters that look like JSON or Liquid syntax.
        prop::collection::vec(
            prop::sample::select(vec![
                "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "\u{2028}", "é", "🦀",
                "{", "}", "[", "]", ":", ",", "{{", "}}", "{%", " ", "a", "null",
            ]),
            0..12
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any_float().prop_map(Value::Float),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((any_string(), inner), 0..4).prop_map(|entries| {
                // JSON objects with repeated keys decode ambiguously; keep keys unique.
                let mut seen = std::collections::HashSet::new();
                Value::Object(Object(
                    entries
                        .into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .collect(),
                ))
            }),
        ]
    })
}

/// What a value must decode to: itself, with non-finite floats as their names.
fn expected(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

fn schema() -> Arc<Schema> {
    Schema::new(["id", "v", "Odd \"col\"\n"], "id").unwrap()
}

fn assert_compact(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else {
            prop_assert!(
                !b.is_ascii_whitespace(),
                "whitespace outside strings in {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<serde_json::Value, TestCaseError> {
    assert_compact(bytes)?;
    serde_json::from_slice(bytes)
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(bytes))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn row_mode_round_trips(v in any_value(), w in any_value(), id in any::<i64>()) {
        let payload = Payload::compile(&PayloadSpec::Row, schema()).unwrap();
        let row = Row::new(vec![Value::Int(id), v.clone(), w.clone()]);
        let out = decode(&payload.render(RenderInput::new(&row, Event::Added)).unwrap())?;
        prop_assert_eq!(out, serde_json::json!({"id": id, "v": expected(&v), "Odd \"col\"\n": expected(&w)}));
    }

    #[test]
    fn row_encoder_writes_the_object_and_the_values_alone(v in any_value(), w in any_value(), id in any::<i64>()) {
        let encoder = RowEncoder::new(&schema());
        let row = Row::new(vec![Value::Int(id), v.clone(), w.clone()]);
        let (mut object, mut values, mut alone) = (b"x".to_vec(), b"y".to_vec(), Vec::new());
        encoder.encode_with_values(&row, &mut object, &mut values);
        encoder.encode(&row, &mut alone);
        prop_assert_eq!(&object[1..], &alone[..], "the object is what encode writes, appended");
        prop_assert_eq!(values[0], b'y');
        prop_assert_eq!(decode(&values[1..])?, serde_json::json!([id, expected(&v), expected(&w)]));
    }

    #[test]
    fn mapping_mode_round_trips(v in any_value(), to in any_string()) {
        prop_assume!(to != "key" && !to.is_empty());
        let spec = PayloadSpec::Mapping { fields: vec![FieldMapping::new("v", to.clone()), FieldMapping::new("id", "key")] };
        let payload = Payload::compile(&spec, schema()).unwrap();
        let row = Row::new(vec![Value::Int(1), v.clone(), Value::Null]);
        let out = decode(&payload.render(RenderInput::new(&row, Event::Added)).unwrap())?;
        let mut want = serde_json::Map::new();
        want.insert(to, expected(&v));
        want.insert("key".into(), serde_json::json!(1));
        prop_assert_eq!(out, serde_json::Value::Object(want));
    }

    #[test]
    fn template_values_outside_strings_round_trip(v in any_value()) {
        let payload = Payload::compile(&PayloadSpec::template(r#"{"v": {{ row.v }}, "w": [ {{ row.v }} ]}"#), schema()).unwrap();
        let row = Row::new(vec![Value::Int(1), v.clone(), Value::Null]);
        let out = decode(&payload.render(RenderInput::new(&row, Event::Added)).unwrap())?;
        prop_assert_eq!(out, serde_json::json!({"v": expected(&v), "w": [expected(&v)]}));
    }

    #[test]
    fn template_strings_inside_strings_round_trip(s in any_string(), prefix in any_string()) {
        let template = format!(r#"{{"s": "{}{{{{ row.v }}}}"}}"#, prefix.replace('\\', "\\\\").replace('"', "\\\"").replace("{{", "").replace("{%", "").replace(char::is_control, ""));
        let Ok(payload) = Payload::compile(&PayloadSpec::template(template.clone()), schema()) else {
            return Err(TestCaseError::reject("prefix made the template invalid Liquid"));
        };
        let row = Row::new(vec![Value::Int(1), Value::String(s.clone()), Value::Null]);
        let out = decode(&payload.render(RenderInput::new(&row, Event::Added)).unwrap())?;
        let text = out["s"].as_str().unwrap();
        prop_assert!(text.ends_with(&s), "{:?} does not end with {:?}", text, s);
    }

    #[test]
    fn column_mode_accepts_exactly_objects_and_arrays(v in any_value()) {
        let payload = Payload::compile(&PayloadSpec::Column { column: "v".into() }, schema()).unwrap();
        let row = Row::new(vec![Value::Int(1), v.clone(), Value::Null]);
        let result = payload.render(RenderInput::new(&row, Event::Added));
        match &v {
            Value::Object(_) | Value::Array(_) => prop_assert_eq!(decode(&result.unwrap())?, expected(&v)),
            Value::String(text) => {
                let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
                match parsed {
                    Some(j) if j.is_object() || j.is_array() => prop_assert_eq!(decode(&result.unwrap())?, j),
                    _ => prop_assert!(result.is_err()),
                }
            }
            _ => prop_assert!(result.is_err()),
        }
    }

    #[test]
    fn any_successful_render_is_valid_compact_json(literal in "[ \\n\\t{}\\[\\]:,\"a1\\\\]{0,24}", v in any_value()) {
        let spec = PayloadSpec::Template { source: format!("{literal}{{{{ row.v }}}}{literal}"), escape: Escape::None };
        if let Ok(payload) = Payload::compile(&spec, schema()) {
            let row = Row::new(vec![Value::Int(1), v, Value::Null]);
            if let Ok(bytes) = payload.render(RenderInput::new(&row, Event::Added)) {
                decode(&bytes)?;
            }
        }
    }
}
