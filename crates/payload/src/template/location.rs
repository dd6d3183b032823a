//! Where in the author's text a row's rendering failed, so that a render error says "line 3,
//! column 12" as a compile error does.
//!
//! Where it sits: compiling puts a marker (`{% _kj_at 57 %}`, the byte offset of the
//! statement in the author's text) before each output tag and each statement tag of the text
//! liquid parses; rendering a marker records its offset on the rendering thread. Liquid renders
//! in order, so when a row fails, the last marker rendered is the statement that failed: an
//! output tag, a tag, or the condition of the block it opens (the `elsif` conditions of an
//! `if` are reported at the `if`).
//!
//! Liquid's parser keeps no positions in what it builds, so the places are written into the
//! text it parses. A marker renders nothing and carries the statement's left whitespace trim
//! (`{%-`), so the output is what it was without them.

use std::cell::Cell;

use liquid_core::{Language, ParseTag, Renderable, Runtime, TagReflection, TagTokenIter};

use super::lex::{Kind, Segment};

/// The marker tag's name.
const TAG: &str = "_kj_at";

thread_local! {
    /// The byte offset of the statement being rendered on this thread; `usize::MAX` before
    /// the first.
    static AT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A row starts rendering on this thread.
pub(super) fn reset() {
    AT.set(usize::MAX);
}

/// The byte offset, in the author's text, of the statement rendered last on this thread.
pub(super) fn last() -> Option<usize> {
    Some(AT.get()).filter(|&at| at != usize::MAX)
}

/// Whether `segment` gets a marker: output tags and tags that start a statement, not the
/// tags that continue or close a block (`else`, `elsif`, `when`, `endif`, ...), which may
/// only stand where they stand.
pub(super) fn marks(source: &str, segment: &Segment) -> bool {
    match segment.kind {
        Kind::Output => true,
        Kind::Tag => {
            let name = segment.tag_name(source);
            !(matches!(name, "else" | "elsif" | "when") || name.starts_with("end"))
        }
        Kind::Text | Kind::Comment => false,
    }
}

/// Writes the marker for `segment` (which [`marks`] chose) into `out`.
pub(super) fn write_marker(out: &mut String, segment: &Segment) {
    let trim_left = segment.inner_start > segment.start + 2;
    out.push_str(if trim_left { "{%- " } else { "{% " });
    out.push_str(TAG);
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(segment.start));
    out.push_str(" %}");
}

/// Parses the marker tag.
#[derive(Debug, Clone, Copy)]
pub(super) struct AtTag;

impl TagReflection for AtTag {
    fn tag(&self) -> &str {
        TAG
    }
    fn description(&self) -> &str {
        "kinesync's marker of where a statement stands (written by the compiler, not by authors)"
    }
}

impl ParseTag for AtTag {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        _options: &Language,
    ) -> liquid_core::Result<Box<dyn Renderable>> {
        let token = arguments.expect_next("a byte offset")?;
        let offset = token
            .as_str()
            .parse()
            .map_err(|_| token.raise_custom_error("a byte offset"))?;
        arguments.expect_nothing()?;
        Ok(Box::new(At(offset)))
    }
    fn reflection(&self) -> &dyn TagReflection {
        self
    }
}

/// A parsed marker.
#[derive(Debug)]
struct At(usize);

impl Renderable for At {
    fn render_to(
        &self,
        _writer: &mut dyn std::io::Write,
        _runtime: &dyn Runtime,
    ) -> liquid_core::Result<()> {
        AT.set(self.0);
        Ok(())
    }
}
