//! The `json` filter: `{{ x | json }}` writes a value as compact JSON text.
//!
//! Where it sits: registered in the template language at compile time, evaluated once per use
//! per row while rendering. Inside a JSON string its text is escaped like any other; outside
//! one, an output tag ending in `| json` writes it as it is (`_kj_raw` in `json_output.rs`).

use liquid_core::{Filter, FilterReflection, ParseFilter, Runtime, ValueView};

use crate::json;

/// The `json` filter: the value as compact JSON text.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct JsonFilterParser;

impl FilterReflection for JsonFilterParser {
    fn name(&self) -> &str {
        "json"
    }
    fn description(&self) -> &str {
        "Writes the value as compact JSON: strings quoted and escaped, nil as null."
    }
    fn positional_parameters(&self) -> &'static [liquid_core::parser::ParameterReflection] {
        &[]
    }
    fn keyword_parameters(&self) -> &'static [liquid_core::parser::ParameterReflection] {
        &[]
    }
}

impl ParseFilter for JsonFilterParser {
    fn parse(
        &self,
        mut arguments: liquid_core::parser::FilterArguments<'_>,
    ) -> liquid_core::Result<Box<dyn Filter>> {
        if arguments.positional.next().is_some() || arguments.keyword.next().is_some() {
            return Err(liquid_core::Error::with_msg(
                "the json filter takes no arguments",
            ));
        }
        Ok(Box::new(JsonFilter))
    }
    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

/// The parsed filter; it has no arguments, so nothing to hold.
#[derive(Debug, Default)]
struct JsonFilter;

impl std::fmt::Display for JsonFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("json")
    }
}

impl Filter for JsonFilter {
    fn evaluate(
        &self,
        input: &dyn ValueView,
        _runtime: &dyn Runtime,
    ) -> liquid_core::Result<liquid_core::Value> {
        let mut out = Vec::new();
        json::write_view_json(input, &mut out);
        let text = String::from_utf8(out).expect("the JSON writer writes UTF-8");
        Ok(liquid_core::Value::scalar(text))
    }
}
