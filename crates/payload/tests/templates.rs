//! Template mode: JSON safety, scope (`row`, `event`, `previous`), and every compile and
//! render error a template author can meet.

use std::sync::Arc;

use kinesync_payload::{
    CompileError, Escape, Event, Location, Payload, PayloadSpec, RenderErrorKind, RenderInput, Row,
    Schema, Value,
};
use serde_json::json;

fn schema() -> Arc<Schema> {
    Schema::new(
        ["id", "name", "tags", "score", "Col Name", "meta", "note"],
        "id",
    )
    .unwrap()
}

fn row(name: Value) -> Row {
    Row::new(vec![
        Value::Int(7),
        name,
        Value::Array(vec![Value::from("vip"), Value::from("beta \"b\"")]),
        Value::Float(2.5),
        Value::from("spaced"),
        serde_json::from_str(r#"{"a":1,"b":[true,null]}"#).unwrap(),
        Value::Null,
    ])
}

fn compile(source: &str) -> Payload {
    Payload::compile(&PayloadSpec::template(source), schema())
        .unwrap_or_else(|e| panic!("{source} should compile: {e}"))
}

fn render(source: &str, row: &Row) -> serde_json::Value {
    let bytes = compile(source)
        .render(RenderInput::new(row, Event::Added))
        .unwrap();
    serde_json::from_slice(&bytes).expect("rendered output is JSON")
}

fn compile_errors(source: &str) -> Vec<CompileError> {
    Payload::compile(&PayloadSpec::template(source), schema())
        .unwrap_err()
        .0
}

#[test]
fn tags_inside_strings_are_escaped_as_string_content() {
    let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \u{0} é 日本 🦀 \u{2028}";
    let out = render(
        r#"{"name": "Hi {{ row.name }}!"}"#,
        &row(Value::from(nasty)),
    );
    assert_eq!(out, json!({ "name": format!("Hi {nasty}!") }));
}

#[test]
fn tags_outside_strings_are_written_as_json_values() {
    let out = render(
        r#"{"id": {{ row.id }}, "name": {{ row.name }}, "tags": {{ row.tags }}, "score": {{ row.score }}, "meta": {{ row.meta }}, "note": {{ row.note }}}"#,
        &row(Value::from("A \"B\"")),
    );
    assert_eq!(
        out,
        json!({"id": 7, "name": "A \"B\"", "tags": ["vip", "beta \"b\""], "score": 2.5,
               "meta": {"a": 1, "b": [true, null]}, "note": null})
    );
}

#[test]
fn null_inside_a_string_is_empty_and_arrays_inside_strings_are_json_text() {
    let out = render(
        r#"{"n": "[{{ row.note }}]", "t": "{{ row.tags }}"}"#,
        &row(Value::Null),
    );
    assert_eq!(out, json!({"n": "[]", "t": "[\"vip\",\"beta \\\"b\\\"\"]"}));
}

#[test]
fn large_integers_and_non_finite_floats_stay_valid_json() {
    for (value, expected) in [
        (Value::Int(i64::MAX), json!(i64::MAX)),
        (Value::Int(i64::MIN), json!(i64::MIN)),
        (Value::Float(f64::NAN), json!("NaN")),
        (Value::Float(f64::INFINITY), json!("Infinity")),
        (Value::Float(f64::NEG_INFINITY), json!("-Infinity")),
        (Value::Float(1e300), json!(1e300)),
        (Value::Float(-0.0), json!(-0.0)),
    ] {
        let out = render(
            r#"{"v": {{ row.name }}, "s": "{{ row.name }}"}"#,
            &row(value.clone()),
        );
        assert_eq!(out["v"], expected, "{value:?} as a value");
        let text = out["s"].as_str().unwrap();
        match (&value, &expected) {
            (_, serde_json::Value::String(name)) => assert_eq!(text, name),
            (Value::Float(f), _) => assert_eq!(text.parse::<f64>().unwrap().to_bits(), f.to_bits()),
            (_, number) => assert_eq!(text, number.to_string()),
        }
    }
}

#[test]
fn the_json_filter_writes_json_text_explicitly() {
    let out = render(
        r#"{"raw": {{ row.meta | json }}, "str": "{{ row.meta | json }}", "name": {{ row.name | json }}}"#,
        &row(Value::from("x\"y")),
    );
    assert_eq!(
        out,
        json!({"raw": {"a": 1, "b": [true, null]}, "str": "{\"a\":1,\"b\":[true,null]}", "name": "x\"y"})
    );
}

#[test]
fn standard_filters_work_and_their_output_is_made_safe() {
    let out = render(
        r#"{"up": "{{ row.name | upcase }}", "joined": {{ row.tags | join: ", " }}, "size": {{ row.tags | size }}, "d": {{ row.note | default: "none" }}}"#,
        &row(Value::from("ada \"a\"")),
    );
    assert_eq!(
        out,
        json!({"up": "ADA \"A\"", "joined": "vip, beta \"b\"", "size": 2, "d": "none"})
    );
}

#[test]
fn column_names_with_spaces_are_reached_with_brackets() {
    let out = render(
        r#"{"c": "{{ row['Col Name'] }}", "d": {{ row["Col Name"] }}}"#,
        &row(Value::Null),
    );
    assert_eq!(out, json!({"c": "spaced", "d": "spaced"}));
}

#[test]
fn control_flow_and_loops_render_like_liquid() {
    let source = r#"{"adult": {% if row.score >= 2 %}true{% else %}false{% endif %}, "tags": [{% for t in row.tags %}"{{ t }}-{{ forloop.index }}"{% unless forloop.last %},{% endunless %}{% endfor %}], "none": [{% for t in row.note %}1{% else %}0{% endfor %}], "range": [{% for i in (1..3) reversed %}{{ i }}{% unless forloop.last %},{% endunless %}{% endfor %}], "lim": [{% for t in row.tags limit: 1 offset: 1 %}"{{ t }}"{% endfor %}], "br": [{% for t in row.tags %}{% if forloop.first %}{{ t }}{% break %}{% endif %}{% endfor %}]}"#;
    let out = render(source, &row(Value::Null));
    assert_eq!(
        out,
        json!({"adult": true, "tags": ["vip-1", "beta \"b\"-2"], "none": [0], "range": [3, 2, 1],
               "lim": ["beta \"b\""], "br": ["vip"]})
    );
}

#[test]
fn assign_capture_and_counters_work() {
    let source = r#"{% assign n = row.name | downcase %}{% capture c %}{{ row.id }}-x{% endcapture %}{"n": "{{ n }}", "c": {{ c }}, "i": [{% increment k %},{% increment k %}]}"#;
    let out = render(source, &row(Value::from("ADA")));
    assert_eq!(out, json!({"n": "ada", "c": "7-x", "i": [0, 1]}));
}

#[test]
fn event_and_previous_are_in_scope() {
    let payload = compile(
        r#"{"event": "{{ event }}", "was": {% if previous %}"{{ previous.name }}"{% else %}null{% endif %}, "now": "{{ row.name }}"}"#,
    );
    let old = row(Value::from("Ada"));
    let new = row(Value::from("Grace"));
    let changed = payload
        .render(RenderInput::new(&new, Event::Changed).with_previous(&old))
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&changed).unwrap(),
        json!({"event": "changed", "was": "Ada", "now": "Grace"})
    );
    let added = payload
        .render(RenderInput::new(&new, Event::Added))
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&added).unwrap(),
        json!({"event": "added", "was": null, "now": "Grace"})
    );
    let removed = payload
        .render(RenderInput::new(&old, Event::Removed))
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&removed).unwrap()["event"],
        "removed"
    );
}

#[test]
fn output_is_compact_whatever_the_template_layout() {
    let source = "{\n  \"id\": {{ row.id }},\n  \"name\": \"a  b {{ row.name }}\",\n  \"tags\": [ {% for t in row.tags %} \"{{ t }}\" {% unless forloop.last %}, {% endunless %}{% endfor %} ]\n}\n";
    let bytes = compile(source)
        .render(RenderInput::new(&row(Value::from("c  d")), Event::Added))
        .unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        r#"{"id":7,"name":"a  b c  d","tags":["vip","beta \"b\""]}"#
    );
}

#[test]
fn escape_none_renders_plain_liquid_and_still_validates() {
    let spec = PayloadSpec::Template {
        source: r#"{"name": "{{ row.name }}", "n": {{ row.id }} }"#.into(),
        escape: Escape::None,
    };
    let payload = Payload::compile(&spec, schema()).unwrap();
    let ok = payload
        .render(RenderInput::new(&row(Value::from("plain")), Event::Added))
        .unwrap();
    assert_eq!(ok, br#"{"name":"plain","n":7}"#);
    let err = payload
        .render(RenderInput::new(
            &row(Value::from("a \"quote")),
            Event::Added,
        ))
        .unwrap_err();
    assert_eq!(err.primary_key, "7");
    let RenderErrorKind::InvalidJson(invalid) = &err.kind else {
        panic!("{err}")
    };
    assert_eq!(invalid.offset, 13, "{invalid:?}");
    assert!(invalid.excerpt.contains("a \"quote"), "{invalid:?}");
    assert!(
        err.to_string()
            .starts_with("row 7: output is not valid JSON at byte 13"),
        "{err}"
    );
}

#[test]
fn invalid_output_is_a_row_error_naming_the_primary_key_offset_and_excerpt() {
    let payload = compile(r#"{"a": {{ row.id }} {{ row.id }}}"#);
    let err = payload
        .render(RenderInput::new(&row(Value::Null), Event::Added))
        .unwrap_err();
    assert_eq!(err.primary_key, "7");
    let RenderErrorKind::InvalidJson(invalid) = err.kind else {
        panic!()
    };
    assert_eq!(invalid.offset, 8);
    assert_eq!(invalid.excerpt, r#"{"a": 7 7}"#);
}

/// The template error of rendering `source` over the test row.
fn template_error(source: &str, escape: Escape) -> (String, Option<Location>, String) {
    let spec = PayloadSpec::Template {
        source: source.to_owned(),
        escape,
    };
    let err = Payload::compile(&spec, schema())
        .unwrap_or_else(|e| panic!("{source} should compile: {e}"))
        .render(RenderInput::new(&row(Value::from("Ada")), Event::Added))
        .unwrap_err();
    let text = err.to_string();
    match err.kind {
        RenderErrorKind::Template { message, location } => (message, location, text),
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn render_errors_say_what_went_wrong_and_where() {
    // A key a JSON column does not have: the path, and the keys it has.
    let source = "{\n  \"id\": {{ row.id }},\n  \"x\": {{ row.meta.nope }}\n}";
    for escape in [Escape::Json, Escape::None] {
        let (message, location, text) = template_error(source, escape);
        assert!(
            message.contains(r#"row.meta has no index "nope""#),
            "{message}"
        );
        assert!(
            message.contains("available indexes=a, b, size"),
            "{message}"
        );
        let location = location.expect("a render error has a place");
        assert_eq!((location.line, location.column), (3, 8), "{escape:?}");
        assert!(
            text.starts_with("row 7: template error at line 3, column 8: row.meta has no index"),
            "{text}"
        );
    }
    let (message, location, _) = template_error(r#"{"x": {{ nope }}}"#, Escape::Json);
    assert!(
        message.contains("Unknown variable; requested variable=nope"),
        "{message}"
    );
    assert_eq!(location.map(|l| l.column), Some(7));
}

#[test]
fn render_errors_point_at_the_statement_that_failed_inside_blocks_and_loops() {
    // A filter failing inside a loop, after other statements rendered.
    let (message, location, _) = template_error(
        "{\"t\": [\n{%- for t in row.tags %}\n  {{ forloop.index }},\n  {{ row.id | divided_by: 0 }}{% unless forloop.last %},{% endunless %}\n{%- endfor %}]}",
        Escape::Json,
    );
    assert!(message.contains("divided_by"), "{message}");
    let location = location.unwrap();
    assert_eq!((location.line, location.column), (4, 3), "{message}");
    // A condition: the `if` that holds it (an `elsif`'s condition is reported at its `if`).
    let (_, location, _) = template_error(
        "{\"a\": 1,\n \"b\": {% if row.meta.nope > 1 %}1{% else %}2{% endif %}}",
        Escape::Json,
    );
    let location = location.unwrap();
    assert_eq!((location.line, location.column), (2, 7));
    // An assignment's filter.
    let (_, location, _) = template_error(
        "{% assign n = row.id | times: 9223372036854775807 %}{\"n\": {{ n }}}",
        Escape::Json,
    );
    assert_eq!(location.map(|l| (l.line, l.column)), Some((1, 1)));
    // Tags inside comments and raw text are not statements: they do not shift the places of
    // those after them.
    let source = "{% comment %}{% assign x = 1 %}{{ y }}{% endcomment %}{% raw %}{{ z }}{% endraw %}{% case row.id %}{% when 7 %}{\"x\": {{ row.meta.nope }}}{% endcase %}";
    for escape in [Escape::Json, Escape::None] {
        let (_, location, _) = template_error(source, escape);
        assert_eq!(
            location.map(|l| l.offset),
            source.find("{{ row.meta.nope"),
            "{escape:?}"
        );
    }
}

#[test]
fn unknown_columns_are_found_statically_with_line_and_column() {
    let errors = compile_errors(
        "{\n  \"a\": {{ row.nmae }},\n  \"b\": {% if previous.scroe > 1 %}1{% else %}2{% endif %},\n  \"c\": \"{{ row['Col name'] }}\"\n}",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    let CompileError::UnknownColumn {
        location,
        scope,
        name,
        suggestion,
    } = &errors[0]
    else {
        panic!()
    };
    assert_eq!((location.line, location.column), (2, 15));
    assert_eq!(
        (scope.as_str(), name.as_str(), suggestion.as_deref()),
        ("row", "nmae", Some("name"))
    );
    let CompileError::UnknownColumn {
        location,
        scope,
        suggestion,
        ..
    } = &errors[1]
    else {
        panic!()
    };
    assert_eq!(
        (location.line, location.column, scope.as_str()),
        (3, 23, "previous")
    );
    assert_eq!(suggestion.as_deref(), Some("score"));
    let CompileError::UnknownColumn {
        location,
        suggestion,
        ..
    } = &errors[2]
    else {
        panic!()
    };
    assert_eq!((location.line, location.column), (4, 17));
    assert_eq!(suggestion.as_deref(), Some("Col Name"));
}

#[test]
fn unknown_filters_are_found_with_their_place_and_a_suggestion() {
    let errors =
        compile_errors("{\"a\": \"{{ row.name | upcse }}\", \"b\": {{ row.id | nosuch }}}");
    assert_eq!(errors.len(), 2, "{errors:?}");
    let CompileError::UnknownFilter {
        location,
        name,
        suggestion,
    } = &errors[0]
    else {
        panic!()
    };
    assert_eq!(
        (location.line, location.column, name.as_str()),
        (1, 22, "upcse")
    );
    assert_eq!(suggestion.as_deref(), Some("upcase"));
    assert!(matches!(
        &errors[1],
        CompileError::UnknownFilter {
            suggestion: None,
            ..
        }
    ));
}

#[test]
fn syntax_errors_carry_line_and_column() {
    for (source, line, column) in [
        ("{\"a\": {{ row.id }", 1, 7),
        ("{\"a\":\n  {% if row.id %}1{% endif }", 2, 19),
        ("{\"a\": {% iff row.id %}1{% endif %}}", 1, 10),
        ("{\"a\": {{ row.id | plus }}}", 1, 19),
        ("{\"a\": {% for t in row.tags %}1}", 1, 7),
        ("{\"a\": {% raw %}1}", 1, 7),
    ] {
        let errors = compile_errors(source);
        let Some(CompileError::TemplateSyntax { location, message }) = errors.first() else {
            panic!("{source}: {errors:?}")
        };
        assert_eq!(
            (location.line, location.column),
            (line, column),
            "{source}: {message}"
        );
        assert!(!message.is_empty());
    }
}

#[test]
fn an_unterminated_string_is_a_compile_error_with_a_way_out() {
    let errors = compile_errors("{\"a\": \"{{ row.id }}}");
    let [CompileError::UnterminatedString { location }] = errors.as_slice() else {
        panic!("{errors:?}")
    };
    assert_eq!((location.line, location.column), (1, 7));
    assert!(errors[0].help().contains("escape = \"none\""));
}

#[test]
fn every_problem_is_reported_at_once_and_rendered_like_a_compiler() {
    let source = "{\"a\": {{ row.nmae }},\n \"b\": {{ row.id | nosuch }}}";
    let errors = Payload::compile(&PayloadSpec::template(source), schema()).unwrap_err();
    assert_eq!(errors.errors().len(), 2);
    let report = errors.render("user.liquid", Some(source), 0, 0);
    assert_eq!(
        report,
        "error: `row` has no column `nmae`; did you mean \"name\"?\n --> user.liquid:1:14\n  |\n1 | {\"a\": {{ row.nmae }},\n  |              ^\n  = help: use `name`; column names are case-sensitive; for names with spaces write row['nmae']\n\
         error: unknown filter `nosuch`\n --> user.liquid:2:19\n  |\n2 |  \"b\": {{ row.id | nosuch }}}\n  |                   ^\n  = help: use one of Liquid's standard filters (upcase, default, date, ...) or `json`\n"
    );
}

#[test]
fn plain_liquid_numbers_no_double_can_hold_are_row_errors_not_bad_messages() {
    // liquid writes f64::MAX in plain decimal with rounding that overflows a double; a
    // consumer's parser would refuse the message, so kinesync refuses it first.
    let spec = PayloadSpec::Template {
        source: "[{{ row.score }}]".into(),
        escape: Escape::None,
    };
    let payload = Payload::compile(&spec, schema()).unwrap();
    let mut huge = row(Value::Null);
    let mut values = huge.values().to_vec();
    values[3] = Value::Float(f64::MAX);
    huge = Row::new(values);
    match payload.render(RenderInput::new(&huge, Event::Added)) {
        Ok(bytes) => {
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("whatever renders, decodes");
        }
        Err(e) => assert_eq!(e.kind.name(), "invalid_json", "{e}"),
    }
    // JSON-safe mode writes the same value exactly.
    let safe = Payload::compile(&PayloadSpec::template("[{{ row.score }}]"), schema()).unwrap();
    let bytes = safe.render(RenderInput::new(&huge, Event::Added)).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()[0].as_f64(),
        Some(f64::MAX)
    );
}
