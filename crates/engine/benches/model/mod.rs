//! The model the engine's benchmarks sync: the reference rows (row `i` of the shared
//! benchmark's `gen_rows.py`), read as a model source, and the payloads they are sent with.

#![allow(dead_code, unreachable_pub)] // each benchmark uses its share of these

use std::sync::Arc;

use kinesync_fixtures::{BENCH_COLUMNS, bench_row};
use kinesync_payload::{FieldMapping, PayloadSpec, Row, Schema, Value};
use kinesync_source::{Locator, RowSource, SourceError, SourceRow};

pub fn row(i: usize, generation: u64) -> Row {
    let r = bench_row(i);
    // A later generation changes the score of the rows it touches.
    let score = if generation > 0 && i.is_multiple_of(100) {
        r.score + generation as f64
    } else {
        r.score
    };
    Row::new(vec![
        Value::Int(r.id),
        Value::from(r.first_name),
        Value::from(r.last_name),
        Value::String(r.email),
        Value::Int(r.age),
        Value::Array(r.tags.iter().map(|t| Value::from(*t)).collect()),
        Value::String(r.created_at),
        Value::from(r.country),
        Value::from(r.plan),
        Value::Float(score),
        Value::Bool(r.active),
    ])
}

pub fn spec(mode: &str) -> PayloadSpec {
    match mode {
        "template" => {
            let path = kinesync_fixtures::fixture("bench/reference.liquid");
            PayloadSpec::template(std::fs::read_to_string(path).expect("the reference template"))
        }
        _ => PayloadSpec::Mapping {
            fields: BENCH_COLUMNS
                .iter()
                .map(|c| FieldMapping::new(*c, format!("user_{c}")))
                .collect(),
        },
    }
}

/// The reference rows as a model source: the engine reads and prepares them on a thread of
/// its own, as it does a model file for the `kinesync` binary.
pub struct Generated {
    schema: Arc<Schema>,
    rows: std::vec::IntoIter<usize>,
    generation: u64,
}

impl Iterator for Generated {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.rows.next()?;
        Some(Ok(SourceRow::new(i as u64 + 1, row(i, self.generation))))
    }
}

impl RowSource for Generated {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> Locator {
        Locator::lines("generated")
    }
}

pub fn generated(schema: &Arc<Schema>, rows: usize, generation: u64) -> Box<dyn RowSource> {
    only(schema, (0..rows).collect(), generation)
}

/// The reference rows of these indices only, in this order.
pub fn only(schema: &Arc<Schema>, rows: Vec<usize>, generation: u64) -> Box<dyn RowSource> {
    Box::new(Generated {
        schema: schema.clone(),
        rows: rows.into_iter(),
        generation,
    })
}
