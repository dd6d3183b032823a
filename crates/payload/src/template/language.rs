//! The Liquid language templates are parsed with: liquid's standard tags, blocks and filters,
//! kinesync's `{% for %}` and arithmetic filters in place of liquid's, the `json` filter, and,
//! for the rewritten text, the location marker and the three JSON-writing output tags.
//!
//! Where it sits: used when a template compiles, to parse its text into the compiled payload.
//! This is the one file that gathers the template's tags, blocks and filters; they do not
//! know about each other.

use std::collections::HashSet;
use std::sync::LazyLock;

use liquid_core::{Language, ParseBlock, ParseFilter, ParseTag};

use super::for_loop::ForBlock;
use super::json_filter::JsonFilterParser;
use super::json_output::{JsonOutputTag, OutputContext};
use super::location::Located;
use super::math_filters;
use super::slice_filter::SliceParser;

/// Liquid's standard library plus the `json` filter. For the `rewritten` text, also the tags
/// the rewrite emits (`json_output.rs`), and every statement's tag or block placed
/// (`location.rs`).
fn language(rewritten: bool) -> Language {
    use liquid_lib::stdlib;
    fn tag<T: ParseTag + Clone + 'static>(lang: &mut Language, t: T, placed: bool) {
        let name = t.reflection().tag().to_owned();
        if placed {
            lang.tags.register(name, Box::new(Located(t)));
        } else {
            lang.tags.register(name, Box::new(t));
        }
    }
    fn block<B: ParseBlock + Clone + 'static>(lang: &mut Language, b: B, placed: bool) {
        let name = b.reflection().start_tag().to_owned();
        if placed {
            lang.blocks.register(name, Box::new(Located(b)));
        } else {
            lang.blocks.register(name, Box::new(b));
        }
    }
    fn filter(lang: &mut Language, f: impl ParseFilter + 'static) {
        let name = f.reflection().name().to_owned();
        lang.filters.register(name, Box::new(f));
    }
    let mut lang = Language::empty();
    // The same set as `liquid::ParserBuilder::with_stdlib()`, with kinesync's `for` and
    // arithmetic.
    tag(&mut lang, stdlib::AssignTag, rewritten);
    tag(&mut lang, stdlib::BreakTag, rewritten);
    tag(&mut lang, stdlib::ContinueTag, rewritten);
    tag(&mut lang, stdlib::CycleTag, rewritten);
    tag(&mut lang, stdlib::IncludeTag, rewritten);
    tag(&mut lang, stdlib::IncrementTag, rewritten);
    tag(&mut lang, stdlib::DecrementTag, rewritten);
    tag(&mut lang, stdlib::RenderTag, rewritten);
    block(&mut lang, stdlib::RawBlock, rewritten);
    block(&mut lang, stdlib::IfBlock, rewritten);
    block(&mut lang, stdlib::UnlessBlock, rewritten);
    block(&mut lang, stdlib::IfChangedBlock, rewritten);
    block(&mut lang, ForBlock, rewritten);
    // (Not `tablerow`: it writes HTML tables, and builds its range whole, however long.)
    // Comments are not statements (`location.rs`).
    block(&mut lang, stdlib::CommentBlock, false);
    block(&mut lang, stdlib::CaptureBlock, rewritten);
    block(&mut lang, stdlib::CaseBlock, rewritten);
    filter(&mut lang, stdlib::Append);
    filter(&mut lang, stdlib::AtLeast);
    filter(&mut lang, stdlib::AtMost);
    filter(&mut lang, stdlib::Capitalize);
    filter(&mut lang, stdlib::Ceil);
    filter(&mut lang, stdlib::Compact);
    filter(&mut lang, stdlib::Concat);
    filter(&mut lang, stdlib::Date);
    filter(&mut lang, stdlib::Default);
    filter(&mut lang, stdlib::Downcase);
    filter(&mut lang, stdlib::Escape);
    filter(&mut lang, stdlib::EscapeOnce);
    filter(&mut lang, stdlib::First);
    filter(&mut lang, stdlib::Floor);
    filter(&mut lang, stdlib::Join);
    filter(&mut lang, stdlib::Last);
    filter(&mut lang, stdlib::Lstrip);
    filter(&mut lang, stdlib::Map);
    filter(&mut lang, stdlib::NewlineToBr);
    filter(&mut lang, stdlib::Prepend);
    filter(&mut lang, stdlib::Remove);
    filter(&mut lang, stdlib::RemoveFirst);
    filter(&mut lang, stdlib::Replace);
    filter(&mut lang, stdlib::ReplaceFirst);
    filter(&mut lang, stdlib::Reverse);
    filter(&mut lang, stdlib::Round);
    filter(&mut lang, stdlib::Rstrip);
    filter(&mut lang, stdlib::Size);
    filter(&mut lang, stdlib::Sort);
    filter(&mut lang, stdlib::SortNatural);
    filter(&mut lang, stdlib::Split);
    filter(&mut lang, stdlib::Strip);
    filter(&mut lang, stdlib::StripHtml);
    filter(&mut lang, stdlib::StripNewlines);
    filter(&mut lang, stdlib::Truncate);
    filter(&mut lang, stdlib::TruncateWords);
    filter(&mut lang, stdlib::Uniq);
    filter(&mut lang, stdlib::Upcase);
    filter(&mut lang, stdlib::UrlDecode);
    filter(&mut lang, stdlib::UrlEncode);
    filter(&mut lang, stdlib::Where);
    filter(&mut lang, JsonFilterParser);
    filter(&mut lang, SliceParser);
    // Checked at the edges of the integers, where liquid's wrap or panic.
    for arithmetic in math_filters::all() {
        filter(&mut lang, arithmetic);
    }
    if rewritten {
        for context in [
            OutputContext::StringContent,
            OutputContext::Value,
            OutputContext::Raw,
            OutputContext::Plain,
        ] {
            // These place themselves.
            tag(&mut lang, JsonOutputTag(context), false);
        }
    }
    lang
}

/// The two languages: plain (the author's text, checked for syntax errors), and with the
/// rewrite's tags (the text parsed for rendering); and the filter names, for the static check.
pub(super) struct Languages {
    pub(super) plain: Language,
    pub(super) rewritten: Language,
    pub(super) filters: HashSet<String>,
}

/// Built once per process: registering liquid's whole library per compile would be waste.
pub(super) static LANGUAGES: LazyLock<Languages> = LazyLock::new(|| {
    let plain = language(false);
    let filters = plain.filters.plugin_names().map(str::to_owned).collect();
    Languages {
        plain,
        rewritten: language(true),
        filters,
    }
});

/// Parses template text with `lang`.
pub(super) fn parse(
    text: &str,
    lang: &Language,
) -> liquid_core::Result<liquid_core::runtime::Template> {
    liquid_core::parser::parse(text, lang).map(liquid_core::runtime::Template::new)
}
