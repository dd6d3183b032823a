//! Liquid templates whose output is JSON, made JSON-safe by where each output tag stands.
//!
//! Compiling a template runs in three steps, all before any row is read:
//!
//! 1. **Lex** the source into text, output tags (`{{ }}`) and tags (`{% %}`), with byte
//!    offsets, so every later complaint can point at a line and column of the author's text.
//! 2. **Check** it statically: each `row.x` / `row['x']` / `previous.x` against the schema, each
//!    filter against the filters that exist, and (JSON-safe mode) that every JSON string the
//!    template opens is closed. Then liquid itself parses the original text for syntax errors.
//! 3. **Rewrite** each output tag by its JSON context (found by following the template's
//!    literal text as JSON): `{{ x }}` inside a JSON string becomes `{% _kj_str x %}`, which
//!    writes `x` escaped as string content; outside one it becomes `{% _kj_value x %}`, which
//!    writes `x` as a JSON value; when the last filter is `json` it becomes `{% _kj_raw x %}`,
//!    which writes the filter's JSON text as it is. These three tags evaluate liquid's own
//!    filter chain and write straight into the output buffer, so the common case costs no
//!    allocation per output tag.
//!
//! The context is found by reading the literal text in order, so a template whose branches
//! open a string in one arm and close it in another (`{% if a %}"x{% else %}"y{% endif %}"`)
//! is misread; such a template is refused as an unterminated string, and can set
//! `escape = "none"` to do its own escaping.

mod for_loop;

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::sync::LazyLock;

use liquid_core::model::{ObjectView, ScalarCow, ValueCow};
use liquid_core::parser::FilterChain;
use liquid_core::{
    Filter, FilterReflection, Language, ParseFilter, ParseTag, Renderable, Runtime, TagReflection,
    TagTokenIter, ValueView,
};

use crate::error::{CompileError, Location};
use crate::json;
use crate::schema::{Schema, closest};

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

/// The names a template may reference besides its own `assign`s and loop variables.
const ROOTS_WITH_COLUMNS: [&str; 2] = ["row", "previous"];

/// Liquid's standard library plus the `json` filter; with `json_tags`, also the three tags
/// the JSON-safe rewrite emits.
fn language(json_tags: bool) -> Language {
    use liquid_lib::stdlib;
    fn tag(lang: &mut Language, t: impl ParseTag + 'static) {
        let name = t.reflection().tag().to_owned();
        lang.tags.register(name, Box::new(t));
    }
    fn block(lang: &mut Language, b: impl liquid_core::ParseBlock + 'static) {
        let name = b.reflection().start_tag().to_owned();
        lang.blocks.register(name, Box::new(b));
    }
    fn filter(lang: &mut Language, f: impl ParseFilter + 'static) {
        let name = f.reflection().name().to_owned();
        lang.filters.register(name, Box::new(f));
    }
    let mut lang = Language::empty();
    // The same set as `liquid::ParserBuilder::with_stdlib()`, with kinesync's `for`.
    tag(&mut lang, stdlib::AssignTag);
    tag(&mut lang, stdlib::BreakTag);
    tag(&mut lang, stdlib::ContinueTag);
    tag(&mut lang, stdlib::CycleTag);
    tag(&mut lang, stdlib::IncludeTag);
    tag(&mut lang, stdlib::IncrementTag);
    tag(&mut lang, stdlib::DecrementTag);
    tag(&mut lang, stdlib::RenderTag);
    block(&mut lang, stdlib::RawBlock);
    block(&mut lang, stdlib::IfBlock);
    block(&mut lang, stdlib::UnlessBlock);
    block(&mut lang, stdlib::IfChangedBlock);
    block(&mut lang, for_loop::ForBlock);
    block(&mut lang, stdlib::TableRowBlock);
    block(&mut lang, stdlib::CommentBlock);
    block(&mut lang, stdlib::CaptureBlock);
    block(&mut lang, stdlib::CaseBlock);
    filter(&mut lang, stdlib::Abs);
    filter(&mut lang, stdlib::Append);
    filter(&mut lang, stdlib::AtLeast);
    filter(&mut lang, stdlib::AtMost);
    filter(&mut lang, stdlib::Capitalize);
    filter(&mut lang, stdlib::Ceil);
    filter(&mut lang, stdlib::Compact);
    filter(&mut lang, stdlib::Concat);
    filter(&mut lang, stdlib::Date);
    filter(&mut lang, stdlib::Default);
    filter(&mut lang, stdlib::DividedBy);
    filter(&mut lang, stdlib::Downcase);
    filter(&mut lang, stdlib::Escape);
    filter(&mut lang, stdlib::EscapeOnce);
    filter(&mut lang, stdlib::First);
    filter(&mut lang, stdlib::Floor);
    filter(&mut lang, stdlib::Join);
    filter(&mut lang, stdlib::Last);
    filter(&mut lang, stdlib::Lstrip);
    filter(&mut lang, stdlib::Map);
    filter(&mut lang, stdlib::Minus);
    filter(&mut lang, stdlib::Modulo);
    filter(&mut lang, stdlib::NewlineToBr);
    filter(&mut lang, stdlib::Plus);
    filter(&mut lang, stdlib::Prepend);
    filter(&mut lang, stdlib::Remove);
    filter(&mut lang, stdlib::RemoveFirst);
    filter(&mut lang, stdlib::Replace);
    filter(&mut lang, stdlib::ReplaceFirst);
    filter(&mut lang, stdlib::Reverse);
    filter(&mut lang, stdlib::Round);
    filter(&mut lang, stdlib::Rstrip);
    filter(&mut lang, stdlib::Size);
    filter(&mut lang, stdlib::Slice);
    filter(&mut lang, stdlib::Sort);
    filter(&mut lang, stdlib::SortNatural);
    filter(&mut lang, stdlib::Split);
    filter(&mut lang, stdlib::Strip);
    filter(&mut lang, stdlib::StripHtml);
    filter(&mut lang, stdlib::StripNewlines);
    filter(&mut lang, stdlib::Times);
    filter(&mut lang, stdlib::Truncate);
    filter(&mut lang, stdlib::TruncateWords);
    filter(&mut lang, stdlib::Uniq);
    filter(&mut lang, stdlib::Upcase);
    filter(&mut lang, stdlib::UrlDecode);
    filter(&mut lang, stdlib::UrlEncode);
    filter(&mut lang, stdlib::Where);
    filter(&mut lang, JsonFilterParser);
    if json_tags {
        for context in [
            OutputContext::StringContent,
            OutputContext::Value,
            OutputContext::Raw,
        ] {
            tag(&mut lang, JsonOutputTag(context));
        }
    }
    lang
}

/// The two languages: plain (the author's text), and with the JSON-safe output tags (the
/// rewritten text); and the filter names, for the static check.
struct Languages {
    plain: Language,
    rewritten: Language,
    filters: HashSet<String>,
}

static LANGUAGES: LazyLock<Languages> = LazyLock::new(|| {
    let plain = language(false);
    let filters = plain.filters.plugin_names().map(str::to_owned).collect();
    Languages {
        plain,
        rewritten: language(true),
        filters,
    }
});

fn parse(text: &str, lang: &Language) -> liquid_core::Result<liquid_core::runtime::Template> {
    liquid_core::parser::parse(text, lang).map(liquid_core::runtime::Template::new)
}

/// A compiled template: ready to render rows.
pub(crate) struct CompiledTemplate {
    template: liquid_core::runtime::Template,
    whitespace: json::Whitespace,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate").finish_non_exhaustive()
    }
}

impl CompiledTemplate {
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
        let template = match escape {
            Escape::None => parse(source, &langs.plain),
            Escape::Json => parse(&rewrite(source, &segments, &contexts), &langs.rewritten),
        }
        .map_err(|e| vec![liquid_error(source, &segments, &e.to_string())])?;
        Ok(Self {
            template,
            whitespace,
        })
    }

    /// Whether rendered output may need compacting.
    pub(crate) fn whitespace(&self) -> json::Whitespace {
        self.whitespace
    }

    /// Renders into `out`, which the caller has cleared.
    pub(crate) fn render(&self, globals: &dyn ObjectView, out: &mut Vec<u8>) -> Result<(), String> {
        // The stack `liquid::Template::render_to` builds, with `Frame` in place of liquid's
        // `StackFrame` for the globals and `Scratch` for its `GlobalFrame` and `IndexFrame`.
        let runtime = Scratch {
            parent: Frame {
                parent: liquid_core::runtime::RuntimeCore::new(),
                names: globals,
            },
            assigned: RefCell::default(),
            counters: RefCell::default(),
        };
        self.template
            .render_to(out, &runtime)
            .map_err(|e| clean_message(&e.to_string()))
    }
}

/// A frame of names (the template's globals, or a loop's variable and `forloop`).
///
/// Liquid's own `StackFrame` answers every `get` with an owned copy of the value found, so a
/// template reading ten string columns clones ten strings per row. The row outlives the
/// render, so this frame lends the values instead. Lookups otherwise behave as liquid's: this
/// frame's names first, then the parent's.
pub(crate) struct Frame<'g, P> {
    pub(crate) parent: P,
    pub(crate) names: &'g dyn ObjectView,
}

impl<P: Runtime> Runtime for Frame<'_, P> {
    fn partials(&self) -> &dyn liquid_core::runtime::PartialStore {
        self.parent.partials()
    }
    fn name(&self) -> Option<liquid_core::model::KStringRef<'_>> {
        self.parent.name()
    }
    fn roots(&self) -> std::collections::BTreeSet<liquid_core::model::KStringCow<'_>> {
        let mut roots = self.parent.roots();
        roots.extend(self.names.keys());
        roots
    }
    fn try_get(&self, path: &[ScalarCow<'_>]) -> Option<ValueCow<'_>> {
        let (first, rest) = path.split_first()?;
        match self.names.get(first.to_kstr().as_str()) {
            Some(value) => liquid_core::model::try_find(value, rest),
            None => self.parent.try_get(path),
        }
    }
    fn get(&self, path: &[ScalarCow<'_>]) -> liquid_core::Result<ValueCow<'_>> {
        let Some((first, rest)) = path.split_first() else {
            return self.parent.get(path);
        };
        match self.names.get(first.to_kstr().as_str()) {
            // Through the frame's own object, so a missing index gets liquid's own message.
            Some(_) if !rest.is_empty() => liquid_core::model::find(self.names.as_value(), path),
            Some(value) => Ok(ValueCow::Borrowed(value)),
            None => self.parent.get(path),
        }
    }
    fn set_global(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.parent.set_global(name, val)
    }
    fn set_index(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.parent.set_index(name, val)
    }
    fn get_index<'a>(&'a self, name: &str) -> Option<ValueCow<'a>> {
        self.parent.get_index(name)
    }
    fn registers(&self) -> &liquid_core::runtime::Registers {
        self.parent.registers()
    }
}

/// The top frame: what `{% assign %}`, `{% capture %}`, `{% increment %}` and
/// `{% decrement %}` store while a row renders. It stands where liquid's `GlobalFrame` does,
/// above the globals, so an assigned name shadows a global one as in liquid; and it holds the
/// counters too (liquid keeps them in a frame that is not public). Most templates store
/// nothing, so a lookup costs one emptiness check here.
#[derive(Default)]
struct Scratch<P> {
    parent: P,
    assigned: RefCell<liquid_core::Object>,
    counters: RefCell<liquid_core::Object>,
}

impl<P: Runtime> Scratch<P> {
    /// The stored value at `path`, if its first name was stored.
    fn find(&self, path: &[ScalarCow<'_>]) -> Option<liquid_core::Result<ValueCow<'static>>> {
        for store in [&self.assigned, &self.counters] {
            let store = store.borrow();
            if store.is_empty() {
                continue;
            }
            if let Some(key) = path.first()
                && store.contains_key(key.to_kstr().as_str())
            {
                let found = liquid_core::model::find(store.as_value(), path);
                return Some(found.map(|v| ValueCow::Owned(v.into_owned())));
            }
        }
        None
    }
}

impl<P: Runtime> Runtime for Scratch<P> {
    fn partials(&self) -> &dyn liquid_core::runtime::PartialStore {
        self.parent.partials()
    }
    fn name(&self) -> Option<liquid_core::model::KStringRef<'_>> {
        self.parent.name()
    }
    fn roots(&self) -> std::collections::BTreeSet<liquid_core::model::KStringCow<'_>> {
        let mut roots = self.parent.roots();
        roots.extend(self.assigned.borrow().keys().map(|k| k.clone().into()));
        roots
    }
    fn try_get(&self, path: &[ScalarCow<'_>]) -> Option<ValueCow<'_>> {
        match self.find(path) {
            Some(found) => found.ok(),
            None => self.parent.try_get(path),
        }
    }
    fn get(&self, path: &[ScalarCow<'_>]) -> liquid_core::Result<ValueCow<'_>> {
        match self.find(path) {
            Some(found) => found,
            None => self.parent.get(path),
        }
    }
    fn set_global(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.assigned.borrow_mut().insert(name, val)
    }
    fn set_index(
        &self,
        name: liquid_core::model::KString,
        val: liquid_core::Value,
    ) -> Option<liquid_core::Value> {
        self.counters.borrow_mut().insert(name, val)
    }
    fn get_index<'a>(&'a self, name: &str) -> Option<ValueCow<'a>> {
        self.counters
            .borrow()
            .get(name)
            .map(|v| ValueCow::Owned(v.clone()))
    }
    fn registers(&self) -> &liquid_core::runtime::Registers {
        self.parent.registers()
    }
}

/// Liquid's error text as one line: its explanation and context, without its copy of the
/// source line, at most 500 bytes (liquid's messages quote the values involved).
fn clean_message(message: &str) -> String {
    const MAX: usize = 500;
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !(l.is_empty()
                || *l == "with:"
                || l.starts_with("-->")
                || l.starts_with('|')
                || l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        })
        .map(|l| {
            l.trim_start_matches("liquid:")
                .trim_start_matches("= ")
                .trim()
        })
        .filter(|l| !l.is_empty() && !l.starts_with("-->"))
        .collect();
    let mut text = parts.join("; ").replace(".;", ";");
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Turns a liquid parse error into a located compile error. Liquid's syntax errors come from
/// pest and carry ` --> line:column`; errors about a filter's arguments name the filter, which
/// is found in the source; anything else points at the template's start.
fn liquid_error(source: &str, segments: &[Segment], message: &str) -> CompileError {
    let from_pest = message.split_once("--> ").and_then(|(_, rest)| {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ':'))
            .unwrap_or(rest.len());
        let (line, column) = rest[..end].split_once(':')?;
        Some(Location::from_line_column(
            source,
            line.parse().ok()?,
            column.parse().ok()?,
        ))
    });
    let from_filter = || {
        let (_, rest) = message.split_once("filter=")?;
        let name = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()?;
        filter_offsets(source, segments)
            .find(|(n, _)| *n == name)
            .map(|(_, at)| Location::at(source, at))
    };
    let location = from_pest
        .filter(|_| !message.contains("Unclosed block"))
        .or_else(|| unclosed_block(source, segments, message))
        .or_else(from_filter)
        .unwrap_or_else(|| Location::at(source, 0));
    CompileError::TemplateSyntax {
        location,
        message: clean_message(message),
    }
}

/// For liquid's "Unclosed block. {% endX %} tag expected." (which it places at the end of the
/// template), the opening tag that was never closed.
fn unclosed_block(source: &str, segments: &[Segment], message: &str) -> Option<Location> {
    let (_, rest) = message.split_once("{% end")?;
    let block = rest
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()?;
    let end = format!("end{block}");
    let mut open = Vec::new();
    for segment in segments.iter().filter(|s| s.kind == Kind::Tag) {
        let name = segment.tag_name(source);
        if name == block {
            open.push(segment.start);
        } else if name == end {
            open.pop();
        }
    }
    open.last().map(|&at| Location::at(source, at))
}

/// Every filter name used in the template, with its byte offset.
fn filter_offsets<'s>(
    source: &'s str,
    segments: &[Segment],
) -> impl Iterator<Item = (&'s str, usize)> {
    segments
        .iter()
        .filter(|s| matches!(s.kind, Kind::Output | Kind::Tag))
        .flat_map(move |s| {
            let toks = tokens(source, s.inner_start, s.inner_end);
            toks.windows(2)
                .filter_map(|w| match (w[0].0, w[1]) {
                    (Tok::Punct(b'|'), (Tok::Ident(name), at)) => Some((name, at)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
}

// ---- Step 1: lexing ----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Literal text (also the body of `{% raw %}`).
    Text,
    /// `{{ ... }}`.
    Output,
    /// `{% name ... %}`.
    Tag,
    /// A whole `{% comment %}...{% endcomment %}`: no output, nothing to check.
    Comment,
}

#[derive(Debug, Clone)]
struct Segment {
    kind: Kind,
    /// The whole segment, delimiters included.
    start: usize,
    end: usize,
    /// Between the delimiters and their `-` trim markers.
    inner_start: usize,
    inner_end: usize,
}

impl Segment {
    fn inner<'s>(&self, source: &'s str) -> &'s str {
        &source[self.inner_start..self.inner_end]
    }

    fn tag_name<'s>(&self, source: &'s str) -> &'s str {
        let inner = self.inner(source).trim_start();
        let end = inner
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        &inner[..end]
    }
}

fn lex(source: &str) -> Result<Vec<Segment>, CompileError> {
    let bytes = source.as_bytes();
    let mut segments = Vec::new();
    let mut pos = 0;
    let text = |start: usize, end: usize| Segment {
        kind: Kind::Text,
        start,
        end,
        inner_start: start,
        inner_end: end,
    };
    while pos < bytes.len() {
        let Some(open) = find_open(bytes, pos) else {
            segments.push(text(pos, bytes.len()));
            break;
        };
        if open > pos {
            segments.push(text(pos, open));
        }
        let segment = delimited(source, open)?;
        pos = segment.end;
        let name = if segment.kind == Kind::Tag {
            segment.tag_name(source)
        } else {
            ""
        };
        match name {
            "raw" => {
                let (body_end, close) =
                    find_end_tag(source, pos, "raw", "endraw").ok_or_else(|| {
                        CompileError::unclosed_block(source, segment.start, "raw", "endraw")
                    })?;
                segments.push(segment);
                segments.push(text(pos, body_end));
                segments.push(close.clone());
                pos = close.end;
            }
            "comment" => {
                let (_, close) =
                    find_end_tag(source, pos, "comment", "endcomment").ok_or_else(|| {
                        CompileError::unclosed_block(source, segment.start, "comment", "endcomment")
                    })?;
                segments.push(Segment {
                    kind: Kind::Comment,
                    end: close.end,
                    ..segment
                });
                pos = close.end;
            }
            _ => segments.push(segment),
        }
    }
    Ok(segments)
}

/// The next `{{` or `{%` at or after `from`.
fn find_open(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'{' && (bytes[i + 1] == b'{' || bytes[i + 1] == b'%'))
}

/// The output tag or tag opening at `open`, up to its closing delimiter (quotes respected).
fn delimited(source: &str, open: usize) -> Result<Segment, CompileError> {
    let bytes = source.as_bytes();
    let is_output = bytes[open + 1] == b'{';
    let close = if is_output { b'}' } else { b'%' };
    let mut quote = None;
    let mut i = open + 2;
    while i + 1 < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == close && bytes[i + 1] == b'}' => {
                let mut inner_start = open + 2;
                let mut inner_end = i;
                if bytes.get(inner_start) == Some(&b'-') {
                    inner_start += 1;
                }
                if inner_end > inner_start && bytes[inner_end - 1] == b'-' {
                    inner_end -= 1;
                }
                return Ok(Segment {
                    kind: if is_output { Kind::Output } else { Kind::Tag },
                    start: open,
                    end: i + 2,
                    inner_start,
                    inner_end,
                });
            }
            None => {}
        }
        i += 1;
    }
    Err(CompileError::TemplateSyntax {
        location: Location::at(source, open),
        message: format!(
            "this {} is never closed with `{}`",
            if is_output {
                "output tag `{{`"
            } else {
                "tag `{%`"
            },
            if is_output { "}}" } else { "%}" }
        ),
    })
}

/// Finds the tag closing a `raw` or `comment` body that starts at `from`, counting nested
/// openings of the same block. Gives the body's end and the closing tag.
fn find_end_tag(source: &str, from: usize, open: &str, close: &str) -> Option<(usize, Segment)> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut pos = from;
    while let Some(at) =
        (pos..bytes.len().saturating_sub(1)).find(|&i| bytes[i] == b'{' && bytes[i + 1] == b'%')
    {
        let Ok(tag) = delimited(source, at) else {
            return None;
        };
        let name = tag.tag_name(source);
        if name == close {
            if depth == 0 {
                return Some((at, tag));
            }
            depth -= 1;
        } else if name == open && open != "raw" {
            depth += 1;
        }
        pos = tag.end;
    }
    None
}

// ---- Step 2: static checks ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(&'a str),
    Punct(u8),
    Other,
}

/// Splits the inside of a tag into liquid's tokens, each with its byte offset in `source`.
fn tokens(source: &str, start: usize, end: usize) -> Vec<(Tok<'_>, usize)> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = start;
    while i < end {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b.is_ascii_alphabetic() || b == b'_' {
            let s = i;
            while i < end
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
            {
                i += 1;
            }
            if i < end && bytes[i] == b'?' {
                i += 1;
            }
            out.push((Tok::Ident(&source[s..i]), s));
        } else if b == b'"' || b == b'\'' {
            let s = i;
            i += 1;
            while i < end && bytes[i] != b {
                i += 1;
            }
            out.push((Tok::Str(&source[s + 1..i.min(end)]), s));
            i += 1;
        } else if b.is_ascii_digit() {
            let s = i;
            while i < end
                && (bytes[i].is_ascii_digit()
                    || (bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                i += 1;
            }
            out.push((Tok::Other, s));
        } else if matches!(b, b'.' | b'[' | b']' | b'|' | b':' | b',') {
            out.push((Tok::Punct(b), i));
            i += 1;
        } else {
            // Operators and anything liquid will judge itself; skip a whole UTF-8 character.
            let s = i;
            i += source[i..].chars().next().map_or(1, char::len_utf8);
            out.push((Tok::Other, s));
        }
    }
    out
}

fn check_references(
    source: &str,
    segments: &[Segment],
    schema: &Schema,
    filters: &HashSet<String>,
    errors: &mut Vec<CompileError>,
) {
    let mut known: Vec<String> = filters.iter().cloned().collect();
    known.sort();
    for (name, at) in filter_offsets(source, segments) {
        if !filters.contains(name) {
            errors.push(CompileError::UnknownFilter {
                location: Location::at(source, at),
                name: name.to_owned(),
                suggestion: closest(name, &known),
            });
        }
    }
    for segment in segments {
        let skip = match segment.kind {
            Kind::Output => 0,
            Kind::Tag => 1, // the tag's own name
            Kind::Text | Kind::Comment => continue,
        };
        let toks = tokens(source, segment.inner_start, segment.inner_end);
        for i in skip..toks.len() {
            let Tok::Ident(root) = toks[i].0 else {
                continue;
            };
            let prev = i.checked_sub(1).map(|p| toks[p].0);
            let next = |k: usize| toks.get(i + k).map(|t| t.0);
            let is_root = ROOTS_WITH_COLUMNS.contains(&root)
                && !matches!(prev, Some(Tok::Punct(b'.' | b'|')))
                && next(1) != Some(Tok::Punct(b':'));
            if !is_root {
                continue;
            }
            let column = match (next(1), next(2), next(3)) {
                (Some(Tok::Punct(b'.')), Some(Tok::Ident(c)), _) => Some((c, toks[i + 2].1)),
                // Point past the opening quote, at the name itself.
                (Some(Tok::Punct(b'[')), Some(Tok::Str(c)), Some(Tok::Punct(b']'))) => {
                    Some((c, toks[i + 2].1 + 1))
                }
                _ => None,
            };
            if let Some((name, offset)) = column
                && schema.index_of(name).is_none()
                && name != "size"
            {
                errors.push(CompileError::UnknownColumn {
                    location: Location::at(source, offset),
                    scope: root.to_owned(),
                    name: name.to_owned(),
                    suggestion: schema.closest_column(name),
                });
            }
        }
    }
}

// ---- Step 3: JSON contexts and the rewrite ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputContext {
    /// Inside a JSON string: escape as string content.
    StringContent,
    /// Outside any string: write a JSON value.
    Value,
    /// Outside any string, last filter `json`: the value already is JSON text.
    Raw,
}

impl OutputContext {
    fn tag(self) -> &'static str {
        match self {
            OutputContext::StringContent => "_kj_str",
            OutputContext::Value => "_kj_value",
            OutputContext::Raw => "_kj_raw",
        }
    }
}

/// Follows the literal text as JSON and gives, for each output segment in order, whether it
/// stands inside a string; and whether any literal text has whitespace outside strings (the
/// only whitespace a JSON-safe template's output can have there).
fn json_contexts(
    source: &str,
    segments: &[Segment],
    errors: &mut Vec<CompileError>,
) -> (Vec<OutputContext>, json::Whitespace) {
    let mut contexts = Vec::new();
    let mut whitespace = json::Whitespace::Absent;
    let (mut in_string, mut escaped, mut opened_at) = (false, false, 0);
    for segment in segments {
        match segment.kind {
            Kind::Text => {
                for (i, b) in source.as_bytes()[segment.start..segment.end]
                    .iter()
                    .enumerate()
                {
                    if in_string {
                        if escaped {
                            escaped = false;
                        } else if *b == b'\\' {
                            escaped = true;
                        } else if *b == b'"' {
                            in_string = false;
                        }
                    } else if *b == b'"' {
                        in_string = true;
                        opened_at = segment.start + i;
                    } else if b.is_ascii_whitespace() {
                        whitespace = json::Whitespace::Possible;
                    }
                }
            }
            Kind::Output => {
                let context = if in_string {
                    OutputContext::StringContent
                } else if last_filter(source, segment) == Some("json") {
                    OutputContext::Raw
                } else {
                    OutputContext::Value
                };
                contexts.push(context);
            }
            Kind::Tag | Kind::Comment => {}
        }
    }
    if in_string {
        errors.push(CompileError::UnterminatedString {
            location: Location::at(source, opened_at),
        });
    }
    (contexts, whitespace)
}

fn last_filter<'s>(source: &'s str, segment: &Segment) -> Option<&'s str> {
    let toks = tokens(source, segment.inner_start, segment.inner_end);
    let bar = toks.iter().rposition(|(t, _)| *t == Tok::Punct(b'|'))?;
    match toks.get(bar + 1) {
        Some((Tok::Ident(name), _)) => Some(name),
        _ => None,
    }
}

/// The source with each output tag turned into the JSON-writing tag of its context.
fn rewrite(source: &str, segments: &[Segment], contexts: &[OutputContext]) -> String {
    let mut out = String::with_capacity(source.len() + contexts.len() * 16);
    let mut contexts = contexts.iter();
    for segment in segments {
        if segment.kind != Kind::Output {
            out.push_str(&source[segment.start..segment.end]);
            continue;
        }
        let context = contexts.next().expect("one context per output tag");
        let trim_left = segment.inner_start > segment.start + 2;
        let trim_right = segment.inner_end < segment.end - 2;
        out.push_str(if trim_left { "{%- " } else { "{% " });
        out.push_str(context.tag());
        out.push(' ');
        out.push_str(segment.inner(source).trim());
        out.push_str(if trim_right { " -%}" } else { " %}" });
    }
    out
}

// ---- The tags and the filter that write JSON ----

thread_local! {
    /// Scratch space for one output tag's JSON; reused so rendering does not allocate.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug, Clone, Copy)]
struct JsonOutputTag(OutputContext);

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
        let value = self.value(runtime)?;
        let value = value.as_view();
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            match self.context {
                OutputContext::StringContent => json::write_view_str_content(value, &mut buf),
                OutputContext::Value => json::write_view_json(value, &mut buf),
                OutputContext::Raw => buf.extend_from_slice(value.to_kstr().as_bytes()),
            }
            writer
                .write_all(&buf)
                .map_err(|e| liquid_core::Error::with_msg(format!("cannot write output: {e}")))
        })
    }
}

/// The `json` filter: the value as compact JSON text.
#[derive(Debug, Clone, Copy, Default)]
struct JsonFilterParser;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<(Kind, &str)> {
        lex(source)
            .unwrap()
            .into_iter()
            .map(|s| (s.kind.clone(), &source[s.start..s.end]))
            .collect()
    }

    #[test]
    fn lexer_respects_quotes_raw_and_comments() {
        assert_eq!(
            kinds(r#"{"a":"{{ row.x | append: "}}" }}"}"#),
            vec![
                (Kind::Text, r#"{"a":""#),
                (Kind::Output, r#"{{ row.x | append: "}}" }}"#),
                (Kind::Text, r#""}"#),
            ]
        );
        let source = "{% raw %}{{ not }}{% endraw %}{% comment %}{% comment %}x{% endcomment %}{{ y }}{% endcomment %}1";
        assert_eq!(
            kinds(source),
            vec![
                (Kind::Tag, "{% raw %}"),
                (Kind::Text, "{{ not }}"),
                (Kind::Tag, "{% endraw %}"),
                (
                    Kind::Comment,
                    "{% comment %}{% comment %}x{% endcomment %}{{ y }}{% endcomment %}"
                ),
                (Kind::Text, "1"),
            ]
        );
    }

    #[test]
    fn rewrite_chooses_the_tag_by_json_context() {
        let source =
            r#"{"a": "{{- row.a }} \"{{ row.b }}", "b": {{ row.b -}}, "c": {{ row.c | json }}}"#;
        let segments = lex(source).unwrap();
        let mut errors = Vec::new();
        let (contexts, whitespace) = json_contexts(source, &segments, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(whitespace, json::Whitespace::Possible);
        assert_eq!(
            rewrite(source, &segments, &contexts),
            r#"{"a": "{%- _kj_str row.a %} \"{% _kj_str row.b %}", "b": {% _kj_value row.b -%}, "c": {% _kj_raw row.c | json %}}"#
        );
    }
}
