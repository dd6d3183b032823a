//! Liquid's error messages in kinesync's words: a parse error becomes a compile error with the
//! place it points at, and any liquid error becomes one short line.
//!
//! Where it sits: on both sides of the data path, whenever liquid itself refuses. Compiling
//! (template source → compiled payload) reports located syntax errors; rendering (compiled
//! payload → message) reports a row's template error with the cleaned message.

use super::lex::{Kind, Segment, filter_offsets};
use crate::error::{CompileError, Location};

/// Liquid's error text as one line: its explanation and context, without its copy of the
/// source line, at most 500 bytes (liquid's messages quote the values involved).
pub(super) fn clean_message(message: &str) -> String {
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
pub(super) fn liquid_error(source: &str, segments: &[Segment], message: &str) -> CompileError {
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
