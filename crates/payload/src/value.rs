//! Column values, and how they look to Liquid and in JSON.
//!
//! Where it sits: inside each row, at the start of the data path (row → compiled payload →
//! rendered JSON message); the payload modes write values as JSON, templates read them
//! through Liquid's `ValueView`.

use std::fmt;

use liquid_core::model::{
    ArrayView, DisplayCow, KStringCow, ObjectRender, ObjectSource, ObjectView, ScalarCow, State,
    ValueView,
};

use crate::json;

/// One column value of a row: the JSON data model, with integers and floats kept apart.
///
/// Integers are `i64`, the widest integer SQLite, CSV typing and most warehouses hand out;
/// they are written to JSON digit for digit, never through a float. Floats that JSON cannot
/// hold (NaN and the infinities) are written as the strings `"NaN"`, `"Infinity"` and
/// `"-Infinity"`, the convention of the protobuf JSON mapping, so that the message stays valid
/// JSON and the value can still be told apart from a null.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// SQL `NULL`, JSON `null`, or a missing column.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// An integer above `i64::MAX`, up to `u64::MAX` (an unsigned 64-bit id): kept digit for
    /// digit, never turned into a float. (Integers that fit an `i64` are always [`Value::Int`].)
    UInt(u64),
    /// A number no 64-bit type holds exactly, as its JSON text: an integer beyond the 64-bit
    /// ones (`123456789012345678901234567890`), or a fraction with more digits than a float
    /// keeps (`12345678901234567890.01`, a SQL `numeric`). Kept digit for digit where JSON
    /// readers would round it to a float (see [`Value::from_json_exact`]); written as the
    /// number it is; templates see its text, and refuse arithmetic on it.
    Decimal(Box<str>),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// An ordered list.
    Array(Vec<Value>),
    /// An object whose keys keep the order they were read in.
    Object(Object),
}

impl Value {
    /// The type's name as error messages give it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Decimal(text) if text.bytes().all(|b| b == b'-' || b.is_ascii_digit()) => {
                "integer"
            }
            Value::Decimal(_) => "number",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// An unsigned integer as its value: [`Value::Int`] when it fits an `i64`.
    pub fn from_u64(u: u64) -> Self {
        i64::try_from(u).map_or(Value::UInt(u), Value::Int)
    }

    /// Appends this value as compact JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => json::write_int(*i, out),
            Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
            Value::Decimal(digits) => out.extend_from_slice(digits.as_bytes()),
            Value::Float(f) => json::write_float(*f, out),
            Value::String(s) => json::write_str(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Value::Object(object) => object.write_json(out),
        }
    }

    /// This value as a compact JSON string.
    pub fn to_json_string(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        String::from_utf8(out).expect("the JSON writer only writes UTF-8")
    }

    /// The value as liquid's own scalar type, for the scalar cases.
    fn scalar(&self) -> Option<ScalarCow<'_>> {
        match self {
            Value::Bool(b) => Some(ScalarCow::new(*b)),
            Value::Int(i) => Some(ScalarCow::new(*i)),
            // Liquid's numbers stop at i64: templates see the digits (and write them as a
            // number, see `json.rs`).
            Value::UInt(u) => Some(ScalarCow::new(u.to_string())),
            Value::Decimal(digits) => Some(ScalarCow::new(&**digits)),
            Value::Float(f) => Some(ScalarCow::new(*f)),
            Value::String(s) => Some(ScalarCow::new(s.as_str())),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Value::Int(i),
                (None, Some(u)) => Value::UInt(u),
                _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => Value::Object(Object(
                o.into_iter().map(|(k, v)| (k, Value::from(v))).collect(),
            )),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Reads JSON straight into [`Value`], keeping object keys in document order (serde_json's own
/// map would sort them unless its `preserve_order` feature is on).
struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::from_u64(u))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            entries.push((k, v));
        }
        Ok(Value::Object(Object(entries)))
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            // Its digits as a JSON number, through serde_json's raw values.
            Value::Decimal(digits) => serde_json::value::RawValue::from_string(digits.to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
            Value::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Float(f) => serializer.serialize_str(json::non_finite_name(*f)),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.0.len()))?;
                for (k, v) in &object.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// A JSON object value: keys in the order they were read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(pub Vec<(String, Value)>);

impl Object {
    /// The value of `key`, if present (the first one, if a key repeats).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(k, out);
            out.push(b':');
            v.write_json(out);
        }
        out.push(b'}');
    }
}

// ---- Liquid's view of values: read in place, never converted per row. ----

/// Liquid's nil, for the cases a null delegates to.
const NIL: liquid_core::Value = liquid_core::Value::Nil;

impl ValueView for Value {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }

    fn render(&self) -> DisplayCow<'_> {
        match self {
            Value::Array(items) => items.render(),
            Value::Object(object) => object.render(),
            Value::Null => DisplayCow::Borrowed(&""),
            other => DisplayCow::Owned(Box::new(RenderOf(owned_scalar(other)))),
        }
    }

    fn source(&self) -> DisplayCow<'_> {
        match self {
            Value::Array(items) => items.source(),
            Value::Object(object) => object.source(),
            Value::Null => DisplayCow::Borrowed(&"nil"),
            other => DisplayCow::Owned(Box::new(SourceOf(owned_scalar(other)))),
        }
    }

    fn type_name(&self) -> &'static str {
        // Liquid's own names, without building a scalar to ask.
        match self {
            Value::Null => "nil",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "whole number",
            // Not liquid's: the JSON writer knows it, and writes its digits as a number.
            Value::UInt(_) | Value::Decimal(_) => EXACT_NUMBER,
            Value::Float(_) => "fractional number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    fn query_state(&self, state: State) -> bool {
        match self {
            Value::Array(items) => items.query_state(state),
            Value::Object(object) => object.query_state(state),
            Value::Null => NIL.query_state(state),
            other => other.scalar().is_some_and(|s| s.query_state(state)),
        }
    }

    fn to_kstr(&self) -> KStringCow<'_> {
        match self {
            Value::String(s) => KStringCow::from_ref(s),
            Value::Array(items) => items.to_kstr(),
            Value::Object(object) => object.to_kstr(),
            Value::Null => KStringCow::from_static(""),
            other => owned_scalar(other).to_kstr().into_owned().into(),
        }
    }

    fn to_value(&self) -> liquid_core::Value {
        match self {
            Value::Null => liquid_core::Value::Nil,
            Value::Array(items) => items.to_value(),
            Value::Object(object) => object.to_value(),
            other => liquid_core::Value::Scalar(owned_scalar(other)),
        }
    }

    fn as_scalar(&self) -> Option<ScalarCow<'_>> {
        self.scalar()
    }

    fn as_array(&self) -> Option<&dyn ArrayView> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_object(&self) -> Option<&dyn ObjectView> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    fn is_nil(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// The type name templates see for an integer above `i64::MAX`.
pub(crate) const EXACT_NUMBER: &str = "exact number";

fn owned_scalar(v: &Value) -> liquid_core::model::Scalar {
    v.scalar()
        .map_or_else(|| ScalarCow::new(""), ScalarCow::into_owned)
}

/// Liquid's rendering of a scalar, owned so a row's value can hand it out.
struct RenderOf(liquid_core::model::Scalar);

impl fmt::Display for RenderOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render().fmt(f)
    }
}

/// Liquid's source form of a scalar (strings quoted), owned.
struct SourceOf(liquid_core::model::Scalar);

impl fmt::Display for SourceOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.source().fmt(f)
    }
}

impl ValueView for Object {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(ObjectRender::new(self)))
    }
    fn source(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(ObjectSource::new(self)))
    }
    fn type_name(&self) -> &'static str {
        "object"
    }
    fn query_state(&self, state: State) -> bool {
        match state {
            State::Truthy => true,
            State::DefaultValue | State::Empty | State::Blank => self.0.is_empty(),
        }
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        self.render().to_string().into()
    }
    fn to_value(&self) -> liquid_core::Value {
        liquid_core::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone().into(), v.to_value()))
                .collect(),
        )
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        Some(self)
    }
}

impl ObjectView for Object {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        self.0.len() as i64
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(self.0.iter().map(|(k, _)| KStringCow::from_ref(k)))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(self.0.iter().map(|(_, v)| v as &dyn ValueView))
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            self.0
                .iter()
                .map(|(k, v)| (KStringCow::from_ref(k), v as &dyn ValueView)),
        )
    }
    fn contains_key(&self, index: &str) -> bool {
        self.get(index).is_some()
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        Object::get(self, index).map(|v| v as &dyn ValueView)
    }
}
