//! CSV models: a header row, then strings, or the types the spec declares.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kinesync_payload::{Row, Schema, Value};

use crate::{ColumnType, Locator, RowSource, SourceError, SourceRow, check_key};

/// Rows from a CSV file with a header row; strings unless a column's type is declared.
#[derive(Debug)]
pub struct CsvSource<R> {
    reader: csv::Reader<R>,
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
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
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
            ColumnType::Integer => trimmed.parse().ok().map(Value::Int),
            ColumnType::Float => trimmed.parse().ok().map(Value::Float),
            ColumnType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Some(Value::Bool(true)),
                "false" | "f" | "no" | "n" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            ColumnType::Json => serde_json::from_str(trimmed).ok(),
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
                Some(self.row(line).and_then(|row| {
                    check_key(
                        &self.schema,
                        || self.locator().at(line),
                        SourceRow { line, row },
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
}
