//! NDJSON / JSON Lines models.

use std::fmt;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use kinesync_payload::{Row, Schema, Value};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::{Locator, RowSource, SourceError, SourceRow, check_key};

/// Rows from newline-delimited JSON objects.
#[derive(Debug)]
pub struct NdjsonSource<R> {
    reader: R,
    path: PathBuf,
    schema: Arc<Schema>,
    line: u64,
    /// The first row, read to learn the schema, handed out first.
    first: Option<SourceRow>,
    buf: String,
    /// Set once reading failed: an input that cannot be read ends the model (with that error)
    /// rather than repeating it forever.
    failed: bool,
}

/// What a line turned out to be.
enum Line {
    /// An object's values, in schema order.
    Row(Vec<Value>),
    /// Not an object: what it is instead.
    NotAnObject(&'static str),
    /// An object with a key the schema does not have.
    NewColumn(String),
}

impl<R: BufRead> NdjsonSource<R> {
    /// Reads the first object to learn the columns; `path` names the input in errors.
    pub fn new(
        reader: R,
        path: impl Into<PathBuf>,
        primary_key: &str,
    ) -> Result<Self, SourceError> {
        let mut source = Self {
            reader,
            path: path.into(),
            schema: Schema::new(["_"], "_").expect("a placeholder schema is valid"),
            line: 0,
            first: None,
            buf: String::new(),
            failed: false,
        };
        if !source.next_line()? {
            return Err(SourceError::Empty { path: source.path });
        }
        let line = source.line;
        // A byte-order mark some editors write is not part of the JSON.
        let text = source.buf.trim_end();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let object = match parse(text, &source.path, line)? {
            Value::Object(object) => object,
            other => {
                return Err(SourceError::NotAnObject {
                    path: source.path,
                    line,
                    found: other.kind_name(),
                });
            }
        };
        let columns = object.0.iter().map(|(k, _)| k.clone());
        source.schema = Schema::new(columns, primary_key).map_err(|e| SourceError::Schema {
            path: source.path.clone(),
            source: e,
        })?;
        source.first = Some(SourceRow {
            line,
            row: Row::new(object.0.into_iter().map(|(_, v)| v).collect()),
        });
        Ok(source)
    }

    /// Reads the next non-blank line into `buf`; `false` at the end of the input.
    fn next_line(&mut self) -> Result<bool, SourceError> {
        loop {
            self.buf.clear();
            self.line += 1;
            let read =
                self.reader
                    .read_line(&mut self.buf)
                    .map_err(|source| SourceError::Read {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    })?;
            if read == 0 {
                return Ok(false);
            }
            if !self.buf.trim().is_empty() {
                return Ok(true);
            }
        }
    }

    /// The line in `buf` as a row. Values go straight to their column's place: no key is
    /// copied, and a column the line leaves out is null.
    fn row(&self) -> Result<Row, SourceError> {
        // Leading spaces stay, so that an error's column counts from the start of the line.
        let text = self.buf.trim_end();
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let line = RowSeed {
            schema: &self.schema,
        }
        .deserialize(&mut deserializer)
        .and_then(|line| deserializer.end().map(|()| line))
        .map_err(|e| json_error(&self.path, self.line, &e))?;
        match line {
            Line::Row(values) => Ok(Row::new(values)),
            Line::NotAnObject(found) => Err(SourceError::NotAnObject {
                path: self.path.clone(),
                line: self.line,
                found,
            }),
            Line::NewColumn(column) => Err(SourceError::NewColumn {
                path: self.path.clone(),
                line: self.line,
                column,
                known: self.schema.columns().join(", "),
            }),
        }
    }
}

fn parse(text: &str, path: &std::path::Path, line: u64) -> Result<Value, SourceError> {
    serde_json::from_str(text).map_err(|e| json_error(path, line, &e))
}

fn json_error(path: &std::path::Path, line: u64, e: &serde_json::Error) -> SourceError {
    SourceError::Json {
        path: path.to_owned(),
        line,
        column: e.column(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Reads one line's JSON into schema order.
struct RowSeed<'a> {
    schema: &'a Schema,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Line;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Line, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Line;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let mut values = vec![Value::Null; self.schema.columns().len()];
        let mut new_column = None;
        while let Some(key) = map.next_key_seed(KeySeed {
            schema: self.schema,
        })? {
            match key {
                Ok(index) => values[index] = map.next_value()?,
                Err(name) => {
                    new_column.get_or_insert(name);
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match new_column {
            Some(name) => Line::NewColumn(name),
            None => Line::Row(values),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Line, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Line::NotAnObject("array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Line, E> {
        Ok(Line::NotAnObject("boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Line, E> {
        Ok(Line::NotAnObject("integer"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Line, E> {
        Ok(Line::NotAnObject("integer"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Line, E> {
        Ok(Line::NotAnObject("float"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Line, E> {
        Ok(Line::NotAnObject("string"))
    }

    fn visit_unit<E>(self) -> Result<Line, E> {
        Ok(Line::NotAnObject("null"))
    }
}

/// A key: its column's place, or the name the schema lacks.
struct KeySeed<'a> {
    schema: &'a Schema,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Result<usize, String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Result<usize, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.schema.index_of(key).ok_or_else(|| key.to_owned()))
    }
}

impl<R: BufRead + Send> Iterator for NdjsonSource<R> {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let read = match self.first.take() {
            Some(first) => Ok(first),
            None => match self.next_line() {
                Ok(true) => self.row().map(|row| SourceRow {
                    line: self.line,
                    row,
                }),
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    Err(e)
                }
            },
        };
        Some(read.and_then(|read| {
            let line = read.line;
            check_key(&self.schema, || self.locator().at(line), read)
        }))
    }
}

impl<R: BufRead + Send> RowSource for NdjsonSource<R> {
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

    fn ndjson(text: &str) -> Result<Vec<SourceRow>, SourceError> {
        NdjsonSource::new(text.as_bytes(), "m.ndjson", "id")?.collect()
    }

    #[test]
    fn ndjson_rows_follow_the_first_rows_columns() {
        let rows =
            ndjson("{\"id\":1,\"a\":\"x\"}\n\n{\"a\":\"y\",\"id\":2}\n{\"id\":3}\n").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].line, 3, "blank lines still count");
        assert_eq!(rows[1].row.values(), [Value::Int(2), Value::from("y")]);
        assert_eq!(rows[2].row.values(), [Value::Int(3), Value::Null]);
    }

    #[test]
    fn ndjson_errors_name_file_line_and_column() {
        let err = ndjson("{\"id\":1}\n{\"id\":2,}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson:2:9: not valid JSON: trailing comma"
        );
        let err = ndjson("{\"id\":1}\n[1]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson:2: each line must be a JSON object, this one is array"
        );
        let err = ndjson("{\"id\":1}\n{\"id\":2,\"b\":1}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson:2: column \"b\" is not among the columns of line 1 (id)"
        );
        let err = ndjson("\n").unwrap_err();
        assert!(matches!(err, SourceError::Empty { .. }));
        let err = ndjson("{\"ID\":1}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.ndjson: primary key \"id\" is not a column of the model; did you mean \"ID\"?"
        );
    }

    #[test]
    fn a_byte_order_mark_and_leading_spaces_are_not_errors() {
        let rows = ndjson("\u{feff}{\"id\":1}\n   {\"id\":2}\n").unwrap();
        assert_eq!(rows.len(), 2);
        let err = ndjson("{\"id\":1}\n  {\"id\":,}\n").unwrap_err();
        assert!(
            err.to_string().starts_with("m.ndjson:2:9:"),
            "columns count from the start of the line: {err}"
        );
    }

    #[test]
    fn lines_that_are_not_objects_say_what_they_are() {
        for (text, found) in [
            ("[1, {\"id\": 2}]", "array"),
            ("true", "boolean"),
            ("7", "integer"),
            ("-7", "integer"),
            ("7.5", "float"),
            ("\"id\"", "string"),
            ("null", "null"),
        ] {
            let err = ndjson(&format!("{{\"id\":1}}\n{text}\n")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("m.ndjson:2: each line must be a JSON object, this one is {found}")
            );
        }
        let err = ndjson("{\"id\":1}\n{\"id\":2} x\n").unwrap_err();
        assert!(err.to_string().starts_with("m.ndjson:2:"), "{err}");
    }

    #[test]
    fn values_keep_their_json_types_in_any_key_order() {
        let rows = ndjson(
            "{\"id\":1,\"tags\":[\"a\"],\"meta\":{\"k\":1.5},\"ok\":true}\n{\"ok\":false,\"meta\":null,\"id\":\"x\\\"y\",\"tags\":[]}\n",
        )
        .unwrap();
        assert_eq!(rows[0].row.get(1).to_json_string(), "[\"a\"]");
        assert_eq!(rows[0].row.get(2).to_json_string(), "{\"k\":1.5}");
        assert_eq!(
            rows[1].row.values(),
            [
                Value::from("x\"y"),
                Value::Array(Vec::new()),
                Value::Null,
                Value::Bool(false)
            ]
        );
    }
}
