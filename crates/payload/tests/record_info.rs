//! What a message can say about its record: `record.id`, `record.run_id` and
//! `record.sent_at` in templates, and `record_id_field` in the other modes.

use std::sync::Arc;

use kinesync_payload::{
    CompileError, Event, FieldMapping, Payload, PayloadSpec, RecordInfo, RenderErrorKind,
    RenderInput, Row, Schema, Value,
};

const RECORD: RecordInfo<'static> = RecordInfo {
    id: "0192f0c4-7a1e-7c3d-9f00-00000000002a",
    run_id: "20261130-153014-159",
    sent_at: "2026-11-30T15:30:14.159Z",
};

fn schema() -> Arc<Schema> {
    Schema::new(["id", "name", "doc"], "id").unwrap()
}

fn row(doc: Value) -> Row {
    Row::new(vec![Value::Int(7), Value::from("Ada"), doc])
}

fn render(
    payload: &Payload,
    row: &Row,
    record: Option<RecordInfo<'_>>,
) -> Result<String, RenderErrorKind> {
    let input = RenderInput::new(row, Event::Added);
    let input = match record {
        Some(record) => input.with_record(record),
        None => input,
    };
    payload
        .render(input)
        .map(|b| String::from_utf8(b).unwrap())
        .map_err(|e| e.kind)
}

#[test]
fn a_template_reads_the_record_and_nil_without_one() {
    let spec = PayloadSpec::template(
        r#"{"id": {{ row.id }}, "rid": "{{ record.id }}", "run": {{ record.run_id }}, "at": "{{ record.sent_at }}"}"#,
    );
    let payload = Payload::compile(&spec, schema()).unwrap();
    assert!(payload.wants_record());
    assert_eq!(
        render(&payload, &row(Value::Null), Some(RECORD)).unwrap(),
        r#"{"id":7,"rid":"0192f0c4-7a1e-7c3d-9f00-00000000002a","run":"20261130-153014-159","at":"2026-11-30T15:30:14.159Z"}"#
    );
    // Rendered without a record (a caller that has none), `record` is nil, as `previous` is
    // for an added row, and so are its fields.
    assert_eq!(
        render(&payload, &row(Value::Null), None).unwrap(),
        r#"{"id":7,"rid":"","run":null,"at":""}"#
    );
    let plain =
        Payload::compile(&PayloadSpec::template(r#"{"id": {{ row.id }}}"#), schema()).unwrap();
    assert!(
        !plain.wants_record(),
        "no record to make for a template that never reads it"
    );
}

#[test]
fn an_unknown_record_field_is_a_compile_error_with_its_place() {
    let spec = PayloadSpec::template("{\"id\": {{ row.id }},\n \"x\": \"{{ record.uuid }}\"}");
    let errors = Payload::compile(&spec, schema()).unwrap_err();
    let [CompileError::UnknownRecordField { location, name }] = errors.0.as_slice() else {
        panic!("{errors:?}")
    };
    assert_eq!(name, "uuid");
    assert_eq!((location.line, location.column), (2, 18));
    assert!(errors.0[0].help().contains("record.id"));
}

#[test]
fn the_other_modes_add_the_id_as_their_last_member() {
    let with_field = |spec: PayloadSpec| {
        Payload::compile(&spec, schema())
            .unwrap()
            .with_record_id_field("_record_id")
            .unwrap()
    };
    let row_mode = with_field(PayloadSpec::Row);
    assert!(row_mode.wants_record());
    assert_eq!(
        render(&row_mode, &row(Value::Null), Some(RECORD)).unwrap(),
        r#"{"id":7,"name":"Ada","doc":null,"_record_id":"0192f0c4-7a1e-7c3d-9f00-00000000002a"}"#
    );
    let mapping = with_field(PayloadSpec::Mapping {
        fields: vec![FieldMapping::new("name", "who")],
    });
    assert_eq!(
        render(&mapping, &row(Value::Null), Some(RECORD)).unwrap(),
        r#"{"who":"Ada","_record_id":"0192f0c4-7a1e-7c3d-9f00-00000000002a"}"#
    );
    let column = with_field(PayloadSpec::Column {
        column: "doc".into(),
    });
    assert_eq!(
        render(&column, &row(Value::from("{ }")), Some(RECORD)).unwrap(),
        r#"{"_record_id":"0192f0c4-7a1e-7c3d-9f00-00000000002a"}"#
    );
    assert_eq!(
        render(
            &column,
            &row(Value::from(r#"{"a": [1, {"b": 2}]}"#)),
            Some(RECORD)
        )
        .unwrap(),
        r#"{"a":[1,{"b":2}],"_record_id":"0192f0c4-7a1e-7c3d-9f00-00000000002a"}"#
    );
    // An array has no member to add: that row's error, naming the field.
    let error = render(&column, &row(Value::from("[1, 2]")), Some(RECORD)).unwrap_err();
    assert!(
        matches!(&error, RenderErrorKind::NotAnObject { field } if field == "_record_id"),
        "{error:?}"
    );
    assert_eq!(error.name(), "not_an_object");
    // Without a record, the message is as it always was.
    assert_eq!(
        render(&row_mode, &row(Value::Null), None).unwrap(),
        r#"{"id":7,"name":"Ada","doc":null}"#
    );
}

#[test]
fn a_record_id_field_that_cannot_work_is_refused_when_compiled() {
    let template = Payload::compile(&PayloadSpec::template(r#"{"a": 1}"#), schema()).unwrap();
    let errors = template.with_record_id_field("_record_id").unwrap_err();
    assert!(
        matches!(errors.0.as_slice(), [CompileError::RecordIdFieldInTemplate]),
        "{errors:?}"
    );
    assert!(errors.0[0].help().contains("{{ record.id }}"));

    // A column of the row, a mapped name, or nothing at all would make a message with the
    // same member twice, or a member without a name.
    for (spec, field) in [
        (PayloadSpec::Row, "name"),
        (
            PayloadSpec::Mapping {
                fields: vec![FieldMapping::new("name", "who")],
            },
            "who",
        ),
        (PayloadSpec::Row, ""),
    ] {
        let payload = Payload::compile(&spec, schema()).unwrap();
        let errors = payload.with_record_id_field(field).unwrap_err();
        assert!(
            matches!(errors.0.as_slice(), [CompileError::RecordIdFieldTaken { field: f }] if f == field),
            "{errors:?}"
        );
    }
}
