//! How each column's type is read: the SQL that makes PostgreSQL write it in one exact text
//! form, and how that text becomes a value.

use kinesync_payload::Value;
use postgres::types::{Kind, Type};

/// How one column's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conversion {
    Integer,
    Numeric,
    Float,
    Bool,
    Text,
    Json,
}

/// The conversion for a column of type `ty`, and the SQL that writes `column` (already
/// quoted) in its form; `None` for a type not mapped.
pub(super) fn conversion(ty: &Type, column: &str) -> Option<(Conversion, String)> {
    if let Kind::Array(_) = ty.kind() {
        return Some((Conversion::Json, format!("to_json({column})::text")));
    }
    let same = column.to_owned();
    Some(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => (Conversion::Integer, same),
        Type::NUMERIC => (Conversion::Numeric, same),
        Type::FLOAT4 | Type::FLOAT8 => (Conversion::Float, same),
        Type::BOOL => (Conversion::Bool, same),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UUID => {
            (Conversion::Text, same)
        }
        // ISO 8601, as JSON writes them: `2026-11-30`, `2026-11-30T21:04:19.5`, and with the
        // session in UTC, `2026-11-30T21:04:19.5+00:00`.
        Type::DATE | Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            (Conversion::Text, format!("to_json({column}) #>> '{{}}'"))
        }
        Type::JSON | Type::JSONB => (Conversion::Json, format!("{column}::text")),
        _ if ty.name() == "citext" => (Conversion::Text, same),
        _ => return None,
    })
}

/// `name` as a quoted SQL identifier.
pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column's text as its value.
pub(super) fn convert(conversion: Conversion, text: &str) -> Result<Value, String> {
    match conversion {
        Conversion::Integer => text
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("{text:?} is not an integer")),
        Conversion::Numeric => numeric(text),
        Conversion::Float => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(format!(
                "{text:?} is not a finite number: JSON has none, so every source refuses it"
            )),
        },
        Conversion::Bool => match text {
            "t" => Ok(Value::Bool(true)),
            "f" => Ok(Value::Bool(false)),
            other => Err(format!("{other:?} is not a boolean")),
        },
        Conversion::Text => Ok(Value::String(text.to_owned())),
        Conversion::Json => Value::from_json_exact(text).map_err(|e| e.to_string()),
    }
}

/// A `numeric` as its exact value: an integer of any size and a fraction of any precision
/// digit for digit ([`Value::Decimal`] where no 64-bit type holds it exactly).
fn numeric(text: &str) -> Result<Value, String> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Err(format!(
            "{text:?} is not a finite number: JSON has none, so every source refuses it"
        ));
    }
    Value::from_json_exact(text).map_err(|_| format!("{text:?} is not a number"))
}
