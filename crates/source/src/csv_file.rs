//! CSV models: a header row, then strings, or the types the spec declares.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kinesync_payload::{Row, Schema, Value};

use crate::{ColumnType, Locator, RowSource, SourceError, SourceRow, check_key};

/// Rows from a CSV file with a header row; strings unless a column's type is declared.
#[derive(Debug)]
pub struct CsvSource<R> {
    reader: csv::Reader<QuoteWatch<R>>,
    /// Set (to the line it opened on) when the input ended inside a quoted field.
    unterminated: Arc<AtomicU64>,
    path: PathBuf,
    schema: Arc<Schema>,
    /// The declared type of each column, by position.
    types: Vec<ColumnType>,
    record: csv::StringRecord,
    /// Set once reading failed: an input that cannot be read ends the model (with that error)
    /// rather than repeating it forever.
    failed: bool,
}

impl<R: Read> CsvSource<R> {
    /// Reads the header; `path` names the input in errors.
    pub fn new(
        reader: R,
        path: impl Into<PathBuf>,
        primary_key: &str,
    ) -> Result<Self, SourceError> {
        let path = path.into();
        let unterminated = Arc::new(AtomicU64::new(0));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(QuoteWatch::new(reader, unterminated.clone()));
        let headers = reader.headers().map_err(|e| csv_error(&path, &e))?.clone();
        if headers.is_empty() {
            return Err(SourceError::Empty { path });
        }
        let schema = Schema::new(headers.iter(), primary_key).map_err(|e| SourceError::Schema {
            path: path.clone(),
            source: e,
        })?;
        Ok(Self {
            reader,
            unterminated,
            path,
            types: vec![ColumnType::String; schema.columns().len()],
            schema,
            record: csv::StringRecord::new(),
            failed: false,
        })
    }

    /// Declares column types; naming a column the header does not have is an error.
    pub fn with_types(mut self, types: &[(String, ColumnType)]) -> Result<Self, SourceError> {
        for (column, ty) in types {
            let index =
                self.schema
                    .index_of(column)
                    .ok_or_else(|| SourceError::UnknownTypedColumn {
                        path: self.path.clone(),
                        column: column.clone(),
                        known: self.schema.columns().join(", "),
                    })?;
            self.types[index] = *ty;
        }
        Ok(self)
    }

    fn typed(&self, line: u64, index: usize, text: &str) -> Result<Value, SourceError> {
        let ty = self.types[index];
        if ty == ColumnType::String {
            return Ok(Value::String(text.to_owned()));
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Value::Null);
        }
        let parsed = match ty {
            ColumnType::String => unreachable!("handled above"),
            ColumnType::Integer => match trimmed.parse::<i64>() {
                Ok(i) => Some(Value::Int(i)),
                // An unsigned 64-bit id, or an integer beyond: exact, not a float.
                Err(_) => trimmed
                    .parse::<u64>()
                    .ok()
                    .map(Value::from_u64)
                    .or_else(|| {
                        let (sign, digits) = match trimmed.strip_prefix('-') {
                            Some(digits) => ("-", digits),
                            None => ("", trimmed.strip_prefix('+').unwrap_or(trimmed)),
                        };
                        // As JSON writes it: no leading zeros.
                        let digits = digits.trim_start_matches('0');
                        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                            .then(|| Value::Decimal(format!("{sign}{digits}").into()))
                    }),
            },
            ColumnType::Float => match trimmed.parse::<f64>() {
                Ok(f) if f.is_finite() => Some(Value::Float(f)),
                Ok(_) => {
                    return Err(SourceError::NotFinite {
                        path: self.path.clone(),
                        line,
                        column: self.schema.columns()[index].clone(),
                        found: text.to_owned(),
                    });
                }
                Err(_) => None,
            },
            ColumnType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Some(Value::Bool(true)),
                "false" | "f" | "no" | "n" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            ColumnType::Json => {
                let depth = crate::json_scan(trimmed).0;
                if depth > crate::MAX_DEPTH {
                    return Err(SourceError::TooDeep {
                        path: self.path.clone(),
                        line,
                        depth,
                    });
                }
                Value::from_json_exact(trimmed).ok()
            }
        };
        parsed.ok_or_else(|| SourceError::Type {
            path: self.path.clone(),
            line,
            column: self.schema.columns()[index].clone(),
            expected: ty,
            found: text.to_owned(),
        })
    }

    fn row(&self, line: u64) -> Result<Row, SourceError> {
        let key = self.schema.primary_key_index();
        let mut values = Vec::with_capacity(self.record.len());
        for (index, field) in self.record.iter().enumerate() {
            // An empty key field is a missing key, whatever the column's type.
            if index == key && field.is_empty() {
                values.push(Value::Null);
                continue;
            }
            values.push(self.typed(line, index, field)?);
        }
        Ok(Row::new(values))
    }
}

/// Passes a CSV input through, following its quoting as the csv crate reads it (a field that
/// starts with `"` is quoted until a `"` not doubled), so that an input ending inside a quoted
/// field is caught: the csv crate takes the rest of the file as that field.
#[derive(Debug)]
struct QuoteWatch<R> {
    inner: R,
    state: Quoting,
    /// The line the reader is on (1-based), and the line the open quoted field started on.
    line: u64,
    opened: u64,
    unterminated: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: the field's end, or the first of a doubled `""`.
    QuoteInQuoted,
}

impl<R> QuoteWatch<R> {
    fn new(inner: R, unterminated: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            state: Quoting::FieldStart,
            line: 1,
            opened: 0,
            unterminated,
        }
    }

    fn follow(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let boundary = matches!(byte, b',' | b'\n' | b'\r');
            self.state = match (self.state, byte) {
                (Quoting::FieldStart, b'"') => {
                    self.opened = self.line;
                    Quoting::Quoted
                }
                (Quoting::Quoted, b'"') => Quoting::QuoteInQuoted,
                (Quoting::Quoted, _) => Quoting::Quoted,
                (Quoting::QuoteInQuoted, b'"') => Quoting::Quoted,
                (_, _) if boundary => Quoting::FieldStart,
                _ => Quoting::Unquoted,
            };
            if byte == b'\n' {
                self.line += 1;
            }
        }
    }
}

impl<R: Read> Read for QuoteWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.state == Quoting::Quoted {
            self.unterminated.store(self.opened, Ordering::Relaxed);
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> SourceError {
    SourceError::Csv {
        path: path.to_owned(),
        line: e.position().map_or(0, csv::Position::line),
        message: match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => {
                format!("{len} fields where the header has {expected_len}")
            }
            _ => e.to_string(),
        },
    }
}

impl<R: Read + Send> Iterator for CsvSource<R> {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, csv::Position::line);
                let opened = self.unterminated.load(Ordering::Relaxed);
                if opened != 0 {
                    // The csv crate takes the rest of the file as the open field's text.
                    self.failed = true;
                    return Some(Err(SourceError::Csv {
                        path: self.path.clone(),
                        line: opened,
                        message: "a quoted field opens on this line and never closes: the file ends inside it".into(),
                    }));
                }
                Some(self.row(line).and_then(|row| {
                    check_key(
                        &self.schema,
                        || self.locator().at(line),
                        SourceRow::new(line, row),
                    )
                }))
            }
            Err(e) => {
                // A malformed line is that line's error; an input that cannot be read is the
                // end of the model.
                self.failed = e.is_io_error();
                Some(Err(csv_error(&self.path, &e)))
            }
        }
    }
}

impl<R: Read + Send> RowSource for CsvSource<R> {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> Locator {
        Locator::lines(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_reads_strings_with_a_header() {
        let text = "id,name,note\n1,\"Ada, Countess\",\n2,Grace,\"multi\nline\"\n3,Ken,x\n";
        let rows: Vec<SourceRow> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows[0].row.values(),
            [
                Value::from("1"),
                Value::from("Ada, Countess"),
                Value::from("")
            ]
        );
        assert_eq!(rows[1].row.get(2), &Value::from("multi\nline"));
        assert_eq!((rows[0].line, rows[1].line, rows[2].line), (2, 3, 5));
    }

    #[test]
    fn csv_malformed_lines_say_where() {
        let text = "id,name\n1,Ada\n2,Grace,extra\n";
        let results: Vec<_> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .collect();
        let err = results[1].as_ref().unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.csv:3: malformed CSV: 3 fields where the header has 2"
        );
    }

    #[test]
    fn a_file_that_ends_inside_a_quoted_field_is_an_error_with_its_line() {
        let text = "id,name\n1,Ada\n2,\"Grace\n3,Ken\n";
        let results: Vec<_> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .collect();
        assert_eq!(results.len(), 2, "{results:?}");
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().to_string(),
            "m.csv:3: malformed CSV: a quoted field opens on this line and never closes: the file ends inside it"
        );
        // Doubled quotes, quoted newlines and a quote inside an unquoted field are not.
        let text = "id,name\n1,\"say \"\"hi\"\"\"\n2,\"two\nlines\"\n3,a\"b\n";
        let rows: Vec<_> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn a_float_that_is_not_finite_is_the_rows_error() {
        let text = "id,score\n1,2.5\n2,1e400\n3,infinity\n4,NaN\n";
        let results: Vec<_> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .with_types(&[("score".to_owned(), ColumnType::Float)])
            .unwrap()
            .collect();
        assert!(results[0].is_ok());
        for (result, found) in results[1..].iter().zip(["1e400", "infinity", "NaN"]) {
            let error = result.as_ref().unwrap_err().to_string();
            assert!(
                error.contains(found) && error.contains("not a finite number"),
                "{error}"
            );
        }
    }

    #[test]
    fn integers_of_any_size_keep_their_digits() {
        let text = "id,n\n1,123456789012345678901234567890\n2,-00098765432109876543210987654321\n3,18446744073709551615\n";
        let rows: Vec<SourceRow> = CsvSource::new(text.as_bytes(), "m.csv", "id")
            .unwrap()
            .with_types(&[("n".to_owned(), ColumnType::Integer)])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows[0].row.get(1).to_json_string(),
            "123456789012345678901234567890"
        );
        assert_eq!(
            rows[1].row.get(1).to_json_string(),
            "-98765432109876543210987654321"
        );
        assert_eq!(rows[2].row.get(1), &Value::UInt(u64::MAX));
    }
}
