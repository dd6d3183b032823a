//! The `row`, `column` and `mapping` modes, their compile errors and their row errors.

use std::sync::Arc;

use kinesync_payload::{
    CompileError, Event, FieldMapping, Payload, PayloadSpec, RenderErrorKind, RenderInput, Row,
    Schema, Value,
};

fn schema() -> Arc<Schema> {
    Schema::new(
        ["id", "first_name", "email", "event_json", "Col Name"],
        "id",
    )
    .unwrap()
}

fn sample(event_json: Value) -> Row {
    Row::new(vec![
        Value::from("u-1"),
        Value::from("Ada"),
        Value::from("ada@example.com"),
        event_json,
        Value::Float(1.5),
    ])
}

fn render(spec: &PayloadSpec, row: &Row) -> Result<String, kinesync_payload::RenderError> {
    let payload = Payload::compile(spec, schema()).unwrap();
    payload
        .render(RenderInput::new(row, Event::Added))
        .map(|b| String::from_utf8(b).unwrap())
}

#[test]
fn row_mode_writes_every_column_in_schema_order() {
    let row = sample(Value::Null);
    assert_eq!(
        render(&PayloadSpec::Row, &row).unwrap(),
        r#"{"id":"u-1","first_name":"Ada","email":"ada@example.com","event_json":null,"Col Name":1.5}"#
    );
}

#[test]
fn mapping_mode_renames_in_the_order_given() {
    let spec = PayloadSpec::Mapping {
        fields: vec![
            FieldMapping::new("email", "customer_email"),
            FieldMapping::new("first_name", "customer_first_name"),
            FieldMapping::new("Col Name", "score \"x\""),
        ],
    };
    assert_eq!(
        render(&spec, &sample(Value::Null)).unwrap(),
        r#"{"customer_email":"ada@example.com","customer_first_name":"Ada","score \"x\"":1.5}"#
    );
}

#[test]
fn mapping_reports_every_problem_at_once() {
    let spec = PayloadSpec::Mapping {
        fields: vec![
            FieldMapping::new("emial", "a"),
            FieldMapping::new("id", ""),
            FieldMapping::new("first_name", "a"),
        ],
    };
    let errors = Payload::compile(&spec, schema()).unwrap_err().0;
    assert_eq!(
        errors,
        vec![
            CompileError::UnknownSpecColumn {
                setting: "payload.fields[0].from".into(),
                name: "emial".into(),
                suggestion: Some("email".into()),
            },
            CompileError::EmptyTarget {
                index: 1,
                from: "id".into()
            },
            CompileError::DuplicateTarget {
                index: 2,
                first: 0,
                to: "a".into()
            },
        ]
    );
    assert_eq!(
        errors[0].to_string(),
        "payload.fields[0].from names column \"emial\", which the model does not have; did you mean \"email\"?"
    );
    let empty = Payload::compile(&PayloadSpec::Mapping { fields: vec![] }, schema()).unwrap_err();
    assert_eq!(empty.0, vec![CompileError::EmptyMapping]);
}

#[test]
fn column_mode_passes_objects_arrays_and_json_strings_compacted() {
    let spec = PayloadSpec::Column {
        column: "event_json".into(),
    };
    let object: Value = serde_json::from_str(r#"{"z": 1, "a": [true, null]}"#).unwrap();
    assert_eq!(
        render(&spec, &sample(object)).unwrap(),
        r#"{"z":1,"a":[true,null]}"#,
        "key order kept"
    );
    assert_eq!(
        render(&spec, &sample(Value::Array(vec![Value::Int(1)]))).unwrap(),
        "[1]"
    );
    let pretty = Value::from("{\n  \"type\": \"signup\",\n  \"note\": \"two  spaces\"\n}");
    assert_eq!(
        render(&spec, &sample(pretty)).unwrap(),
        r#"{"type":"signup","note":"two  spaces"}"#
    );
}

#[test]
fn column_mode_refuses_anything_else_with_the_reason() {
    let spec = PayloadSpec::Column {
        column: "event_json".into(),
    };
    for (value, reason) in [
        (Value::Null, "found null"),
        (Value::Int(3), "found integer"),
        (
            Value::from("42"),
            "the string does not start with `{` or `[`",
        ),
        (Value::from("{\"a\": }"), "invalid JSON at byte 6"),
        (Value::from("{\"a\": 1} trailing"), "invalid JSON at byte 9"),
    ] {
        let err = render(&spec, &sample(value.clone())).unwrap_err();
        assert_eq!(err.primary_key, "\"u-1\"");
        let RenderErrorKind::ColumnNotJson {
            column,
            reason: got,
        } = &err.kind
        else {
            panic!("{err}")
        };
        assert_eq!(column, "event_json");
        assert!(got.starts_with(reason), "{value:?}: {got}");
    }
}

#[test]
fn column_mode_names_an_unknown_column_at_compile_time() {
    let err = Payload::compile(
        &PayloadSpec::Column {
            column: "event".into(),
        },
        schema(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "payload.column names column \"event\", which the model does not have; did you mean \"event_json\"?"
    );
}

#[test]
fn rows_shorter_than_the_schema_read_as_null() {
    let row = Row::new(vec![Value::Int(1)]);
    assert_eq!(
        render(&PayloadSpec::Row, &row).unwrap(),
        r#"{"id":1,"first_name":null,"email":null,"event_json":null,"Col Name":null}"#
    );
}

#[test]
fn json_values_keep_key_order_and_types_when_read() {
    let v: Value = serde_json::from_str(
        r#"{"b": 1, "a": 1.0, "c": 18446744073709551615, "d": "x", "e": 18446744073709551616}"#,
    )
    .unwrap();
    let Value::Object(object) = &v else { panic!() };
    let keys: Vec<&str> = object.0.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "a", "c", "d", "e"]);
    assert_eq!(object.get("b"), Some(&Value::Int(1)));
    assert_eq!(object.get("a"), Some(&Value::Float(1.0)));
    assert_eq!(
        object.get("c"),
        Some(&Value::UInt(u64::MAX)),
        "beyond i64, within u64: exact"
    );
    assert_eq!(
        object.get("e"),
        Some(&Value::Float(18446744073709551616.0)),
        "beyond u64: a float, as serde_json reads it"
    );
}

#[test]
fn event_names_parse_and_an_unknown_one_is_a_typed_error() {
    use kinesync_payload::UnknownEvent;
    assert_eq!("changed".parse::<Event>(), Ok(Event::Changed));
    let error = "gone".parse::<Event>().unwrap_err();
    assert_eq!(
        error,
        UnknownEvent {
            name: "gone".into()
        }
    );
    assert_eq!(
        error.to_string(),
        r#"unknown event "gone": expected added, changed or removed"#
    );
}
