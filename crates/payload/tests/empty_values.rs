//! Empty values read as Shopify's Liquid reads them: `first` and `last` of an empty array, an
//! index past an array's end and anything read through nil are nil (not row errors), and
//! `size` counts what is there (characters of a string).

use std::sync::Arc;

use kinesync_payload::{
    Event, Payload, PayloadSpec, RenderErrorKind, RenderInput, Row, Schema, Value,
};
use serde_json::json;

fn schema() -> Arc<Schema> {
    Schema::new(["id", "items", "meta", "name", "note"], "id").unwrap()
}

/// A row whose `items` column holds `items` (a JSON array), `meta` an object and `note` null.
fn row(items: serde_json::Value, meta: serde_json::Value, name: &str) -> Row {
    Row::new(vec![
        Value::Int(1),
        serde_json::from_value(items).unwrap(),
        serde_json::from_value(meta).unwrap(),
        Value::from(name),
        Value::Null,
    ])
}

fn render(source: &str, row: &Row) -> Result<serde_json::Value, RenderErrorKind> {
    Payload::compile(&PayloadSpec::template(source), schema())
        .unwrap_or_else(|e| panic!("{source} should compile: {e}"))
        .render(RenderInput::new(row, Event::Added))
        .map(|bytes| serde_json::from_slice(&bytes).expect("a rendered message is JSON"))
        .map_err(|e| e.kind)
}

const SKUS: &str = r#"{"first": {{ row.items.first.sku }}, "last": {{ row.items.last.sku }}, "second": {{ row.items[1].sku }}, "from_end": {{ row.items[-1].sku }}, "n": {{ row.items.size }}}"#;

#[test]
fn first_last_and_indexes_of_an_empty_array_are_nil() {
    let empty = row(json!([]), json!({}), "");
    assert_eq!(
        render(SKUS, &empty).unwrap(),
        json!({"first": null, "last": null, "second": null, "from_end": null, "n": 0})
    );
    let two = row(json!([{"sku": "a"}, {"sku": "b"}]), json!({}), "");
    assert_eq!(
        render(SKUS, &two).unwrap(),
        json!({"first": "a", "last": "b", "second": "b", "from_end": "b", "n": 2})
    );
    let one = row(json!([{"sku": "a"}]), json!({}), "");
    assert_eq!(render(SKUS, &one).unwrap()["second"], json!(null));
}

#[test]
fn guards_on_empty_values_take_the_else_branch() {
    let source = r#"{"sku": {% if row.items.first %}"{{ row.items.first.sku }}"{% else %}"none"{% endif %}, "has_note": {% if row.note.text %}true{% else %}false{% endif %}}"#;
    assert_eq!(
        render(source, &row(json!([]), json!({}), "")).unwrap(),
        json!({"sku": "none", "has_note": false})
    );
    assert_eq!(
        render(source, &row(json!([{"sku": "z"}]), json!({}), "")).unwrap(),
        json!({"sku": "z", "has_note": false})
    );
}

#[test]
fn anything_read_through_nil_is_nil() {
    let source = r#"{"note": {{ row.note.text }}, "deep": {{ row.note.a.b.first.size }}, "was": {{ previous.name }}, "was_size": {{ previous.items.size }}}"#;
    assert_eq!(
        render(source, &row(json!([]), json!({}), "")).unwrap(),
        json!({"note": null, "deep": null, "was": null, "was_size": null})
    );
}

#[test]
fn size_counts_elements_keys_and_characters() {
    let source = r#"{"items": {{ row.items.size }}, "meta": {{ row.meta.size }}, "name": {{ row.name.size }}, "first_key": {{ row.meta.first | json }}}"#;
    assert_eq!(
        render(
            source,
            &row(json!([1, 2, 3]), json!({"a": 1, "b": 2}), "héllo 🦀")
        )
        .unwrap(),
        json!({"items": 3, "meta": 2, "name": 7, "first_key": ["a", 1]})
    );
    assert_eq!(
        render(source, &row(json!([]), json!({}), "")).unwrap(),
        json!({"items": 0, "meta": 0, "name": 0, "first_key": null})
    );
}

#[test]
fn a_key_an_object_does_not_have_is_still_an_error_naming_the_keys_it_has() {
    let source = r#"{"x": {{ row.meta.colour }}}"#;
    let Err(RenderErrorKind::Template { message, location }) =
        render(source, &row(json!([]), json!({"color": "red"}), ""))
    else {
        panic!("a misspelled key is a row error")
    };
    assert!(
        message.contains(r#"row.meta has no index "colour""#),
        "{message}"
    );
    assert!(
        message.contains("available indexes=color, size"),
        "{message}"
    );
    assert_eq!(location.map(|l| l.column), Some(7));
    // An unknown word after an array is an error too (not nil): it is a typo, not emptiness.
    let Err(RenderErrorKind::Template { message, .. }) = render(
        r#"{"x": {{ row.items.frist }}}"#,
        &row(json!([]), json!({}), ""),
    ) else {
        panic!("an unknown array index is a row error")
    };
    assert!(
        message.contains("available indexes=first, last, size"),
        "{message}"
    );
}
