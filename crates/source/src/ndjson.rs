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
    /// Lines before the first object that were not rows: their errors, handed out first, as
    /// any other line's are.
    early: std::collections::VecDeque<SourceError>,
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
    /// Reads up to the first object to learn the columns: its keys. A later line with a key
    /// it lacks is that line's error; [`with_columns`](Self::with_columns) takes the columns
    /// instead (a file opened by [`crate::open`] is read once first to find every key).
    /// Lines before the first object that are not one are errors of their own lines, as any
    /// other line's are. `path` names the input in errors.
    pub fn new(
        reader: R,
        path: impl Into<PathBuf>,
        primary_key: &str,
    ) -> Result<Self, SourceError> {
        Self::start(reader, path.into(), primary_key, None)
    }

    /// Rows with these columns, in this order: a key a line leaves out is null there. (The
    /// columns of every line of a file: [`scan_columns`].)
    pub fn with_columns(
        reader: R,
        path: impl Into<PathBuf>,
        primary_key: &str,
        columns: Vec<String>,
    ) -> Result<Self, SourceError> {
        Self::start(reader, path.into(), primary_key, Some(columns))
    }

    fn start(
        reader: R,
        path: PathBuf,
        primary_key: &str,
        columns: Option<Vec<String>>,
    ) -> Result<Self, SourceError> {
        let mut source = Self {
            reader,
            path,
            schema: Schema::new(["_"], "_").expect("a placeholder schema is valid"),
            line: 0,
            first: None,
            early: std::collections::VecDeque::new(),
            buf: String::new(),
            failed: false,
        };
        if let Some(columns) = columns {
            if columns.is_empty() {
                return Err(SourceError::Empty { path: source.path });
            }
            source.schema = source.schema_of(columns, primary_key)?;
            return Ok(source);
        }
        loop {
            if !source.next_line()? {
                // No line was an object: the first line's error says why, or the input is
                // empty.
                return Err(source
                    .early
                    .pop_front()
                    .unwrap_or(SourceError::Empty { path: source.path }));
            }
            let line = source.line;
            // A byte-order mark some editors write is not part of the JSON.
            let text = source.buf.trim_end();
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            let object = match parse(text, &source.path, line) {
                Ok(Value::Object(object)) => object,
                Ok(other) => {
                    source.early.push_back(SourceError::NotAnObject {
                        path: source.path.clone(),
                        line,
                        found: other.kind_name(),
                    });
                    continue;
                }
                Err(e) => {
                    source.early.push_back(e);
                    continue;
                }
            };
            let columns = object.0.iter().map(|(k, _)| k.clone()).collect();
            source.schema = source.schema_of(columns, primary_key)?;
            source.first = Some(SourceRow::new(
                line,
                Row::new(object.0.into_iter().map(|(_, v)| v).collect()),
            ));
            return Ok(source);
        }
    }

    fn schema_of(
        &self,
        columns: Vec<String>,
        primary_key: &str,
    ) -> Result<Arc<Schema>, SourceError> {
        Schema::new(columns, primary_key).map_err(|e| SourceError::Schema {
            path: self.path.clone(),
            source: e,
        })
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
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let long_digits = check_depth(text, &self.path, self.line)?;
        // Integers beyond 64 bits are kept digit for digit (see `kinesync_payload::exact`).
        let marked = long_digits
            .then(|| kinesync_payload::exact::mark_exact_numbers(text))
            .flatten();
        let text = marked.as_deref().unwrap_or(text);
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let line = RowSeed {
            schema: &self.schema,
        }
        .deserialize(&mut deserializer)
        .and_then(|line| deserializer.end().map(|()| line))
        .map_err(|e| json_error(&self.path, self.line, &e))?;
        match line {
            Line::Row(mut values) => {
                if marked.is_some() {
                    values.iter_mut().for_each(kinesync_payload::exact::unmark);
                }
                Ok(Row::new(values))
            }
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
    check_depth(text, path, line)?;
    Value::from_json_exact(text).map_err(|e| json_error(path, line, &e))
}

/// Refuses a line that nests objects and arrays deeper than [`MAX_DEPTH`], before it is
/// parsed, with the depth in words. Says whether the line has a run of 20 digits or more
/// outside strings: an integer that may be beyond 64 bits.
fn check_depth(text: &str, path: &std::path::Path, line: u64) -> Result<bool, SourceError> {
    let (depth, long_digits) = crate::json_scan(text);
    if depth > crate::MAX_DEPTH {
        return Err(SourceError::TooDeep {
            path: path.to_owned(),
            line,
            depth,
        });
    }
    Ok(long_digits)
}

/// The columns of an NDJSON model: every key any line's object has, in the order they first
/// appear. Lines that are not objects are passed over here; reading the rows reports them.
pub fn scan_columns(reader: impl BufRead) -> Result<Vec<String>, std::io::Error> {
    let mut columns: Vec<String> = Vec::new();
    let mut known = std::collections::HashSet::new();
    for line in reader.lines() {
        let line = line?;
        let text = line.trim();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if !text.starts_with('{') || crate::json_scan(text).0 > crate::MAX_DEPTH {
            continue;
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let Ok(keys) = KeysOnly.deserialize(&mut deserializer) else {
            continue;
        };
        for key in keys {
            if known.insert(key.clone()) {
                columns.push(key);
            }
        }
    }
    Ok(columns)
}

/// An object's keys, its values skipped.
struct KeysOnly;

impl<'de> DeserializeSeed<'de> for KeysOnly {
    type Value = Vec<String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<String>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeysOnly {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            keys.push(key);
        }
        Ok(keys)
    }
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
        if let Some(early) = self.early.pop_front() {
            return Some(Err(early));
        }
        let read = match self.first.take() {
            Some(first) => Ok(first),
            None => match self.next_line() {
                Ok(true) => self.row().map(|row| SourceRow::new(self.line, row)),
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

    #[test]
    fn a_bad_first_line_is_that_lines_error_and_the_rest_is_read() {
        let results: Vec<_> =
            NdjsonSource::new("{\"id\":1,\n[2]\n{\"id\":3}\n".as_bytes(), "m.ndjson", "id")
                .unwrap()
                .collect();
        assert_eq!(results.len(), 3);
        assert!(
            results[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .starts_with("m.ndjson:1:")
        );
        assert_eq!(
            results[1].as_ref().unwrap_err().to_string(),
            "m.ndjson:2: each line must be a JSON object, this one is array"
        );
        assert_eq!(results[2].as_ref().unwrap().line, 3);
        // With no object at all, the first line's error is the model's.
        let err = ndjson("[1]\n").unwrap_err();
        assert!(err.to_string().starts_with("m.ndjson:1:"), "{err}");
    }

    #[test]
    fn every_key_of_every_line_is_a_column_and_a_missing_one_is_null() {
        let text = "{\"id\":1,\"a\":\"x\"}\n{\"id\":2,\"nickname\":\"Ace\"}\nnot json\n{\"a\":\"z\",\"id\":3}\n";
        let columns = scan_columns(text.as_bytes()).unwrap();
        assert_eq!(columns, ["id", "a", "nickname"]);
        let results: Vec<_> =
            NdjsonSource::with_columns(text.as_bytes(), "m.ndjson", "id", columns)
                .unwrap()
                .collect();
        let row = |i: usize| results[i].as_ref().unwrap().row.values().to_vec();
        assert_eq!(row(0), [Value::Int(1), Value::from("x"), Value::Null]);
        assert_eq!(row(1), [Value::Int(2), Value::Null, Value::from("Ace")]);
        assert!(
            results[2].is_err(),
            "the line that is not JSON is still its own error"
        );
        assert_eq!(row(3), [Value::Int(3), Value::from("z"), Value::Null]);
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_the_lines_error_in_words() {
        let nested = |levels: usize| {
            format!(
                "{{\"id\":2,\"v\":{}1{}}}",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        let text = format!(
            "{{\"id\":1,\"v\":0}}\n{}\n{}\n",
            nested(crate::MAX_DEPTH),
            nested(128)
        );
        let results: Vec<_> = NdjsonSource::new(text.as_bytes(), "m.ndjson", "id")
            .unwrap()
            .collect();
        assert!(
            results[1].is_ok(),
            "{} levels are read: {:?}",
            crate::MAX_DEPTH,
            results[1]
        );
        assert_eq!(
            results[2].as_ref().unwrap_err().to_string(),
            "m.ndjson:3: the JSON nests objects and arrays 128 deep, more than the 100 levels kinesync reads (the line's own object is the first)"
        );
    }

    #[test]
    fn integers_above_i64_keep_their_digits() {
        let rows = ndjson("{\"id\":18446744073709551615,\"n\":9223372036854775808}\n").unwrap();
        assert_eq!(
            rows[0].row.values(),
            [Value::UInt(u64::MAX), Value::UInt(1 << 63)]
        );
    }

    #[test]
    fn integers_of_any_size_keep_their_digits_in_any_line() {
        let rows = ndjson(
            "{\"id\":123456789012345678901234567890,\"v\":[1,-99999999999999999999999,2.5]}\n{\"id\":2,\"v\":\"123456789012345678901234567890\"}\n",
        )
        .unwrap();
        assert_eq!(
            rows[0].row.get(0),
            &Value::Decimal("123456789012345678901234567890".into())
        );
        assert_eq!(
            rows[0].row.get(1).to_json_string(),
            "[1,-99999999999999999999999,2.5]"
        );
        assert_eq!(
            rows[1].row.get(1),
            &Value::from("123456789012345678901234567890"),
            "a string stays a string"
        );
    }

    #[test]
    fn fractions_a_float_cannot_hold_keep_their_digits() {
        let rows = ndjson(
            "{\"id\":1,\"amount\":12345678901234567890.01,\"rate\":0.1,\"p\":-1234567890.123456789}\n",
        )
        .unwrap();
        assert_eq!(
            rows[0].row.values(),
            [
                Value::Int(1),
                Value::Decimal("12345678901234567890.01".into()),
                Value::Float(0.1),
                Value::Decimal("-1234567890.123456789".into()),
            ]
        );
    }
}
