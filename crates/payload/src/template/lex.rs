//! Step 1 of compiling a template: splitting its source into segments (literal text, output
//! tags, tags, comments), and the inside of a tag into tokens, all with byte offsets.
//!
//! Where it sits: template source → **segments** → static checks and the JSON-safety pass →
//! compiled payload. Nothing here knows about JSON or the schema. The offsets are kept so that
//! every later complaint can point at a line and column of the author's text.

use crate::error::{CompileError, Location};

/// What a segment of the source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// Literal text (also the body of `{% raw %}`).
    Text,
    /// `{{ ... }}`.
    Output,
    /// `{% name ... %}`.
    Tag,
    /// A whole `{% comment %}...{% endcomment %}`: no output, nothing to check.
    Comment,
}

/// One piece of the source, by byte offsets into it.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) kind: Kind,
    /// The whole segment, delimiters included.
    pub(super) start: usize,
    pub(super) end: usize,
    /// Between the delimiters and their `-` trim markers.
    pub(super) inner_start: usize,
    pub(super) inner_end: usize,
}

impl Segment {
    pub(super) fn inner<'s>(&self, source: &'s str) -> &'s str {
        &source[self.inner_start..self.inner_end]
    }

    /// The tag's name (`if`, `endfor`, ...): the first word inside a tag.
    pub(super) fn tag_name<'s>(&self, source: &'s str) -> &'s str {
        let inner = self.inner(source).trim_start();
        let end = inner
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        &inner[..end]
    }
}

/// Splits `source` into segments, in order, covering all of it. Fails only on a tag or
/// output tag that is never closed, or a `raw` / `comment` block without its end tag.
pub(super) fn lex(source: &str) -> Result<Vec<Segment>, CompileError> {
    let bytes = source.as_bytes();
    let mut segments = Vec::new();
    let mut pos = 0;
    let text = |start: usize, end: usize| Segment {
        kind: Kind::Text,
        start,
        end,
        inner_start: start,
        inner_end: end,
    };
    while pos < bytes.len() {
        let Some(open) = find_open(bytes, pos) else {
            segments.push(text(pos, bytes.len()));
            break;
        };
        if open > pos {
            segments.push(text(pos, open));
        }
        let segment = delimited(source, open)?;
        pos = segment.end;
        let name = if segment.kind == Kind::Tag {
            segment.tag_name(source)
        } else {
            ""
        };
        match name {
            "raw" => {
                let (body_end, close) =
                    find_end_tag(source, pos, "raw", "endraw").ok_or_else(|| {
                        CompileError::unclosed_block(source, segment.start, "raw", "endraw")
                    })?;
                segments.push(segment);
                segments.push(text(pos, body_end));
                segments.push(close.clone());
                pos = close.end;
            }
            "comment" => {
                let (_, close) =
                    find_end_tag(source, pos, "comment", "endcomment").ok_or_else(|| {
                        CompileError::unclosed_block(source, segment.start, "comment", "endcomment")
                    })?;
                segments.push(Segment {
                    kind: Kind::Comment,
                    end: close.end,
                    ..segment
                });
                pos = close.end;
            }
            _ => segments.push(segment),
        }
    }
    Ok(segments)
}

/// The next `{{` or `{%` at or after `from`.
fn find_open(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'{' && (bytes[i + 1] == b'{' || bytes[i + 1] == b'%'))
}

/// The output tag or tag opening at `open`, up to its closing delimiter (quotes respected).
fn delimited(source: &str, open: usize) -> Result<Segment, CompileError> {
    let bytes = source.as_bytes();
    let is_output = bytes[open + 1] == b'{';
    let close = if is_output { b'}' } else { b'%' };
    let mut quote = None;
    let mut i = open + 2;
    while i + 1 < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == close && bytes[i + 1] == b'}' => {
                let mut inner_start = open + 2;
                let mut inner_end = i;
                if bytes.get(inner_start) == Some(&b'-') {
                    inner_start += 1;
                }
                if inner_end > inner_start && bytes[inner_end - 1] == b'-' {
                    inner_end -= 1;
                }
                return Ok(Segment {
                    kind: if is_output { Kind::Output } else { Kind::Tag },
                    start: open,
                    end: i + 2,
                    inner_start,
                    inner_end,
                });
            }
            None => {}
        }
        i += 1;
    }
    Err(CompileError::TemplateSyntax {
        location: Location::at(source, open),
        message: format!(
            "this {} is never closed with `{}`",
            if is_output {
                "output tag `{{`"
            } else {
                "tag `{%`"
            },
            if is_output { "}}" } else { "%}" }
        ),
    })
}

/// Finds the tag closing a `raw` or `comment` body that starts at `from`, counting nested
/// openings of the same block. Gives the body's end and the closing tag.
fn find_end_tag(source: &str, from: usize, open: &str, close: &str) -> Option<(usize, Segment)> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut pos = from;
    while let Some(at) =
        (pos..bytes.len().saturating_sub(1)).find(|&i| bytes[i] == b'{' && bytes[i + 1] == b'%')
    {
        let Ok(tag) = delimited(source, at) else {
            return None;
        };
        let name = tag.tag_name(source);
        if name == close {
            if depth == 0 {
                return Some((at, tag));
            }
            depth -= 1;
        } else if name == open && open != "raw" {
            depth += 1;
        }
        pos = tag.end;
    }
    None
}

/// Every filter name used in the template, with its byte offset.
pub(super) fn filter_offsets<'s>(
    source: &'s str,
    segments: &[Segment],
) -> impl Iterator<Item = (&'s str, usize)> {
    segments
        .iter()
        .filter(|s| matches!(s.kind, Kind::Output | Kind::Tag))
        .flat_map(move |s| {
            let toks = tokens(source, s.inner_start, s.inner_end);
            toks.windows(2)
                .filter_map(|w| match (w[0].0, w[1]) {
                    (Tok::Punct(b'|'), (Tok::Ident(name), at)) => Some((name, at)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
}

// ---- Inside a tag ----

/// A token inside a tag, as far as kinesync's checks need to tell them apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Tok<'a> {
    Ident(&'a str),
    Str(&'a str),
    Punct(u8),
    Other,
}

/// Splits the inside of a tag into liquid's tokens, each with its byte offset in `source`.
pub(super) fn tokens(source: &str, start: usize, end: usize) -> Vec<(Tok<'_>, usize)> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = start;
    while i < end {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b.is_ascii_alphabetic() || b == b'_' {
            let s = i;
            while i < end
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
            {
                i += 1;
            }
            if i < end && bytes[i] == b'?' {
                i += 1;
            }
            out.push((Tok::Ident(&source[s..i]), s));
        } else if b == b'"' || b == b'\'' {
            let s = i;
            i += 1;
            while i < end && bytes[i] != b {
                i += 1;
            }
            out.push((Tok::Str(&source[s + 1..i.min(end)]), s));
            i += 1;
        } else if b.is_ascii_digit() {
            let s = i;
            while i < end
                && (bytes[i].is_ascii_digit()
                    || (bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                i += 1;
            }
            out.push((Tok::Other, s));
        } else if matches!(b, b'.' | b'[' | b']' | b'|' | b':' | b',') {
            out.push((Tok::Punct(b), i));
            i += 1;
        } else {
            // Operators and anything liquid will judge itself; skip a whole UTF-8 character.
            let s = i;
            i += source[i..].chars().next().map_or(1, char::len_utf8);
            out.push((Tok::Other, s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<(Kind, &str)> {
        lex(source)
            .unwrap()
            .into_iter()
            .map(|s| (s.kind.clone(), &source[s.start..s.end]))
            .collect()
    }

    #[test]
    fn lexer_respects_quotes_raw_and_comments() {
        assert_eq!(
            kinds(r#"{"a":"{{ row.x | append: "}}" }}"}"#),
            vec![
                (Kind::Text, r#"{"a":""#),
                (Kind::Output, r#"{{ row.x | append: "}}" }}"#),
                (Kind::Text, r#""}"#),
            ]
        );
        let source = "{% raw %}{{ not }}{% endraw %}{% comment %}{% comment %}x{% endcomment %}{{ y }}{% endcomment %}1";
        assert_eq!(
            kinds(source),
            vec![
                (Kind::Tag, "{% raw %}"),
                (Kind::Text, "{{ not }}"),
                (Kind::Tag, "{% endraw %}"),
                (
                    Kind::Comment,
                    "{% comment %}{% comment %}x{% endcomment %}{{ y }}{% endcomment %}"
                ),
                (Kind::Text, "1"),
            ]
        );
    }
}
