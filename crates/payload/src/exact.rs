//! Integers of any size, digit for digit. serde_json reads an integer beyond the 64-bit ones
//! as a float (`123456789012345678901234567890` becomes `1.2345678901234568e29`), and a model's
//! ids and amounts must not change on their way to the stream. So before JSON text is parsed,
//! each such integer (outside strings) is swapped for a marked string, and after, each marked
//! string becomes a [`Value::BigInt`] holding the digits. Text without one (nearly all) is
//! parsed as it is.

use std::sync::LazyLock;

use crate::value::{Object, Value};

/// What a swapped integer's string starts with: a NUL (which JSON text cannot hold raw, so an
/// input string can only have it escaped) and a nonce drawn per process, so that no input
/// string is taken for one.
static MARK: LazyLock<String> = LazyLock::new(|| {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ u128::from(std::process::id());
    format!("\u{0}kinesync-integer-{nonce:x}:")
});

/// Whether `digits` (an integer literal: an optional `-`, then digits) is beyond what
/// [`Value::Int`] and [`Value::UInt`] hold.
fn is_big(literal: &str) -> bool {
    match literal.strip_prefix('-') {
        Some(digits) => digits.len() > 19 || (digits.len() == 19 && digits > "9223372036854775808"),
        None => literal.len() > 20 || (literal.len() == 20 && literal > "18446744073709551615"),
    }
}

/// `text` with each integer beyond 64 bits (outside strings) swapped for a marked string;
/// `None` when it has none. For a reader with its own way through the text (a model line read
/// straight into a row): parse the marked text, then [`unmark`] each value.
pub fn mark_big_integers(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if byte == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if byte == b'-' || byte.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let fraction = i < bytes.len() && matches!(bytes[i], b'.' | b'e' | b'E');
            if fraction {
                // A float: its digits and exponent are skipped as they are.
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                continue;
            }
            let literal = &text[start..i];
            if is_big(literal) {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len() + 64));
                out.push_str(&text[copied..start]);
                out.push('"');
                out.push_str(&MARK.replace('\u{0}', "\\u0000"));
                out.push_str(literal);
                out.push('"');
                copied = i;
            }
            continue;
        }
        i += 1;
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

/// Turns the marked strings [`mark_big_integers`] made back into [`Value::BigInt`]s.
pub fn unmark(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Some(digits) = s.strip_prefix(MARK.as_str()) {
                *value = Value::BigInt(digits.into());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unmark),
        Value::Object(Object(entries)) => entries.iter_mut().for_each(|(_, v)| unmark(v)),
        _ => {}
    }
}

impl Value {
    /// Parses JSON text with every integer exact: beyond the 64-bit ones, as
    /// [`Value::BigInt`].
    pub fn from_json_exact(text: &str) -> Result<Value, serde_json::Error> {
        match mark_big_integers(text) {
            None => serde_json::from_str(text),
            Some(marked) => {
                let mut value = serde_json::from_str(&marked)?;
                unmark(&mut value);
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_integers_beyond_64_bits_are_marked() {
        assert_eq!(
            mark_big_integers(r#"{"a": 18446744073709551615, "b": -9223372036854775808}"#),
            None
        );
        assert_eq!(
            mark_big_integers(r#"{"a": 1e400, "b": "123456789012345678901234567890"}"#),
            None
        );
        let text = r#"{"a": 18446744073709551616, "b": [-9223372036854775809, 1.5], "c": "x"}"#;
        let value = Value::from_json_exact(text).unwrap();
        assert_eq!(
            value.to_json_string(),
            r#"{"a":18446744073709551616,"b":[-9223372036854775809,1.5],"c":"x"}"#
        );
    }
}
