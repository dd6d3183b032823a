//! What goes wrong compiling a payload spec, and what goes wrong rendering one row.
//!
//! Where it sits: at both steps of the data path (row → compiled payload → rendered JSON
//! message): [`CompileErrors`] when a spec is compiled, [`RenderError`] when one row is
//! rendered.

use std::fmt;

use crate::json::InvalidJson;
use crate::schema::did_you_mean;

/// A place in a template's text: 1-based line and column (in characters), and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Byte offset into the template.
    pub offset: usize,
}

impl Location {
    /// The location of byte `offset` in `source`.
    pub fn at(source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            offset,
        }
    }

    /// The location of a 1-based line and character column in `source`.
    pub fn from_line_column(source: &str, line: usize, column: usize) -> Self {
        let line_start: usize = source
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum();
        let offset = source[line_start..]
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(source.len(), |(i, _)| line_start + i);
        Self {
            line,
            column,
            offset,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// One problem found compiling a payload spec. Template problems carry their [`Location`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// Liquid could not parse the template.
    #[error("{location}: template syntax error: {message}")]
    TemplateSyntax {
        /// Where.
        location: Location,
        /// Liquid's explanation.
        message: String,
    },
    /// A filter that neither Liquid's standard library nor kinesync provides.
    #[error("{location}: unknown filter `{name}`{}", did_you_mean(.suggestion))]
    UnknownFilter {
        /// Where the filter's name starts.
        location: Location,
        /// The name used.
        name: String,
        /// The closest existing filter.
        suggestion: Option<String>,
    },
    /// `row.x` (or `previous.x`) where the model has no column `x`.
    #[error("{location}: `{scope}` has no column `{name}`{}", did_you_mean(.suggestion))]
    UnknownColumn {
        /// Where the column name starts.
        location: Location,
        /// `row` or `previous`.
        scope: String,
        /// The column named.
        name: String,
        /// The closest existing column.
        suggestion: Option<String>,
    },
    /// A JSON string opened in the template's text is never closed.
    #[error("{location}: this JSON string is never closed in the template")]
    UnterminatedString {
        /// Where the string's opening quote is.
        location: Location,
    },
    /// A spec setting names a column the model does not have.
    #[error("{setting} names column {name:?}, which the model does not have{}", did_you_mean(.suggestion))]
    UnknownSpecColumn {
        /// Which setting (`payload.column`, `payload.fields[2].from`, ...).
        setting: String,
        /// The column named.
        name: String,
        /// The closest existing column.
        suggestion: Option<String>,
    },
    /// A mapping field renames to the empty string.
    #[error("payload.fields[{index}] maps {from:?} to an empty name")]
    EmptyTarget {
        /// The field's position (0-based).
        index: usize,
        /// Its source column.
        from: String,
    },
    /// Two mapping fields write the same name.
    #[error("payload.fields[{index}] writes {to:?}, which payload.fields[{first}] already writes")]
    DuplicateTarget {
        /// The later field's position (0-based).
        index: usize,
        /// The earlier one's.
        first: usize,
        /// The repeated name.
        to: String,
    },
    /// A mapping without fields.
    #[error("payload mode \"mapping\" needs at least one field")]
    EmptyMapping,
    /// A record id field asked of a template, which writes `record.id` itself.
    #[error("payload.record_id_field is for the row, column and mapping modes")]
    RecordIdFieldInTemplate,
    /// The record id field is empty, or a member the message already has.
    #[error("payload.record_id_field {field:?} is empty or already a member of every message")]
    RecordIdFieldTaken {
        /// The field.
        field: String,
    },
    /// `record.x` where `x` is not something a template can know about its record.
    #[error("{location}: `record` has no field `{name}`")]
    UnknownRecordField {
        /// Where the field's name starts.
        location: Location,
        /// The field named.
        name: String,
    },
}

impl CompileError {
    pub(crate) fn unclosed_block(source: &str, offset: usize, block: &str, end: &str) -> Self {
        CompileError::TemplateSyntax {
            location: Location::at(source, offset),
            message: format!("`{{% {block} %}}` is never closed with `{{% {end} %}}`"),
        }
    }

    /// Where in the template the problem is, for template problems.
    pub fn location(&self) -> Option<Location> {
        match self {
            CompileError::TemplateSyntax { location, .. }
            | CompileError::UnknownFilter { location, .. }
            | CompileError::UnknownColumn { location, .. }
            | CompileError::UnknownRecordField { location, .. }
            | CompileError::UnterminatedString { location } => Some(*location),
            _ => None,
        }
    }

    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            CompileError::TemplateSyntax { .. } => {
                "check the tag's spelling and that every `{{` has its `}}`, every `{%` its `%}`, and every block its end tag".into()
            }
            CompileError::UnknownFilter { suggestion, .. } => match suggestion {
                Some(s) => format!("use `{s}`, or another of Liquid's standard filters or `json`"),
                None => "use one of Liquid's standard filters (upcase, default, date, ...) or `json`".into(),
            },
            CompileError::UnknownColumn { name, suggestion, .. } => match suggestion {
                Some(s) => format!("use `{s}`; column names are case-sensitive; for names with spaces write row['{name}']"),
                None => "check the model's columns; column names are case-sensitive".into(),
            },
            CompileError::UnterminatedString { .. } => {
                "close the string with `\"`; if a string opens in one branch and closes in another, set escape = \"none\" and escape values yourself".into()
            }
            CompileError::UnknownSpecColumn { .. } => "use one of the model's column names".into(),
            CompileError::EmptyTarget { .. } => "give the field a non-empty `to` name".into(),
            CompileError::DuplicateTarget { .. } => "give each field its own `to` name".into(),
            CompileError::EmptyMapping => "add [[payload.fields]] entries with `from` and `to`".into(),
            CompileError::RecordIdFieldInTemplate => {
                "remove record_id_field, and write `\"id\": \"{{ record.id }}\"` where the template wants it".into()
            }
            CompileError::RecordIdFieldTaken { .. } => {
                "choose a name no column (or mapped field) has, such as \"_record_id\"".into()
            }
            CompileError::UnknownRecordField { .. } => {
                "use record.id, record.run_id or record.sent_at".into()
            }
        }
    }
}

/// Every problem found compiling a payload spec (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl CompileErrors {
    /// The problems, in the order found.
    pub fn errors(&self) -> &[CompileError] {
        &self.0
    }

    /// A compiler-style report: for each problem, `origin:line:column`, the message, the
    /// template's line with a caret under the place, and the fix. `origin` names the file the
    /// template lives in; when the template sits inside a larger file (an inline template in a
    /// config file), `line_offset` lines and, on its first line, `column_offset` characters
    /// come before it there.
    pub fn render(
        &self,
        origin: &str,
        source: Option<&str>,
        line_offset: usize,
        column_offset: usize,
    ) -> String {
        let mut out = String::new();
        for error in &self.0 {
            let message = strip_location(error);
            match (error.location(), source) {
                (Some(loc), Some(source)) => {
                    let line_no = loc.line + line_offset;
                    let column = loc.column + if loc.line == 1 { column_offset } else { 0 };
                    let text = source.lines().nth(loc.line - 1).unwrap_or("");
                    let gutter = " ".repeat(line_no.to_string().len());
                    out.push_str(&format!("error: {message}\n"));
                    out.push_str(&format!("{gutter}--> {origin}:{line_no}:{column}\n"));
                    out.push_str(&format!("{gutter} |\n{line_no} | {text}\n"));
                    out.push_str(&format!("{gutter} | {}^\n", " ".repeat(loc.column - 1)));
                    out.push_str(&format!("{gutter} = help: {}\n", error.help()));
                }
                _ => {
                    out.push_str(&format!(
                        "error: {message}\n  --> {origin}\n   = help: {}\n",
                        error.help()
                    ));
                }
            }
        }
        out
    }
}

fn strip_location(error: &CompileError) -> String {
    let text = error.to_string();
    match error.location() {
        Some(loc) => text.trim_start_matches(&format!("{loc}: ")).to_owned(),
        None => text,
    }
}

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}

impl From<Vec<CompileError>> for CompileErrors {
    fn from(errors: Vec<CompileError>) -> Self {
        Self(errors)
    }
}

/// Why one row could not be turned into a message. The run reports it with the row's primary
/// key and goes on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("row {primary_key}: {kind}")]
pub struct RenderError {
    /// The row's primary key, as JSON (`42`, `"user-7"`).
    pub primary_key: String,
    /// What went wrong.
    pub kind: RenderErrorKind,
}

/// What went wrong rendering one row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderErrorKind {
    /// The output is not one valid JSON value.
    #[error("output is not valid JSON at byte {}: {} (near `{}`)", .0.offset, .0.reason, .0.excerpt)]
    InvalidJson(InvalidJson),
    /// `column` mode: the column does not hold a JSON object or array.
    #[error("column {column:?} does not hold a JSON object or array: {reason}")]
    ColumnNotJson {
        /// The column.
        column: String,
        /// Why not.
        reason: String,
    },
    /// Liquid failed while rendering (an unknown variable, a filter given a bad input, ...).
    #[error("template error{}: {message}", at(location))]
    Template {
        /// What went wrong.
        message: String,
        /// The output tag or tag that failed (for an `elsif` condition, its `if`), in the
        /// template's text.
        location: Option<Location>,
    },
    /// The message passed the largest the caller takes: a template stops rendering there.
    #[error("the message passed {max_bytes} bytes, the most a record may be; rendering stopped")]
    TooLarge {
        /// The most it may be.
        max_bytes: usize,
    },
    /// The message is not a JSON object, so the record id cannot be added to it.
    #[error("the message is not a JSON object, so the record id cannot be added as {field:?}")]
    NotAnObject {
        /// The record id field.
        field: String,
    },
}

/// " at line 3, column 12", or nothing.
fn at(location: &Option<Location>) -> String {
    location.map_or_else(String::new, |l| format!(" at {l}"))
}

impl RenderErrorKind {
    /// A short, stable name for reports: `invalid_json`, `column_not_json`, `template`,
    /// `not_an_object`, `record_too_large`.
    pub fn name(&self) -> &'static str {
        match self {
            RenderErrorKind::InvalidJson(_) => "invalid_json",
            RenderErrorKind::ColumnNotJson { .. } => "column_not_json",
            RenderErrorKind::Template { .. } => "template",
            RenderErrorKind::NotAnObject { .. } => "not_an_object",
            RenderErrorKind::TooLarge { .. } => "record_too_large",
        }
    }
}
