//! kinesync renders Liquid with its own `for` block and its own frames (so rows are read in
//! place). These tests hold it to the `liquid` crate's own output, in plain (`escape = "none"`)
//! mode, over generated loops, conditions, assigns and filters.

use kinesync_payload::{Escape, Event, Payload, PayloadSpec, RenderInput, Row, Schema, Value};
use liquid_core::ValueView;
use proptest::prelude::*;

fn kinesync_render(
    source: &str,
    row: &Row,
    schema: &std::sync::Arc<Schema>,
) -> Result<String, String> {
    let spec = PayloadSpec::Template {
        source: source.to_owned(),
        escape: Escape::None,
    };
    let payload = Payload::compile(&spec, schema.clone()).map_err(|e| e.to_string())?;
    payload
        .render(RenderInput::new(row, Event::Added))
        .map(|b| String::from_utf8(b).unwrap())
        .map_err(|e| e.to_string())
}

fn liquid_render(source: &str, row: &Row, schema: &Schema) -> Result<String, String> {
    let template = liquid::ParserBuilder::with_stdlib()
        .build()
        .unwrap()
        .parse(source)
        .map_err(|e| e.to_string())?;
    let mut object = liquid::Object::new();
    for (name, value) in schema.columns().iter().zip(row.values()) {
        object.insert(name.clone().into(), value.to_value());
    }
    let mut globals = liquid::Object::new();
    globals.insert("row".into(), liquid::model::Value::Object(object));
    globals.insert("event".into(), liquid::model::Value::scalar("added"));
    globals.insert("previous".into(), liquid::model::Value::Nil);
    template.render(&globals).map_err(|e| e.to_string())
}

fn body() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "{{ t }}",
        "{{t}}",
        "{{ forloop.index }}",
        "{{ forloop.index0 }}:{{ forloop.rindex }}:{{ forloop.rindex0 }}:{{ forloop.length }}",
        "{% if forloop.first %}F{% endif %}{% if forloop.last %}L{% endif %}",
        "{% unless forloop.last %},{% endunless %}",
        "{% if t == 2 %}{% break %}{% endif %}{{ t }}",
        "{% if t == 1 %}{% continue %}{% endif %}{{ t }}",
        "{% for u in row.xs limit: 2 %}{{ forloop.parentloop.index }}{{ u }}{% endfor %}",
        "{% assign last = t %}",
        "{{ t | plus: 10 }}",
        "{% increment n %}",
        "{{ row.name | upcase }}",
    ])
    .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn loops_render_as_liquid_does(
        xs in prop::collection::vec(0i64..4, 0..6),
        parts in prop::collection::vec(body(), 1..4),
        offset in prop::option::of(0usize..4),
        take in prop::option::of(0usize..6),
        reversed in any::<bool>(),
        with_else in any::<bool>(),
    ) {
        // liquid-rust pads `limit:` past the end of the list with nils; kinesync stops at the
        // end, as Shopify Liquid does. Compare only where the two agree by definition.
        let available = xs.len().saturating_sub(offset.unwrap_or(0));
        prop_assume!(take.is_none_or(|l| l <= available));
        let mut args = String::new();
        if let Some(o) = offset { args.push_str(&format!(" offset: {o}")); }
        if let Some(l) = take { args.push_str(&format!(" limit: {l}")); }
        if reversed { args.push_str(" reversed"); }
        let otherwise = if with_else { "{% else %}E" } else { "" };
        // The whole output sits in one JSON string, so kinesync accepts exactly the text
        // liquid makes, and the two can be compared byte for byte.
        let source = format!(
            "{{% assign last = 'none' %}}\"[{{% for t in row.xs{args} %}}{}{otherwise}{{% endfor %}}]{{{{ last }}}}\"",
            parts.concat()
        );
        let schema = Schema::new(["id", "xs", "name"], "id").unwrap();
        let row = Row::new(vec![
            Value::Int(1),
            Value::Array(xs.iter().map(|&x| Value::Int(x)).collect()),
            Value::from("ada"),
        ]);
        let theirs = liquid_render(&source, &row, &schema);
        let ours = kinesync_render(&source, &row, &schema);
        match (&theirs, &ours) {
            (Ok(text), Ok(ours)) => prop_assert_eq!(text, ours),
            (Err(_), Err(_)) => return Err(TestCaseError::reject("both refuse this template")),
            _ => prop_assert!(false, "liquid: {:?}\nkinesync: {:?}\nsource: {}", theirs, ours, source),
        }
    }
}

/// A statement written with or without whitespace control on either side.
fn trimmed(open: &str, inner: &str, close: &str, left: bool, right: bool) -> String {
    let l = if left { "-" } else { "" };
    let r = if right { "-" } else { "" };
    format!("{open}{l} {inner} {r}{close}")
}

/// One piece of a template: spaces, then a statement, then spaces.
fn trimmed_piece() -> impl Strategy<Value = String> {
    let spaces = prop::sample::select(vec!["", " ", "   "]);
    (
        spaces.clone(),
        0..5usize,
        prop::array::uniform6(any::<bool>()),
        spaces,
    )
        .prop_map(|(before, statement, t, after)| {
            let statement = match statement {
                0 => trimmed("{{", "row.name", "}}", t[0], t[1]),
                1 => format!(
                    "{}{}x{}",
                    trimmed("{%", "if row.id > 0", "%}", t[0], t[1]),
                    if t[4] { " " } else { "" },
                    trimmed("{%", "endif", "%}", t[2], t[3])
                ),
                2 => format!(
                    "{} {}",
                    trimmed("{%", "assign a = row.id", "%}", t[0], t[1]),
                    trimmed("{{", "a", "}}", t[2], t[3])
                ),
                3 => format!(
                    "{} {} {}",
                    trimmed("{%", "for x in row.xs", "%}", t[0], t[1]),
                    trimmed("{{", "x", "}}", t[2], t[3]),
                    trimmed("{%", "endfor", "%}", t[4], t[5])
                ),
                _ => format!(
                    "{} a {} b {}",
                    trimmed("{%", "case row.id", "%}{% when 1 %}", t[0], t[1]),
                    trimmed("{%", "else", "%}", t[2], t[3]),
                    trimmed("{%", "endcase", "%}", t[4], t[5])
                ),
            };
            format!("{before}{statement}{after}")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// kinesync writes a marker before each statement to say where a row's rendering failed;
    /// with whitespace control on either side, the output is still liquid's, space for space.
    #[test]
    fn whitespace_control_trims_as_liquid_does(parts in prop::collection::vec(trimmed_piece(), 1..5)) {
        let source = format!("\"{}\"", parts.concat());
        let schema = Schema::new(["id", "xs", "name"], "id").unwrap();
        let row = Row::new(vec![
            Value::Int(1),
            Value::Array(vec![Value::Int(3), Value::Int(4)]),
            Value::from("ada"),
        ]);
        let theirs = liquid_render(&source, &row, &schema);
        let ours = kinesync_render(&source, &row, &schema);
        prop_assert_eq!(theirs, ours, "source: {}", source);
    }
}

#[test]
fn objects_iterate_as_key_value_pairs_in_their_order_and_ranges_count() {
    // (liquid's own objects are hash maps, so only kinesync promises the order.)
    let schema = Schema::new(["id", "o"], "id").unwrap();
    let row = Row::new(vec![
        Value::Int(1),
        serde_json::from_str(r#"{"a": 1, "b": 2}"#).unwrap(),
    ]);
    let source = r#"[{% for p in row.o %}["{{ p[0] }}", {{ p[1] }}],{% endfor %}{% for i in (2..4) %}{{ i }},{% endfor %}0]"#;
    assert_eq!(
        kinesync_render(source, &row, &schema).unwrap(),
        r#"[["a",1],["b",2],2,3,4,0]"#
    );
}
