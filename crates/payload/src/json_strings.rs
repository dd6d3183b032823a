//! Following JSON text byte by byte to tell whether each byte stands inside a string literal.
//!
//! Where it sits: on both sides of the data path. Compiling a template follows its literal
//! text to decide whether each output tag stands inside a JSON string (template source →
//! compiled payload); checking a rendered message drops whitespace only outside strings
//! (rendered output → compact JSON message). Both read strings with this one scanner, so
//! they cannot disagree about where a string ends.

/// Where a byte stands, relative to JSON string literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Outside every string.
    Outside,
    /// The quote that opens a string.
    Opening,
    /// Inside a string: its content, an escape, or the quote that closes it.
    Inside,
}

/// The scanner's state between bytes; it starts outside any string.
///
/// The state is all it keeps, so text can be fed in pieces: a template's literal text is
/// interrupted by tags, and a string opened before a tag is still open after it (an escape
/// too: a `\` just before `{{ x }}` escapes the first byte after it).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StringScanner {
    in_string: bool,
    /// The previous byte was a `\` inside a string, so this one is escaped.
    escaped: bool,
}

impl StringScanner {
    /// Moves past `b` and says where it stands.
    ///
    /// Only `"` and `\` matter; bytes of multi-byte UTF-8 characters are never either, so
    /// the text can be read as bytes.
    #[inline]
    pub(crate) fn step(&mut self, b: u8) -> Place {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            Place::Inside
        } else if b == b'"' {
            self.in_string = true;
            Place::Opening
        } else {
            Place::Outside
        }
    }

    /// Whether the bytes so far leave a string open.
    pub(crate) fn in_string(&self) -> bool {
        self.in_string
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(text: &[u8]) -> String {
        let mut scanner = StringScanner::default();
        text.iter()
            .map(|&b| match scanner.step(b) {
                Place::Outside => '.',
                Place::Opening => '(',
                Place::Inside => 's',
            })
            .collect()
    }

    #[test]
    fn escapes_do_not_end_a_string() {
        assert_eq!(places(br#"{"a":"b"}"#), ".(ss.(ss.");
        // An escaped quote stays inside; an escaped backslash does not escape the quote after.
        assert_eq!(places(br#" "\"" "\\" x"#), ".(sss.(sss..");
    }

    #[test]
    fn state_carries_across_pieces() {
        let mut scanner = StringScanner::default();
        for &b in br#"{"a": "x\"# {
            scanner.step(b);
        }
        assert!(scanner.in_string());
        assert_eq!(
            scanner.step(b'"'),
            Place::Inside,
            "escaped by the previous piece"
        );
        assert!(scanner.in_string());
        assert_eq!(scanner.step(b'"'), Place::Inside);
        assert!(!scanner.in_string());
        assert_eq!(scanner.step(b' '), Place::Outside);
    }
}
