//! Step 3 of compiling a JSON-safe template: for each output tag, whether it stands inside a
//! JSON string of the template's literal text; then the source rewritten so that each output
//! tag becomes the tag that writes its value for that place (see `json_output.rs`).
//!
//! Where it sits: segments → **contexts → rewritten source** → parsed by liquid into the
//! compiled payload. Only `escape = "json"` templates come here; plain ones are parsed as
//! written.

use super::json_output::OutputContext;
use super::lex::{Kind, Segment, Tok, tokens};
use crate::error::{CompileError, Location};
use crate::json;
use crate::json_strings::{Place, StringScanner};

/// Follows the literal text as JSON and gives, for each output segment in order, whether it
/// stands inside a string; and whether any literal text has whitespace outside strings (the
/// only whitespace a JSON-safe template's output can have there).
pub(super) fn json_contexts(
    source: &str,
    segments: &[Segment],
    errors: &mut Vec<CompileError>,
) -> (Vec<OutputContext>, json::Whitespace) {
    let mut contexts = Vec::new();
    let mut whitespace = json::Whitespace::Absent;
    // One scanner across all the text segments: a string opened before a tag is still open
    // after it.
    let (mut strings, mut opened_at) = (StringScanner::default(), 0);
    for segment in segments {
        match segment.kind {
            Kind::Text => {
                for (i, &b) in source.as_bytes()[segment.start..segment.end]
                    .iter()
                    .enumerate()
                {
                    match strings.step(b) {
                        Place::Opening => opened_at = segment.start + i,
                        Place::Outside if b.is_ascii_whitespace() => {
                            whitespace = json::Whitespace::Possible;
                        }
                        Place::Outside | Place::Inside => {}
                    }
                }
            }
            Kind::Output => {
                let context = if strings.in_string() {
                    OutputContext::StringContent
                } else if last_filter(source, segment) == Some("json") {
                    OutputContext::Raw
                } else {
                    OutputContext::Value
                };
                contexts.push(context);
            }
            Kind::Tag | Kind::Comment => {}
        }
    }
    if strings.in_string() {
        errors.push(CompileError::UnterminatedString {
            location: Location::at(source, opened_at),
        });
    }
    (contexts, whitespace)
}

/// The name of an output tag's last filter, if it has filters.
fn last_filter<'s>(source: &'s str, segment: &Segment) -> Option<&'s str> {
    let toks = tokens(source, segment.inner_start, segment.inner_end);
    let bar = toks.iter().rposition(|(t, _)| *t == Tok::Punct(b'|'))?;
    match toks.get(bar + 1) {
        Some((Tok::Ident(name), _)) => Some(name),
        _ => None,
    }
}

/// The text liquid parses: the source with each output tag turned into the tag that writes
/// it (`json_output.rs`): with `contexts` (JSON-safe mode) the JSON-writing tag of its context,
/// without, the plain one; and each comment emptied (liquid parses the tags inside a comment,
/// which would take statements' places, see `location.rs`).
pub(super) fn rewrite(
    source: &str,
    segments: &[Segment],
    contexts: Option<&[OutputContext]>,
) -> String {
    let mut out = String::with_capacity(source.len() + segments.len() * 8);
    let mut contexts = contexts.map(|c| c.iter());
    for segment in segments {
        let whole = &source[segment.start..segment.end];
        let (trim_left, trim_right) = (
            whole.starts_with("{%-") || whole.starts_with("{{-"),
            whole.ends_with("-%}") || whole.ends_with("-}}"),
        );
        match segment.kind {
            Kind::Output => {
                let context = match contexts.as_mut() {
                    Some(contexts) => *contexts.next().expect("one context per output tag"),
                    None => OutputContext::Plain,
                };
                out.push_str(if trim_left { "{%- " } else { "{% " });
                out.push_str(context.tag());
                out.push(' ');
                out.push_str(segment.inner(source).trim());
                out.push_str(if trim_right { " -%}" } else { " %}" });
            }
            Kind::Comment => {
                out.push_str(if trim_left {
                    "{%- comment %}"
                } else {
                    "{% comment %}"
                });
                out.push_str(if trim_right {
                    "{% endcomment -%}"
                } else {
                    "{% endcomment %}"
                });
            }
            Kind::Text | Kind::Tag => out.push_str(whole),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::lex::lex;

    #[test]
    fn rewrite_chooses_the_tag_by_json_context() {
        let source =
            r#"{"a": "{{- row.a }} \"{{ row.b }}", "b": {{ row.b -}}, "c": {{ row.c | json }}}"#;
        let segments = lex(source).unwrap();
        let mut errors = Vec::new();
        let (contexts, whitespace) = json_contexts(source, &segments, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(whitespace, json::Whitespace::Possible);
        assert_eq!(
            rewrite(source, &segments, Some(&contexts)),
            r#"{"a": "{%- _kj_str row.a %} \"{% _kj_str row.b %}", "b": {% _kj_value row.b -%}, "c": {% _kj_raw row.c | json %}}"#
        );
    }
}
