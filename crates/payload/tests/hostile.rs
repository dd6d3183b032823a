//! Hostile values through templates: integers at the edges of 64 bits through every arithmetic
//! filter, loops over ranges a value makes huge, output that grows without end. Nothing panics
//! and nothing runs away: each is a row error that says what happened, or valid JSON.

use std::sync::Arc;
use std::time::Instant;

use kinesync_payload::{
    Event, MAX_LOOP_ITERATIONS, Payload, PayloadSpec, RenderErrorKind, RenderInput, Row, Schema,
    Value,
};
use proptest::prelude::*;

fn schema() -> Arc<Schema> {
    Schema::new(["id", "a", "b"], "id").unwrap()
}

fn render(template: &str, a: Value, b: Value) -> Result<serde_json::Value, RenderErrorKind> {
    let payload = Payload::compile(&PayloadSpec::template(template), schema()).unwrap();
    let row = Row::new(vec![Value::Int(1), a, b]);
    payload
        .render(RenderInput::new(&row, Event::Added))
        .map(|bytes| serde_json::from_slice(&bytes).expect("a rendered message is JSON"))
        .map_err(|e| e.kind)
}

fn template_error(result: Result<serde_json::Value, RenderErrorKind>) -> String {
    match result {
        Err(RenderErrorKind::Template { message, .. }) => message,
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn integer_overflow_in_a_filter_is_the_rows_error_naming_the_filter() {
    let (max, min) = (Value::Int(i64::MAX), Value::Int(i64::MIN));
    for (template, a, b, names) in [
        (
            "{\"v\": {{ row.a | plus: row.b }}}",
            max.clone(),
            Value::Int(1),
            "plus: 1",
        ),
        (
            "{\"v\": {{ row.a | minus: row.b }}}",
            min.clone(),
            Value::Int(1),
            "minus: 1",
        ),
        (
            "{\"v\": {{ row.a | times: row.b }}}",
            max.clone(),
            Value::Int(2),
            "times: 2",
        ),
        // These two panicked inside liquid.
        (
            "{\"v\": {{ row.a | divided_by: row.b }}}",
            min.clone(),
            Value::Int(-1),
            "divided_by: -1",
        ),
        (
            "{\"v\": {{ row.a | modulo: row.b }}}",
            min.clone(),
            Value::Int(-1),
            "modulo: -1",
        ),
        (
            "{\"v\": {{ row.a | abs }}}",
            min.clone(),
            Value::Null,
            "abs",
        ),
    ] {
        let message = template_error(render(template, a, b));
        assert!(
            message.contains(names) && message.contains("beyond the 64-bit integers"),
            "{template}: {message}"
        );
    }
}

#[test]
fn arithmetic_is_liquids_within_the_integers() {
    let cases = [
        (
            "{{ row.a | plus: row.b }}",
            Value::Int(5),
            Value::Int(3),
            "8",
        ),
        (
            "{{ row.a | minus: row.b }}",
            Value::Int(5),
            Value::Int(8),
            "-3",
        ),
        (
            "{{ row.a | times: row.b }}",
            Value::Int(-4),
            Value::Int(3),
            "-12",
        ),
        (
            "{{ row.a | divided_by: row.b }}",
            Value::Int(7),
            Value::Int(2),
            "3",
        ),
        (
            "{{ row.a | divided_by: row.b }}",
            Value::Float(7.0),
            Value::Int(2),
            "3.5",
        ),
        (
            "{{ row.a | modulo: row.b }}",
            Value::Int(7),
            Value::Int(3),
            "1",
        ),
        (
            "{{ row.a | plus: row.b }}",
            Value::Float(1.5),
            Value::Int(2),
            "3.5",
        ),
        ("{{ row.a | abs }}", Value::Int(-9), Value::Null, "9"),
        ("{{ row.a | abs }}", Value::Float(-2.5), Value::Null, "2.5"),
    ];
    for (expression, a, b, want) in cases {
        let template = format!("{{\"v\": {expression}}}");
        let got = render(&template, a, b).unwrap();
        assert_eq!(got["v"].to_string(), want, "{expression}");
    }
    let by_zero = template_error(render(
        "{\"v\": {{ row.a | divided_by: row.b }}}",
        Value::Int(1),
        Value::Int(0),
    ));
    assert!(by_zero.contains("cannot divide by zero"), "{by_zero}");
}

fn edge_integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MIN + 1),
        Just(-1i64),
        Just(0i64),
        Just(1i64),
        Just(i64::MAX - 1),
        Just(i64::MAX),
        any::<i64>(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => edge_integer().prop_map(Value::Int),
        1 => prop_oneof![
            any::<f64>(),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(-0.0),
        ]
        .prop_map(Value::Float),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Every arithmetic filter, on any pair of numbers: valid JSON with the exact integer
    /// result, or a row error; never a panic, never a wrapped integer.
    #[test]
    fn arithmetic_never_panics_nor_wraps(
        filter in prop::sample::select(vec!["plus", "minus", "times", "divided_by", "modulo"]),
        a in number(),
        b in number(),
    ) {
        let template = format!("{{\"v\": {{{{ row.a | {filter}: row.b }}}}}}");
        match render(&template, a.clone(), b.clone()) {
            Ok(message) => {
                if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
                    let exact = match filter {
                        "plus" => x.checked_add(*y),
                        "minus" => x.checked_sub(*y),
                        "times" => x.checked_mul(*y),
                        "divided_by" => x.checked_div(*y),
                        _ => x.checked_rem(*y),
                    };
                    prop_assert_eq!(message["v"].as_i64(), exact, "{} {} {}", x, filter, y);
                }
            }
            Err(RenderErrorKind::Template { message, .. }) => {
                prop_assert!(message.contains(filter), "{}", message);
            }
            // A float result that is not a JSON number (infinity, NaN) is refused as such.
            Err(RenderErrorKind::InvalidJson(_)) => {
                prop_assert!(matches!((&a, &b), (Value::Float(_), _) | (_, Value::Float(_))));
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }
}

#[test]
fn a_range_a_value_makes_huge_stops_at_once() {
    let start = Instant::now();
    let message = template_error(render(
        "{\"v\": [{% for i in (1..row.a) %}{{ i }},{% endfor %}0]}",
        Value::Int(200_000_000),
        Value::Null,
    ));
    assert!(
        message.contains("200000000 numbers") && message.contains(&MAX_LOOP_ITERATIONS.to_string()),
        "{message}"
    );
    assert!(
        start.elapsed().as_secs() < 5,
        "it took {:?}",
        start.elapsed()
    );
    // Within the limit, a range loops as it always did.
    let ok = render(
        "{\"v\": [{% for i in (1..row.a) %}{{ i }},{% endfor %}0]}",
        Value::Int(3),
        Value::Null,
    )
    .unwrap();
    assert_eq!(ok["v"], serde_json::json!([1, 2, 3, 0]));
}

#[test]
fn nested_loops_share_one_budget_per_row() {
    // 1,000 × 1,000 iterations: each loop is small, together they are ten times the limit.
    let message = template_error(render(
        "{\"v\": [{% for i in (1..row.a) %}{% for j in (1..row.a) %}1,{% endfor %}{% endfor %}0]}",
        Value::Int(1000),
        Value::Null,
    ));
    assert!(message.contains("more than 100000 times"), "{message}");
}

#[test]
fn rendering_stops_as_soon_as_the_message_passes_the_largest_record() {
    let payload = Payload::compile(
        &PayloadSpec::template("{\"v\": [{% for i in (1..90000) %}\"{{ row.a }}\",{% endfor %}0]}"),
        schema(),
    )
    .unwrap();
    let row = Row::new(vec![
        Value::Int(7),
        Value::from("x".repeat(500)),
        Value::Null,
    ]);
    let started = Instant::now();
    let error = payload
        .render(RenderInput::new(&row, Event::Added).with_max_bytes(1024 * 1024))
        .unwrap_err();
    assert_eq!(error.primary_key, "7");
    assert_eq!(
        error.kind,
        RenderErrorKind::TooLarge {
            max_bytes: 1024 * 1024
        }
    );
    assert_eq!(error.kind.name(), "record_too_large");
    assert!(started.elapsed().as_secs() < 5);
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edge_integer().prop_map(Value::Int),
        prop_oneof![any::<f64>(), Just(f64::MAX), Just(-0.0)].prop_map(Value::Float),
        prop_oneof![
            Just(String::new()),
            "\\PC{0,12}",
            Just("9223372036854775807".to_owned()),
            Just("-9223372036854775808".to_owned()),
            Just("1e400".to_owned()),
            Just("%FF%".to_owned()),
            Just("<b>x</b>".to_owned()),
        ]
        .prop_map(Value::String),
        prop::collection::vec(edge_integer().prop_map(Value::Int), 0..4).prop_map(Value::Array),
    ]
}

/// Every filter the templates have, with one argument (or none).
const FILTERS: [&str; 51] = [
    "abs",
    "append",
    "at_least",
    "at_most",
    "capitalize",
    "ceil",
    "compact",
    "concat",
    "date",
    "default",
    "divided_by",
    "downcase",
    "escape",
    "escape_once",
    "first",
    "floor",
    "join",
    "last",
    "lstrip",
    "map",
    "minus",
    "modulo",
    "newline_to_br",
    "plus",
    "prepend",
    "remove",
    "remove_first",
    "replace",
    "replace_first",
    "reverse",
    "round",
    "rstrip",
    "size",
    "slice",
    "sort",
    "sort_natural",
    "split",
    "strip",
    "strip_html",
    "strip_newlines",
    "times",
    "truncate",
    "truncatewords",
    "uniq",
    "upcase",
    "url_decode",
    "url_encode",
    "where",
    "json",
    "replace",
    "slice",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any filter, on any value, with any argument: a message that is JSON, or the row's
    /// error; never a panic.
    #[test]
    fn no_filter_panics_on_any_value(
        filter in prop::sample::select(FILTERS.to_vec()),
        arguments in 0usize..3,
        a in any_value(),
        b in any_value(),
    ) {
        let call = match arguments {
            0 => filter.to_owned(),
            1 => format!("{filter}: row.b"),
            _ => format!("{filter}: row.b, row.b"),
        };
        let template = format!("{{\"v\": {{{{ row.a | {call} }}}}}}");
        let Ok(payload) = Payload::compile(&PayloadSpec::template(template.as_str()), schema()) else {
            // A filter given arguments it does not take is refused when the template
            // compiles: not a row's problem.
            return Ok(());
        };
        let row = Row::new(vec![Value::Int(1), a.clone(), b.clone()]);
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            payload.render(RenderInput::new(&row, Event::Added))
        }));
        match rendered {
            Err(_) => prop_assert!(false, "{} panicked on {:?} and {:?}", template, a, b),
            Ok(Ok(message)) => {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&message).is_ok());
            }
            Ok(Err(_)) => {}
        }
    }
}

#[test]
fn unsigned_64_bit_integers_are_sent_digit_for_digit_in_every_mode() {
    let big = Value::from_u64(u64::MAX);
    assert_eq!(big, Value::UInt(u64::MAX));
    assert_eq!(Value::from_u64(5), Value::Int(5), "small ones stay Int");
    let schema = schema();
    let row = Row::new(vec![big.clone(), Value::from_u64(1 << 63), Value::Null]);
    let digits = "18446744073709551615";
    for spec in [
        PayloadSpec::Row,
        PayloadSpec::Mapping {
            fields: vec![
                kinesync_payload::FieldMapping::new("id", "id"),
                kinesync_payload::FieldMapping::new("a", "a"),
            ],
        },
        PayloadSpec::template(
            r#"{"id": {{ row.id }}, "a": {{ row.a }}, "text": "{{ row.id }}", "j": {{ row.id | json }}}"#,
        ),
    ] {
        let payload = Payload::compile(&spec, schema.clone()).unwrap();
        let message = payload
            .render(RenderInput::new(&row, Event::Added))
            .unwrap();
        let text = String::from_utf8(message).unwrap();
        assert!(text.contains(&format!("\"id\":{digits}")), "{text}");
        assert!(text.contains("\"a\":9223372036854775808"), "{text}");
        if text.contains("\"text\"") {
            assert!(text.contains(&format!("\"text\":\"{digits}\"")), "{text}");
        }
    }
    // Through JSON and back (as the state keeps rows), still exact.
    let json = serde_json::to_string(&big).unwrap();
    assert_eq!(json, digits);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), big);
}

fn any_integer() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::from_u64),
        ("-?[1-9][0-9]{20,60}").prop_map(|digits| Value::Decimal(digits.into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// An integer of any size comes out of every mode as the same number, digit for digit
    /// (read back with the exact reader the sources and the state use).
    #[test]
    fn integers_of_any_size_round_trip_through_every_mode(a in any_integer(), b in any_integer()) {
        let schema = schema();
        let row = Row::new(vec![Value::Int(1), a.clone(), b.clone()]);
        let specs = [
            PayloadSpec::Row,
            PayloadSpec::Mapping {
                fields: vec![
                    kinesync_payload::FieldMapping::new("a", "a"),
                    kinesync_payload::FieldMapping::new("b", "b"),
                ],
            },
            PayloadSpec::template(r#"{"a": {{ row.a }}, "b": {{ row.b | json }}}"#),
        ];
        for spec in specs {
            let payload = Payload::compile(&spec, schema.clone()).unwrap();
            let message = payload.render(RenderInput::new(&row, Event::Added)).unwrap();
            let text = String::from_utf8(message).unwrap();
            let Value::Object(object) = Value::from_json_exact(&text).unwrap() else {
                panic!("{text}")
            };
            prop_assert_eq!(object.get("a"), Some(&a), "{}", text);
            prop_assert_eq!(object.get("b"), Some(&b), "{}", text);
        }
    }
}
