//! How a template's variable paths (`row.items.first.sku`, `row.tags[2]`, `row.name.size`) are
//! followed into a row's values.
//!
//! Where it sits: called by the frames of `runtime.rs` each time a rendering row reads a name.
//!
//! Liquid's own lookup (`liquid_core::model::find`) fails on empty values, where templates
//! written for Shopify's Liquid expect nil: `first` or `last` of an empty array, an index past
//! an array's end, anything read through nil (a null column, `previous` on an added row). An
//! author guarding with `{% if row.items.first %}` would get a row error instead. This module
//! follows Shopify's Liquid instead:
//!
//! | path step            | on                 | gives                                        |
//! |----------------------|--------------------|----------------------------------------------|
//! | `first`, `last`      | array              | the element, nil when empty                  |
//! | `0`, `-1`, ...       | array              | the element, nil past either end             |
//! | `size`               | array, object      | how many elements or keys                    |
//! | `size`               | string             | how many characters (not bytes)              |
//! | a key                | object             | its value; **a row error** when it is absent |
//! | `first`              | object             | its first `[key, value]`, nil when empty     |
//! | anything             | nil                | nil                                          |
//!
//! A key an object does not have stays an error, naming the keys it has: a misspelled
//! column is found statically, but a misspelled key inside a JSON column is only found here.

use liquid_core::model::{ScalarCow, ValueCow};
use liquid_core::{Error, Result, Value, ValueView};

/// The value at `path` inside `value`, or `None` where a step finds nothing.
pub(super) fn try_find<'o>(
    value: &'o dyn ValueView,
    path: &[ScalarCow<'_>],
) -> Option<ValueCow<'o>> {
    let mut current = ValueCow::Borrowed(value);
    for index in path {
        current = match current {
            ValueCow::Borrowed(v) => step(v, index)?,
            // Values made by a step (`size`, an object's `first`, nil) are small; the rest of
            // the path is followed in a copy.
            ValueCow::Owned(v) => ValueCow::Owned(step(&v, index)?.into_owned()),
        };
    }
    Some(current)
}

/// The value at `path` inside `value`; an error names the step that found nothing and what
/// was there to find.
pub(super) fn find<'o>(value: &'o dyn ValueView, path: &[ScalarCow<'_>]) -> Result<ValueCow<'o>> {
    if let Some(found) = try_find(value, path) {
        return Ok(found);
    }
    // The longest part of the path that leads somewhere, and the step after it.
    let found = (0..path.len())
        .rev()
        .find_map(|depth| Some((depth, try_find(value, &path[..depth])?)));
    match found {
        Some((depth, parent)) => Err(unknown_index(
            &path[..depth],
            &path[depth],
            parent.as_view(),
        )),
        None => Err(Error::with_msg("empty path")),
    }
}

/// One step of a path. (Objects first: rows and JSON objects are what most steps read.)
fn step<'v>(value: &'v dyn ValueView, index: &ScalarCow<'_>) -> Option<ValueCow<'v>> {
    if let Some(object) = value.as_object() {
        let key = index.to_kstr();
        if let Some(found) = object.get(key.as_str()) {
            return Some(ValueCow::Borrowed(found));
        }
        return match key.as_str() {
            "size" => Some(ValueCow::Owned(Value::scalar(object.size()))),
            "first" => Some(ValueCow::Owned(match object.iter().next() {
                Some((k, v)) => Value::Array(vec![Value::scalar(k.into_owned()), v.to_value()]),
                None => Value::Nil,
            })),
            _ => None,
        };
    }
    if let Some(array) = value.as_array() {
        let found = match index.to_integer() {
            Some(at) => array.get(at),
            None => match index.to_kstr().as_str() {
                "first" => array.first(),
                "last" => array.last(),
                "size" => return Some(ValueCow::Owned(Value::scalar(array.size()))),
                _ => return None,
            },
        };
        return Some(found.map_or(ValueCow::Owned(Value::Nil), ValueCow::Borrowed));
    }
    if value.is_nil() {
        return Some(ValueCow::Owned(Value::Nil));
    }
    if let Some(scalar) = value.as_scalar()
        && index.to_kstr().as_str() == "size"
    {
        let characters = scalar.to_kstr().as_str().chars().count();
        return Some(ValueCow::Owned(Value::scalar(characters as i64)));
    }
    None
}

/// The most keys an error lists.
const MAX_KEYS_LISTED: usize = 20;

/// "row.meta has no index `nope`", with what it does have.
fn unknown_index(found: &[ScalarCow<'_>], index: &ScalarCow<'_>, parent: &dyn ValueView) -> Error {
    let variable = found
        .iter()
        .map(|i| i.to_kstr().into_string())
        .collect::<Vec<_>>()
        .join(".");
    let available = if let Some(array) = parent.as_array() {
        match array.size() {
            0 => "first, last, size".to_owned(),
            n => format!("0..{}, first, last, size", n - 1),
        }
    } else if let Some(object) = parent.as_object() {
        let mut keys: Vec<String> = object
            .keys()
            .take(MAX_KEYS_LISTED)
            .map(|k| k.into_owned().into_string())
            .collect();
        if object.size() as usize > MAX_KEYS_LISTED {
            keys.push("…".to_owned());
        }
        keys.push("size".to_owned());
        keys.join(", ")
    } else {
        format!(
            "size (it is {}, not an object or array)",
            parent.type_name()
        )
    };
    Error::with_msg(format!(
        "{variable} has no index {:?}",
        index.to_kstr().as_str()
    ))
    .context("available indexes", available)
}
