//! Integers of any size, digit for digit. serde_json reads an integer beyond the 64-bit ones
//! as a float (`123456789012345678901234567890` becomes `1.2345678901234568e29`), and a model's
//! ids and amounts must not change on their way to the stream. So before JSON text is parsed,
//! each such integer (outside strings) is swapped for a marked string, and after, each marked
//! string becomes a [`Value::Decimal`] holding the digits. Text without one (nearly all) is
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

/// Whether the float `literal` (a JSON number with a fraction or exponent) loses digits in
/// the nearest 64-bit float: the float does not read back as the same decimal. (A number
/// beyond the floats, `1e400`, is left to the float reader, which refuses it.)
fn float_loses_digits(literal: &str) -> bool {
    literal.parse::<f64>().is_ok_and(|float| {
        float.is_finite() && decimal_form(literal) != decimal_form(&format!("{float:e}"))
    })
}

/// A number's text as (negative, significant digits, exponent): the value is
/// 0.DIGITS × 10^exponent, so `12.50`, `1.25e1` and `0.125e2` give the same form.
fn decimal_form(text: &str) -> (bool, String, i64) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    let exponent = exponent + whole.len() as i64 - leading as i64;
    (negative, significant.to_owned(), exponent)
}

/// `text` with each number no 64-bit type holds exactly (outside strings) swapped for a
/// marked string; `None` when it has none. For a reader with its own way through the text (a
/// model line read straight into a row): parse the marked text, then [`unmark`] each value.
pub fn mark_exact_numbers(text: &str) -> Option<String> {
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
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
            }
            let literal = &text[start..i];
            // Up to 15 significant digits, any float holds a decimal exactly.
            let exact = if fraction {
                literal.bytes().filter(u8::is_ascii_digit).count() > 15
                    && float_loses_digits(literal)
            } else {
                is_big(literal)
            };
            if exact {
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

/// Turns the marked strings [`mark_exact_numbers`] made back into [`Value::Decimal`]s.
pub fn unmark(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Some(digits) = s.strip_prefix(MARK.as_str()) {
                *value = Value::Decimal(digits.into());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unmark),
        Value::Object(Object(entries)) => entries.iter_mut().for_each(|(_, v)| unmark(v)),
        _ => {}
    }
}

impl Value {
    /// Parses JSON text with every number exact: those no 64-bit type holds exactly, as
    /// [`Value::Decimal`].
    pub fn from_json_exact(text: &str) -> Result<Value, serde_json::Error> {
        match mark_exact_numbers(text) {
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
    fn fractions_are_marked_only_when_a_float_loses_digits() {
        for exact in [
            "0.1",
            "12.50",
            "1.25e1",
            "-2.5e-300",
            "0.30000000000000004",
            "1e400",
        ] {
            assert_eq!(mark_exact_numbers(&format!("[{exact}]")), None, "{exact}");
        }
        for inexact in [
            "12345678901234567890.01",
            "0.1000000000000000055511151231257827",
            "-1234567890.123456789",
            "3.14159265358979323846e-5",
        ] {
            let value = Value::from_json_exact(&format!("[{inexact}, 1.5]")).unwrap();
            assert_eq!(
                value,
                Value::Array(vec![Value::Decimal(inexact.into()), Value::Float(1.5)]),
                "{inexact}"
            );
            assert_eq!(value.to_json_string(), format!("[{inexact},1.5]"));
        }
    }

    #[test]
    fn decimal_forms_compare_values_not_spellings() {
        assert_eq!(decimal_form("12.50"), decimal_form("1.25e1"));
        assert_eq!(decimal_form("0.00125"), decimal_form("1.25e-3"));
        assert_eq!(decimal_form("-0.0"), decimal_form("0"));
        assert_ne!(decimal_form("-1.5"), decimal_form("1.5"));
    }

    #[test]
    fn only_integers_beyond_64_bits_are_marked() {
        assert_eq!(
            mark_exact_numbers(r#"{"a": 18446744073709551615, "b": -9223372036854775808}"#),
            None
        );
        assert_eq!(
            mark_exact_numbers(r#"{"a": 1e400, "b": "123456789012345678901234567890"}"#),
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
