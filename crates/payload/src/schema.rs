//! A model's schema and its rows, and the view Liquid reads them through.
//!
//! Where it sits: at the start of the data path (row → compiled payload → rendered JSON
//! message): a spec is compiled against a [`Schema`], and each [`Row`] is read by position.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use liquid_core::model::{KStringCow, ObjectView, ValueView};

use crate::Value;
use crate::view::object_value_view;

/// Why a schema cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Two columns share a name, so a template could not tell them apart.
    #[error("column {name:?} appears twice in the model; column names must be unique")]
    DuplicateColumn {
        /// The repeated name.
        name: String,
    },
    /// The primary key names no column.
    #[error("primary key {name:?} is not a column of the model{}", did_you_mean(.suggestion))]
    UnknownPrimaryKey {
        /// The configured primary key.
        name: String,
        /// The closest column name, if one is close.
        suggestion: Option<String>,
    },
    /// A model with no columns.
    #[error("the model has no columns")]
    NoColumns,
}

pub(crate) fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean {s:?}?"))
        .unwrap_or_default()
}

/// The columns of a model, in order, and which one is the primary key.
///
/// Rows are positional ([`Row`]); the schema is shared (`Arc`) between every row, the payload
/// and the key specs, so column names are stored once per model, not once per row.
#[derive(Clone, PartialEq, Eq)]
pub struct Schema {
    columns: Vec<String>,
    index: HashMap<String, usize>,
    primary_key: usize,
}

impl Schema {
    /// A schema of `columns` whose primary key is the column named `primary_key`.
    pub fn new<I, S>(columns: I, primary_key: &str) -> Result<Arc<Self>, SchemaError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let columns: Vec<String> = columns.into_iter().map(Into::into).collect();
        if columns.is_empty() {
            return Err(SchemaError::NoColumns);
        }
        let mut index = HashMap::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            if index.insert(name.clone(), i).is_some() {
                return Err(SchemaError::DuplicateColumn { name: name.clone() });
            }
        }
        let primary_key =
            *index
                .get(primary_key)
                .ok_or_else(|| SchemaError::UnknownPrimaryKey {
                    name: primary_key.to_owned(),
                    suggestion: closest(primary_key, &columns),
                })?;
        Ok(Arc::new(Self {
            columns,
            index,
            primary_key,
        }))
    }

    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The position of the column called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        // Templates look columns up by name on every row. For the usual model width a scan
        // that compares lengths first beats hashing the name; wide models use the index.
        if self.columns.len() <= 32 {
            self.columns
                .iter()
                .position(|c| c.len() == name.len() && c == name)
        } else {
            self.index.get(name).copied()
        }
    }

    /// The position of the primary key column.
    pub fn primary_key_index(&self) -> usize {
        self.primary_key
    }

    /// The primary key column's name.
    pub fn primary_key(&self) -> &str {
        &self.columns[self.primary_key]
    }

    /// The column name closest to `name`, to suggest in an error.
    pub fn closest_column(&self, name: &str) -> Option<String> {
        closest(name, &self.columns)
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("columns", &self.columns)
            .field("primary_key", &self.primary_key())
            .finish()
    }
}

/// The candidate nearest to `name` by edit distance, if it is near enough to be a typo.
pub(crate) fn closest(name: &str, candidates: &[String]) -> Option<String> {
    let lower = name.to_lowercase();
    let near = candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone());
    // Failing that, a column the name is the start of (`event` for `event_json`).
    near.or_else(|| {
        (lower.chars().count() >= 3)
            .then(|| {
                candidates
                    .iter()
                    .find(|c| c.to_lowercase().starts_with(&lower))
                    .cloned()
            })
            .flatten()
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One row of a model: its values in schema order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// A row of `values`, in the order of the schema's columns.
    pub fn new(values: Vec<Value>) -> Self {
        Self { values }
    }

    /// The values, in schema order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The value at `index`; a row shorter than its schema reads as null past its end.
    pub fn get(&self, index: usize) -> &Value {
        self.values.get(index).unwrap_or(&Value::Null)
    }

    /// Gives the values back.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}

impl From<Vec<Value>> for Row {
    fn from(values: Vec<Value>) -> Self {
        Self::new(values)
    }
}

/// A row as Liquid sees it: an object whose keys are the schema's columns. Lookups go
/// through the shared schema's index; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowView<'a> {
    pub(crate) schema: &'a Schema,
    pub(crate) row: &'a Row,
}

object_value_view!(RowView<'_>);

impl ObjectView for RowView<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        self.schema.columns.len() as i64
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(self.schema.columns.iter().map(|c| KStringCow::from_ref(c)))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new((0..self.schema.columns.len()).map(|i| self.row.get(i) as &dyn ValueView))
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            self.schema
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (KStringCow::from_ref(c), self.row.get(i) as &dyn ValueView)),
        )
    }
    fn contains_key(&self, index: &str) -> bool {
        self.schema.index_of(index).is_some()
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        self.schema
            .index_of(index)
            .map(|i| self.row.get(i) as &dyn ValueView)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_refuses_duplicates_and_unknown_keys_with_a_suggestion() {
        assert_eq!(
            Schema::new(["id", "id"], "id").unwrap_err(),
            SchemaError::DuplicateColumn { name: "id".into() }
        );
        let err = Schema::new(["user_id", "email"], "userid").unwrap_err();
        assert_eq!(
            err.to_string(),
            "primary key \"userid\" is not a column of the model; did you mean \"user_id\"?"
        );
    }
}
