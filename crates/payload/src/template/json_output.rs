//! The tags the rewrite puts in place of output tags: in JSON-safe mode one of three
//! (`_kj_str`, `_kj_value`, `_kj_raw`), in plain mode `_kj_plain`; and how each writes its
//! value.
//!
//! Where it sits: compiled payload → **these tags, once per output tag per row** → rendered
//! JSON message. They evaluate liquid's own filter chain and write straight into the output
//! buffer, so the common case costs no allocation per output tag. Which tag an output tag
//! becomes is decided at compile time, in `json_safety.rs`.

use std::cell::RefCell;
use std::io::Write;

use liquid_core::parser::FilterChain;
use liquid_core::{Language, ParseTag, Renderable, Runtime, TagReflection, TagTokenIter};

use super::lex::{Tok, tokens};
use super::location;
use crate::json;

/// Where an output tag stands in the template's JSON, and so how its value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutputContext {
    /// Inside a JSON string: escape as string content.
    StringContent,
    /// Outside any string: write a JSON value.
    Value,
    /// Outside any string, last filter `json`: the value already is JSON text.
    Raw,
    /// Plain mode (`escape = "none"`): as liquid writes it.
    Plain,
}

impl OutputContext {
    /// The name of the tag that writes a value in this context.
    pub(super) fn tag(self) -> &'static str {
        match self {
            OutputContext::StringContent => "_kj_str",
            OutputContext::Value => "_kj_value",
            OutputContext::Raw => "_kj_raw",
            OutputContext::Plain => "_kj_plain",
        }
    }
}

thread_local! {
    /// Scratch space for one output tag's JSON; reused so rendering does not allocate.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Parses one of the three tags; registered once per context.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonOutputTag(pub(super) OutputContext);

impl TagReflection for JsonOutputTag {
    fn tag(&self) -> &str {
        self.0.tag()
    }
    fn description(&self) -> &str {
        "kinesync's JSON-safe form of an output tag (written by the compiler, not by authors)"
    }
}

impl ParseTag for JsonOutputTag {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        options: &Language,
    ) -> liquid_core::Result<Box<dyn Renderable>> {
        let token = arguments.expect_next("a value to output")?;
        let text = token.as_str().to_owned();
        let chain = token.expect_filter_chain(options).into_result()?;
        arguments.expect_nothing()?;
        Ok(Box::new(JsonOutput {
            chain,
            path: literal_path(&text),
            context: self.0,
            place: location::next_place(),
        }))
    }
    fn reflection(&self) -> &dyn TagReflection {
        self
    }
}

#[derive(Debug)]
struct JsonOutput {
    chain: FilterChain,
    /// The same expression's path when it is a bare variable with literal indexes
    /// (`row.email`, `row['Col Name']`, `t`).
    path: Option<Vec<liquid_core::model::Scalar>>,
    context: OutputContext,
    /// Where the output tag stands in the author's text.
    place: Option<usize>,
}

impl JsonOutput {
    /// The value to write. Liquid's `Runtime::get` (behind `FilterChain::evaluate`) builds the
    /// variable's path in a fresh `Vec` and returns the value as an owned copy: two
    /// allocations per output tag per row for a string column. A bare variable's path is
    /// known at compile time, and `try_get` borrows the value from the row. Anything else, or
    /// a variable not found that way, goes through the chain, which also gives liquid's own
    /// error for a missing variable.
    fn value<'r>(
        &'r self,
        runtime: &'r dyn Runtime,
    ) -> liquid_core::Result<liquid_core::ValueCow<'r>> {
        if let Some(found) = self.path.as_deref().and_then(|path| runtime.try_get(path)) {
            return Ok(found);
        }
        self.chain.evaluate(runtime)
    }
}

/// The path of a bare variable whose indexes are all literals, e.g. `row.a` → `["row", "a"]`,
/// `row['b c']` → `["row", "b c"]`, `a[0]` → `["a", 0]`; `None` for anything else.
fn literal_path(text: &str) -> Option<Vec<liquid_core::model::Scalar>> {
    use liquid_core::model::Scalar;
    let toks = tokens(text, 0, text.len());
    let mut path = Vec::new();
    let mut i = 0;
    match toks.first() {
        Some((Tok::Ident(root), _))
            if !matches!(*root, "true" | "false" | "nil" | "empty" | "blank") =>
        {
            path.push(Scalar::new(root.to_string()));
            i += 1;
        }
        _ => return None,
    }
    while i < toks.len() {
        match (
            toks[i].0,
            toks.get(i + 1).map(|t| t.0),
            toks.get(i + 2).map(|t| t.0),
        ) {
            (Tok::Punct(b'.'), Some(Tok::Ident(name)), _) => {
                path.push(Scalar::new(name.to_string()))
            }
            (Tok::Punct(b'['), Some(Tok::Str(name)), Some(Tok::Punct(b']'))) => {
                path.push(Scalar::new(name.to_string()));
                i += 1;
            }
            (Tok::Punct(b'['), Some(Tok::Other), Some(Tok::Punct(b']'))) => {
                let (_, at) = toks[i + 1];
                let end = toks[i + 2].1;
                let index: i64 = text[at..end].trim().parse().ok()?;
                path.push(Scalar::new(index));
                i += 1;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(path)
}

impl Renderable for JsonOutput {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> liquid_core::Result<()> {
        let value = location::placed(self.place, self.value(runtime))?;
        let value = value.as_view();
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            match self.context {
                OutputContext::StringContent => json::write_view_str_content(value, &mut buf),
                OutputContext::Value => json::write_view_json(value, &mut buf),
                OutputContext::Raw => buf.extend_from_slice(value.to_kstr().as_bytes()),
                OutputContext::Plain => {
                    write!(buf, "{}", value.render()).expect("writing to memory does not fail")
                }
            }
            writer
                .write_all(&buf)
                .map_err(|e| liquid_core::Error::with_msg(format!("cannot write output: {e}")))
        })
    }
}
