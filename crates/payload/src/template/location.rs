//! Where in the author's text a row's rendering failed, so that a render error says "line 3,
//! column 12" as a compile error does.
//!
//! Where it sits: compiling (the text liquid parses → parsed template) and rendering (a
//! failing statement → the row's error).
//!
//! Liquid's parser keeps no positions in what it builds, so they are handed to it in order.
//! Before the rewritten text is parsed, the byte offsets of its statements (each output tag,
//! and each tag that starts a statement: not `else`, `elsif`, `when` or `end...`), as the
//! lexer found them in the author's text, are queued on the compiling thread. Liquid parses
//! statements in the order they stand, a block's body while parsing the block, so each
//! statement takes the next offset as its parse starts: kinesync's output tags
//! (`json_output.rs`) themselves, liquid's tags and blocks through [`Located`]. (Comments are
//! emptied by the rewrite, as liquid parses the tags inside them.)
//!
//! Rendering costs nothing more while nothing fails: a statement whose rendering fails records
//! its offset, unless a statement inside it already did, so the innermost one is reported.
//! An `if`'s `elsif` conditions are reported at the `if`.

use std::cell::{Cell, RefCell};

use liquid_core::parser::TagBlock;
use liquid_core::runtime::Template;
use liquid_core::{
    BlockReflection, Language, ParseBlock, ParseTag, Renderable, Result, Runtime, TagReflection,
    TagTokenIter,
};

use super::lex::{Kind, Segment};

thread_local! {
    /// The byte offset of the statement whose rendering failed on this thread; `usize::MAX`
    /// while none has.
    static FAILED_AT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// While a template parses: the offsets of its statements not yet parsed, last first.
    static PLACES: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Whether `segment` is a statement: an output tag, or a tag that is not one of those that
/// continue or close a block (`else`, `elsif`, `when`, `endif`, ...).
pub(super) fn is_statement(source: &str, segment: &Segment) -> bool {
    match segment.kind {
        Kind::Output => true,
        Kind::Tag => {
            let name = segment.tag_name(source);
            !(matches!(name, "else" | "elsif" | "when") || name.starts_with("end"))
        }
        Kind::Text | Kind::Comment => false,
    }
}

/// Parses `text` (the rewrite of `source`, whose segments are `segments`) with `lang`, each
/// statement given its offset in `source`.
pub(super) fn parse_placed(
    text: &str,
    lang: &Language,
    source: &str,
    segments: &[Segment],
) -> Result<Template> {
    let mut places: Vec<usize> = segments
        .iter()
        .filter(|s| is_statement(source, s))
        .map(|s| s.start)
        .collect();
    places.reverse();
    PLACES.set(places);
    let parsed = liquid_core::parser::parse(text, lang).map(Template::new);
    let left = PLACES.take();
    debug_assert!(
        parsed.is_err() || left.is_empty(),
        "every statement takes its place"
    );
    parsed
}

/// The offset of the statement being parsed (`None` outside [`parse_placed`]).
pub(super) fn next_place() -> Option<usize> {
    PLACES.with_borrow_mut(Vec::pop)
}

/// A row starts rendering on this thread.
pub(super) fn reset() {
    FAILED_AT.set(usize::MAX);
}

/// The byte offset, in the author's text, of the statement whose rendering failed last on
/// this thread.
pub(super) fn failed_at() -> Option<usize> {
    Some(FAILED_AT.get()).filter(|&at| at != usize::MAX)
}

/// `result` of rendering the statement at `place`, its failure recorded there unless a
/// statement inside it recorded one already.
pub(super) fn placed<T>(place: Option<usize>, result: Result<T>) -> Result<T> {
    if result.is_err()
        && let Some(place) = place
        && FAILED_AT.get() == usize::MAX
    {
        FAILED_AT.set(place);
    }
    result
}

/// One of liquid's tags or blocks, its statements placed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Located<P>(pub(super) P);

impl<P: ParseTag + Clone + 'static> ParseTag for Located<P> {
    fn parse(
        &self,
        arguments: TagTokenIter<'_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let place = next_place();
        Ok(statement(place, self.0.parse(arguments, options)?))
    }
    fn reflection(&self) -> &dyn TagReflection {
        self.0.reflection()
    }
}

impl<P: ParseBlock + Clone + 'static> ParseBlock for Located<P> {
    fn parse(
        &self,
        arguments: TagTokenIter<'_>,
        block: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let place = next_place();
        Ok(statement(place, self.0.parse(arguments, block, options)?))
    }
    fn reflection(&self) -> &dyn BlockReflection {
        self.0.reflection()
    }
}

fn statement(place: Option<usize>, inner: Box<dyn Renderable>) -> Box<dyn Renderable> {
    match place {
        Some(place) => Box::new(Placed { place, inner }),
        None => inner,
    }
}

/// A parsed statement and its place.
#[derive(Debug)]
struct Placed {
    place: usize,
    inner: Box<dyn Renderable>,
}

impl Renderable for Placed {
    fn render_to(&self, writer: &mut dyn std::io::Write, runtime: &dyn Runtime) -> Result<()> {
        placed(Some(self.place), self.inner.render_to(writer, runtime))
    }
}
