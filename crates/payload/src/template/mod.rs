//! Liquid templates whose output is JSON, made JSON-safe by where each output tag stands.
//!
//! Where it sits: a [`PayloadSpec::Template`](crate::PayloadSpec) is compiled here once,
//! against the schema, into a [`CompiledTemplate`]; each row then renders through it, and the
//! caller checks the result as JSON (row → compiled payload → rendered JSON message).
//!
//! Compiling runs in three steps, all before any row is read:
//!
//! 1. **Lex** (`lex.rs`) the source into text, output tags (`{{ }}`) and tags (`{% %}`), with
//!    byte offsets, so every later complaint can point at a line and column of the author's
//!    text.
//! 2. **Check** it statically (`check.rs`): each `row.x` / `row['x']` / `previous.x` against
//!    the schema, each filter against the filters that exist, and (JSON-safe mode) that every
//!    JSON string the template opens is closed. Then liquid itself parses the original text
//!    for syntax errors, in the language of `language.rs`; `liquid_errors.rs` gives its
//!    complaints a place.
//! 3. **Rewrite** each output tag by its JSON context (`json_safety.rs`, found by following the
//!    template's literal text as JSON): `{{ x }}` inside a JSON string becomes
//!    `{% _kj_str x %}`, which writes `x` escaped as string content; outside one it becomes
//!    `{% _kj_value x %}`, which writes `x` as a JSON value; when the last filter is `json` it
//!    becomes `{% _kj_raw x %}`, which writes the filter's JSON text as it is (in plain mode,
//!    every output tag becomes `{% _kj_plain x %}`, which writes as liquid does). These tags
//!    (`json_output.rs`) evaluate liquid's own filter chain and write straight into the output
//!    buffer, so the common case costs no allocation per output tag. The rewritten text is
//!    parsed with each statement given its place in the author's text (`location.rs`).
//!
//! Rendering runs the parsed template against the frames of `runtime.rs` (paths followed as
//! `lookup.rs` says), with kinesync's own `{% for %}` (`for_loop.rs`) and `json` filter
//! (`json_filter.rs`); a failing statement says where it stands.
//!
//! The files depend on each other one way: this one drives the steps; `language.rs` gathers
//! the tags, blocks and filters; those use `lex.rs`, `runtime.rs` and the crate's JSON writer,
//! and none of them uses this file.
//!
//! The context is found by reading the literal text in order, so a template whose branches
//! open a string in one arm and close it in another (`{% if a %}"x{% else %}"y{% endif %}"`)
//! is misread; such a template is refused as an unterminated string, and can set
//! `escape = "none"` to do its own escaping.

mod check;
mod for_loop;
mod json_filter;
mod json_output;
mod json_safety;
mod language;
mod lex;
mod liquid_errors;
mod location;
mod lookup;
mod math_filters;
mod runtime;
mod slice_filter;

use liquid_core::Renderable;
use liquid_core::model::ObjectView;

use self::check::check_references;
pub use self::for_loop::MAX_LOOP_ITERATIONS;
use self::json_safety::{json_contexts, rewrite};
use self::language::{LANGUAGES, parse};
use self::lex::lex;
use self::liquid_errors::{clean_message, liquid_error};
use self::runtime::{Frame, Scratch};
use crate::error::{CompileError, Location};
use crate::json;
use crate::schema::Schema;

/// How output tags are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Escape {
    /// JSON-safe (the default): values inside JSON strings are escaped as string content,
    /// values elsewhere are written as JSON values.
    #[default]
    Json,
    /// Plain Liquid: values are written as Liquid renders them, for templates that do their own
    /// escaping. The output is still checked to be JSON.
    None,
}

/// A compiled template: ready to render rows.
pub(crate) struct CompiledTemplate {
    template: liquid_core::runtime::Template,
    whitespace: json::Whitespace,
    /// The author's text, to say where a row's rendering failed.
    source: Box<str>,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate").finish_non_exhaustive()
    }
}

impl CompiledTemplate {
    /// Compiles `source` for rows of `schema`, reporting every problem found, sorted by
    /// place.
    pub(crate) fn compile(
        source: &str,
        escape: Escape,
        schema: &Schema,
    ) -> Result<Self, Vec<CompileError>> {
        let langs = &*LANGUAGES;
        let segments = lex(source).map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        check_references(source, &segments, schema, &langs.filters, &mut errors);
        let (contexts, whitespace) = match escape {
            Escape::Json => json_contexts(source, &segments, &mut errors),
            Escape::None => (Vec::new(), json::Whitespace::Possible),
        };
        let filter_errors_found = errors
            .iter()
            .any(|e| matches!(e, CompileError::UnknownFilter { .. }));
        if let Err(e) = parse(source, &langs.plain) {
            let message = e.to_string();
            // Unknown filters are already reported above, with their place.
            if !(filter_errors_found && message.contains("Unknown filter")) {
                errors.push(liquid_error(source, &segments, &message));
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.location().map(|l| l.offset));
            return Err(errors);
        }
        let contexts = match escape {
            Escape::Json => Some(contexts.as_slice()),
            Escape::None => None,
        };
        let text = rewrite(source, &segments, contexts);
        let template = location::parse_placed(&text, &langs.rewritten, source, &segments)
            .map_err(|e| vec![liquid_error(source, &segments, &e.to_string())])?;
        Ok(Self {
            template,
            whitespace,
            source: source.into(),
        })
    }

    /// Whether rendered output may need compacting.
    pub(crate) fn whitespace(&self) -> json::Whitespace {
        self.whitespace
    }

    /// Renders into `out`, which the caller has cleared, stopping as soon as the output passes
    /// `max_bytes`.
    pub(crate) fn render(
        &self,
        globals: &dyn ObjectView,
        out: &mut Vec<u8>,
        max_bytes: usize,
    ) -> Result<(), RenderStop> {
        // The stack `liquid::Template::render_to` builds, with `Frame` in place of liquid's
        // `StackFrame` for the globals and `Scratch` for its `GlobalFrame` and `IndexFrame`.
        let runtime = Scratch::new(Frame {
            parent: liquid_core::runtime::RuntimeCore::new(),
            names: globals,
        });
        for_loop::reset_loop_budget();
        location::reset();
        let mut capped = Capped { out, max_bytes };
        let result = self.template.render_to(&mut capped, &runtime);
        if capped.out.len() > max_bytes {
            return Err(RenderStop::TooLarge);
        }
        result.map_err(|e| RenderStop::Error {
            message: clean_message(&e.to_string()),
            location: location::failed_at().map(|at| Location::at(&self.source, at)),
        })
    }
}

/// Why rendering stopped.
#[derive(Debug)]
pub(crate) enum RenderStop {
    /// The output passed the most a message may be.
    TooLarge,
    /// Liquid's error, cleaned up, and the statement that failed.
    Error {
        message: String,
        location: Option<Location>,
    },
}

/// The output, refusing to grow past `max_bytes` (one write past it is kept, so the caller
/// can tell): a template that loops or appends without end stops there, not when memory does.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    max_bytes: usize,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.out.len() > self.max_bytes {
            return Err(std::io::Error::other("the message is too large"));
        }
        self.out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
