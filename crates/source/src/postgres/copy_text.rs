//! The rows of `COPY ... TO STDOUT`, in PostgreSQL's text format, read back into the texts
//! the server wrote for each value.
//!
//! The format: one row per line (`\n`), values separated by tabs, `\N` for NULL, and inside a
//! value a backslash escaping itself and the control characters the server escapes (`\b`,
//! `\f`, `\n`, `\r`, `\t`, `\v`). So a line break inside a value never ends a row, and each
//! value comes back byte for byte as the server's text of it.

use std::ops::Range;

/// One row's values as the server wrote them.
#[derive(Debug, Default)]
pub(super) struct TextRow {
    /// The values' texts, unescaped, one after another.
    text: String,
    /// Where each value is in `text`; `None` for NULL.
    values: Vec<Option<Range<usize>>>,
}

impl TextRow {
    /// The value at `index`: `None` for NULL (or past the row's end).
    pub(super) fn get(&self, index: usize) -> Option<&str> {
        let range = self.values.get(index)?.clone()?;
        self.text.get(range)
    }

    /// The bytes of the row's values.
    pub(super) fn value_bytes(&self) -> usize {
        self.text.len()
    }

    /// `line` (without its `\n`) as a row, or what is wrong with it.
    pub(super) fn parse(line: &[u8]) -> Result<Self, String> {
        let mut text = Vec::with_capacity(line.len());
        let mut values = Vec::new();
        for value in line.split(|&b| b == b'\t') {
            if value == b"\\N" {
                values.push(None);
                continue;
            }
            let start = text.len();
            unescape(value, &mut text)?;
            values.push(Some(start..text.len()));
        }
        let text = String::from_utf8(text)
            .map_err(|_| "the server sent a row that is not UTF-8".to_owned())?;
        // A value's range falls on character boundaries: the escapes are ASCII.
        Ok(Self { text, values })
    }
}

/// Appends `value` to `out`, its escapes undone.
fn unescape(value: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let mut rest = value;
    while let Some(at) = rest.iter().position(|&b| b == b'\\') {
        out.extend_from_slice(&rest[..at]);
        let escaped = match rest.get(at + 1) {
            Some(b'\\') => b'\\',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'v') => 0x0b,
            other => {
                return Err(format!(
                    "the server sent an escape kinesync does not read: {:?}",
                    other.map(|&b| char::from(b))
                ));
            }
        };
        out.push(escaped);
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The server's escaping (COPY TO's text format), to check the reading against.
    fn escaped(value: &str) -> String {
        let mut out = String::new();
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn null_and_empty_and_escapes_come_back_as_written() {
        let row = TextRow::parse(b"1\t\\N\t\ta\\tb\\nc\\\\N").unwrap();
        assert_eq!(row.get(0), Some("1"));
        assert_eq!(row.get(1), None, "\\N is NULL");
        assert_eq!(row.get(2), Some(""), "an empty string is not NULL");
        assert_eq!(
            row.get(3),
            Some("a\tb\nc\\N"),
            "an escaped backslash then N is text"
        );
        assert_eq!(row.get(4), None, "past the end");
    }

    #[test]
    fn an_unknown_escape_or_bytes_not_utf8_are_errors() {
        assert!(TextRow::parse(b"a\\q").is_err());
        assert!(TextRow::parse(b"trailing\\").is_err());
        assert!(TextRow::parse(b"\xff").is_err());
    }

    proptest! {
        /// Whatever the values (tabs, line breaks, backslashes, any character), a row the
        /// server writes comes back value for value.
        #[test]
        fn any_row_comes_back_value_for_value(
            values in prop::collection::vec(prop::option::of(any::<String>()), 1..6),
        ) {
            let line: Vec<String> = values
                .iter()
                .map(|v| v.as_deref().map_or_else(|| "\\N".to_owned(), escaped))
                .collect();
            let row = TextRow::parse(line.join("\t").as_bytes()).unwrap();
            for (i, value) in values.iter().enumerate() {
                prop_assert_eq!(row.get(i), value.as_deref());
            }
            let bytes: usize = values.iter().flatten().map(String::len).sum();
            prop_assert_eq!(row.value_bytes(), bytes);
        }
    }
}
