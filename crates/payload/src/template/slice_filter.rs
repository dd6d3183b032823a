//! kinesync's `slice`, in place of liquid's: the same results, but an offset or length at the
//! edges of the integers is no overflow (liquid's adds them as they are: a panic in a debug
//! build, a wrapped index in a release one), and a string is counted in characters throughout
//! (liquid's caps by bytes and takes characters).
//!
//! Where it sits: registered in `language.rs`, evaluated per use per row while rendering.

use liquid_core::parser::{FilterArguments, ParameterReflection};
use liquid_core::{
    Error, Expression, Filter, FilterReflection, ParseFilter, Result, Runtime, Value, ValueView,
};

/// Parses `slice: offset` and `slice: offset, length`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SliceParser;

const PARAMETERS: [ParameterReflection; 2] = [
    ParameterReflection {
        name: "offset",
        description: "Where the slice starts; negative counts from the end.",
        is_optional: false,
    },
    ParameterReflection {
        name: "length",
        description: "How many items or characters (1 by default).",
        is_optional: true,
    },
];

impl FilterReflection for SliceParser {
    fn name(&self) -> &str {
        "slice"
    }
    fn description(&self) -> &str {
        "Takes a slice of a string (in characters) or an array."
    }
    fn positional_parameters(&self) -> &'static [ParameterReflection] {
        &PARAMETERS
    }
    fn keyword_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }
}

impl ParseFilter for SliceParser {
    fn parse(&self, mut arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let offset = arguments.positional.next();
        let length = arguments.positional.next();
        let extra = arguments.positional.next().is_some() || arguments.keyword.next().is_some();
        match offset {
            Some(offset) if !extra => Ok(Box::new(Slice { offset, length })),
            _ => Err(Error::with_msg(
                "the slice filter takes an offset and, optionally, a length",
            )),
        }
    }
    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

#[derive(Debug)]
struct Slice {
    offset: Expression,
    length: Option<Expression>,
}

impl std::fmt::Display for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("slice")
    }
}

fn whole_number(expression: &Expression, runtime: &dyn Runtime, what: &str) -> Result<i64> {
    let value = expression.evaluate(runtime)?;
    value
        .as_scalar()
        .and_then(|s| s.to_integer())
        .ok_or_else(|| Error::with_msg(format!("the slice filter's {what} must be a whole number")))
}

/// The start and count of `offset, length` in `len` items, as liquid's slice gives them: a
/// negative offset counts from the end, and one before the start gives nothing.
fn window(offset: i64, length: i64, len: usize) -> (usize, usize) {
    let len = len as i128;
    let mut start = i128::from(offset).min(len);
    if start < 0 {
        start += len;
    }
    if start < 0 {
        return (0, 0);
    }
    let end = (start + i128::from(length)).min(len);
    (start as usize, (end - start) as usize)
}

impl Filter for Slice {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let offset = whole_number(&self.offset, runtime, "offset")?;
        let length = match &self.length {
            Some(length) => whole_number(length, runtime, "length")?,
            None => 1,
        };
        if length < 1 {
            return Err(Error::with_msg(
                "the slice filter's length must be a positive number",
            ));
        }
        if let Some(array) = input.as_array() {
            let (start, count) = window(offset, length, array.size() as usize);
            return Ok(Value::array(
                array.values().skip(start).take(count).map(|v| v.to_value()),
            ));
        }
        let text = input.to_kstr();
        let (start, count) = window(offset, length, text.chars().count());
        Ok(Value::scalar(
            text.chars().skip(start).take(count).collect::<String>(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::window;

    #[test]
    fn windows_match_liquids_and_never_overflow() {
        assert_eq!(window(2, 3, 10), (2, 3));
        assert_eq!(window(-3, 2, 10), (7, 2));
        assert_eq!(window(8, 5, 10), (8, 2));
        assert_eq!(window(-20, 2, 10), (0, 0));
        assert_eq!(window(i64::MAX, i64::MAX, 10), (10, 0));
        assert_eq!(window(i64::MIN, i64::MAX, 10), (0, 0));
        assert_eq!(window(3, i64::MAX, 10), (3, 7));
    }
}
