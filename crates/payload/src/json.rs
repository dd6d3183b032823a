//! Writing JSON by hand, fast, and checking that finished output is valid and compact.
//!
//! Every message goes through [`finish`]: it is parsed by serde_json (so "valid" means what a
//! consumer's JSON parser means) and, only if it holds whitespace outside strings, compacted.
//!
//! Where it sits: at the end of the data path (row → compiled payload → rendered JSON
//! message): every mode writes values with these writers, and every message is finished here
//! before it leaves the crate.

use liquid_core::model::ValueView;

use crate::json_strings::{Place, StringScanner};

/// Which bytes need escaping inside a JSON string, and how: 0 = copy, `u` = `\u00XX`,
/// anything else = a backslash and that letter.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `s` as a quoted JSON string.
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    write_str_content(s, out);
    out.push(b'"');
}

/// Appends `s` escaped as JSON string content, without the quotes.
pub(crate) fn write_str_content(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

pub(crate) fn write_int(i: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// The string a non-finite float is written as.
pub(crate) fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Appends a float as a JSON number (shortest round-trip form), or, for NaN and the
/// infinities, as a JSON string naming it.
pub(crate) fn write_float(f: f64, out: &mut Vec<u8>) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        write_str(non_finite_name(f), out);
    }
}

/// Appends a float as string content: its JSON number text, or its name if not finite.
fn write_float_content(f: f64, out: &mut Vec<u8>) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(non_finite_name(f).as_bytes());
    }
}

/// The scalar kinds JSON writes differently. Dispatching on `type_name` first means a string
/// column is read with `to_kstr` (a borrow) without building liquid's `ScalarCow`.
fn scalar_kind(v: &dyn ValueView) -> Option<&'static str> {
    match v.type_name() {
        kind @ ("string" | "whole number" | "fractional number" | "boolean") => Some(kind),
        crate::value::EXACT_NUMBER => Some(crate::value::EXACT_NUMBER),
        _ => None,
    }
}

fn int_of(v: &dyn ValueView) -> i64 {
    v.as_scalar()
        .and_then(|s| s.to_integer())
        .unwrap_or_default()
}

fn float_of(v: &dyn ValueView) -> f64 {
    v.as_scalar().and_then(|s| s.to_float()).unwrap_or(f64::NAN)
}

/// Appends any Liquid value (a column, or what a filter made of one) as a JSON value:
/// nil → `null`, numbers and booleans bare, strings quoted, arrays and objects as JSON.
pub(crate) fn write_view_json(v: &dyn ValueView, out: &mut Vec<u8>) {
    match scalar_kind(v) {
        Some("string") => write_str(&v.to_kstr(), out),
        Some("whole number") => write_int(int_of(v), out),
        // Its digits, as the number they are.
        Some(crate::value::EXACT_NUMBER) => out.extend_from_slice(v.to_kstr().as_bytes()),
        Some("fractional number") => write_float(float_of(v), out),
        Some(_) => out.extend_from_slice(if v.query_state(liquid_core::model::State::Truthy) {
            b"true"
        } else {
            b"false"
        }),
        None => {
            if let Some(array) = v.as_array() {
                out.push(b'[');
                for (i, item) in array.values().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_view_json(item, out);
                }
                out.push(b']');
            } else if let Some(object) = v.as_object() {
                out.push(b'{');
                for (i, (k, item)) in object.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(&k, out);
                    out.push(b':');
                    write_view_json(item, out);
                }
                out.push(b'}');
            } else if v.as_scalar().is_some() {
                // Dates and times, as liquid renders them.
                write_str(&v.to_kstr(), out);
            } else {
                // nil, and liquid's special states (`empty`, `blank`), which have no JSON form.
                out.extend_from_slice(b"null");
            }
        }
    }
}

/// Appends any Liquid value as JSON string content: nil as nothing, scalars as their text,
/// arrays and objects as their JSON text (escaped, since it sits inside a string).
pub(crate) fn write_view_str_content(v: &dyn ValueView, out: &mut Vec<u8>) {
    match scalar_kind(v) {
        Some("whole number") => write_int(int_of(v), out),
        Some("fractional number") => write_float_content(float_of(v), out),
        Some(_) => write_str_content(&v.to_kstr(), out),
        None if v.as_array().is_some() || v.as_object().is_some() => {
            let mut nested = Vec::new();
            write_view_json(v, &mut nested);
            write_str_content(
                std::str::from_utf8(&nested).expect("JSON writer writes UTF-8"),
                out,
            );
        }
        None if v.as_scalar().is_some() => write_str_content(&v.to_kstr(), out),
        None => {}
    }
}

/// Why finished output is not a JSON message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidJson {
    /// Byte offset into the output where the parser stopped.
    pub offset: usize,
    /// The parser's complaint.
    pub reason: String,
    /// Up to 40 characters either side of the offset, for the error message.
    pub excerpt: String,
}

/// Whether a message can hold whitespace outside its strings, known when the spec compiles:
/// the JSON writer never writes any, so only a template's literal text (or a column's stored
/// JSON, or plain Liquid output) can bring it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whitespace {
    /// Nothing to compact.
    Absent,
    /// Compact after checking.
    Possible,
}

/// Checks that `out` holds exactly one JSON value and removes any whitespace outside strings.
pub(crate) fn finish(out: &mut Vec<u8>, whitespace: Whitespace) -> Result<(), InvalidJson> {
    if let Err(e) = serde_json::from_slice::<Decodable>(out) {
        let offset = offset_of(out, e.line(), e.column());
        let reason = e.to_string();
        // serde_json appends " at line L column C"; the offset says it better.
        let reason = reason
            .split(" at line ")
            .next()
            .unwrap_or(&reason)
            .to_owned();
        return Err(InvalidJson {
            offset,
            reason,
            excerpt: excerpt(out, offset),
        });
    }
    if whitespace == Whitespace::Possible {
        compact(out);
    }
    Ok(())
}

/// Accepts exactly the JSON a consumer can decode: like `IgnoredAny`, but numbers are parsed,
/// so a number beyond the range of a double (`1e999`, or a 310-digit integer written by plain
/// Liquid) is refused instead of passed on to fail in the consumer's parser.
struct Decodable;

impl<'de> serde::Deserialize<'de> for Decodable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DecodableVisitor)
    }
}

struct DecodableVisitor;

impl<'de> serde::de::Visitor<'de> for DecodableVisitor {
    type Value = Decodable;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Decodable, E> {
        Ok(Decodable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Decodable, E> {
        Ok(Decodable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Decodable, E> {
        Ok(Decodable)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Decodable, E> {
        Ok(Decodable)
    }
    fn visit_str<E>(self, _: &str) -> Result<Decodable, E> {
        Ok(Decodable)
    }
    fn visit_unit<E>(self) -> Result<Decodable, E> {
        Ok(Decodable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Decodable, A::Error> {
        while seq.next_element::<Decodable>()?.is_some() {}
        Ok(Decodable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Decodable, A::Error> {
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value::<Decodable>()?;
        }
        Ok(Decodable)
    }
}

/// Removes whitespace outside strings from valid JSON, in place.
fn compact(out: &mut Vec<u8>) {
    let needs = out
        .iter()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
    if !needs {
        return;
    }
    let (mut write, mut strings) = (0, StringScanner::default());
    for read in 0..out.len() {
        let b = out[read];
        if strings.step(b) == Place::Outside && matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            continue;
        }
        out[write] = b;
        write += 1;
    }
    out.truncate(write);
}

/// serde_json reports 1-based lines and 1-based columns (0 at end of input); turn that back
/// into a byte offset.
fn offset_of(out: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for _ in 1..line {
        match out[offset..].iter().position(|&b| b == b'\n') {
            Some(p) => offset += p + 1,
            None => return out.len(),
        }
    }
    (offset + column.saturating_sub(1)).min(out.len())
}

fn excerpt(out: &[u8], offset: usize) -> String {
    let text = String::from_utf8_lossy(out);
    let mut start = offset.saturating_sub(40);
    while start > 0 && !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (offset + 40).min(text.len());
    while end < text.len() && !text.is_char_boundary(end) {
        end += 1;
    }
    text[start..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_whitespace_inside_strings() {
        let mut out = b"{ \"a b\" : [1, 2,\n 3], \"c\\\" d\": \"\\\\ x\" }".to_vec();
        finish(&mut out, Whitespace::Possible).unwrap();
        assert_eq!(out, b"{\"a b\":[1,2,3],\"c\\\" d\":\"\\\\ x\"}");
    }

    #[test]
    fn invalid_json_names_its_offset_and_excerpt() {
        let mut out = b"{\"a\":1,}".to_vec();
        let err = finish(&mut out, Whitespace::Possible).unwrap_err();
        assert_eq!(err.offset, 7);
        assert_eq!(err.excerpt, "{\"a\":1,}");
        let mut huge = b"[1e999]".to_vec();
        assert!(
            finish(&mut huge, Whitespace::Possible).is_err(),
            "a number no double can hold is refused"
        );
        let mut two = b"1 2".to_vec();
        assert!(
            finish(&mut two, Whitespace::Possible).is_err(),
            "two values are not one message"
        );
    }

    #[test]
    fn control_characters_escape() {
        let mut out = Vec::new();
        write_str("a\u{1}\u{1f}\"\\\n\u{7f}é", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\u0001\\u001f\\\"\\\\\\n\u{7f}é\""
        );
    }
}
