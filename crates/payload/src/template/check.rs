//! Step 2 of compiling a template: the static checks that need no row. Every `row.x`,
//! `row['x']` and `previous.x` must name a column of the schema, and every filter must exist.
//!
//! Where it sits: segments → **these checks** → compile errors with their places, so a bad
//! template is refused when it compiles, before any row is read, instead of failing on every
//! row.

use std::collections::HashSet;

use super::lex::{Kind, Segment, Tok, filter_offsets, tokens};
use crate::RecordInfo;
use crate::error::{CompileError, Location};
use crate::schema::{Schema, closest};

/// The names a template may reference besides its own `assign`s and loop variables, whose
/// fields are columns. (`record`'s fields are checked against [`RecordInfo::FIELDS`].)
const ROOTS_WITH_COLUMNS: [&str; 2] = ["row", "previous"];

/// Adds an error for each filter that does not exist and each `row` / `previous` column the
/// schema does not have. `size` is let through: it is liquid's own property, not a column.
pub(super) fn check_references(
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
            let is_global =
                !matches!(prev, Some(Tok::Punct(b'.' | b'|'))) && next(1) != Some(Tok::Punct(b':'));
            if root == "record"
                && is_global
                && let (Some(Tok::Punct(b'.')), Some(Tok::Ident(field))) = (next(1), next(2))
                && !RecordInfo::FIELDS.contains(&field)
            {
                errors.push(CompileError::UnknownRecordField {
                    location: Location::at(source, toks[i + 2].1),
                    name: field.to_owned(),
                });
            }
            let is_root = ROOTS_WITH_COLUMNS.contains(&root) && is_global;
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
