//! Render rate of each payload mode over the reference rows, JSON safety and validation on.
//!
//! `cargo bench -p kinesync-payload --bench render` (or `just bench-payload`). Each iteration
//! renders 10,000 reference rows into one reused buffer, as the sync engine does; criterion
//! reports rows per second ("elem/s").

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kinesync_payload::{
    Event, FieldMapping, Payload, PayloadSpec, RenderInput, Row, Schema, Value,
};

/// The allocator the `kinesync` binary uses, so that the figures are the ones users get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: usize = 10_000;

fn reference_rows() -> (Arc<Schema>, Vec<Row>) {
    let mut columns = None;
    let rows = kinesync_fixtures::bench_rows(ROWS)
        .map(|line| {
            let Value::Object(object) = serde_json::from_str::<Value>(&line).unwrap() else {
                panic!("reference rows are objects")
            };
            columns
                .get_or_insert_with(|| object.0.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
            Row::new(object.0.into_iter().map(|(_, v)| v).collect())
        })
        .collect();
    (Schema::new(columns.unwrap(), "id").unwrap(), rows)
}

fn bench_mode(c: &mut Criterion, name: &str, spec: PayloadSpec) {
    let (schema, rows) = reference_rows();
    let payload = Payload::compile(&spec, schema).unwrap();
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(ROWS as u64));
    let mut out = Vec::with_capacity(512);
    group.bench_function(name, |b| {
        b.iter(|| {
            for row in &rows {
                payload
                    .render_into(RenderInput::new(row, Event::Added), &mut out)
                    .unwrap();
                black_box(&out);
            }
        })
    });
    group.finish();
}

fn modes(c: &mut Criterion) {
    let template =
        std::fs::read_to_string(kinesync_fixtures::fixture("bench/reference.liquid")).unwrap();
    bench_mode(c, "template_reference", PayloadSpec::template(template));
    bench_mode(c, "row", PayloadSpec::Row);
    let fields = [
        ("id", "user_id"),
        ("first_name", "customer_first_name"),
        ("last_name", "customer_last_name"),
        ("email", "customer_email"),
        ("age", "age"),
        ("tags", "segments"),
        ("created_at", "signed_up_at"),
        ("country", "country_code"),
        ("plan", "plan"),
        ("score", "score"),
        ("active", "is_active"),
    ];
    bench_mode(
        c,
        "mapping",
        PayloadSpec::Mapping {
            fields: fields
                .iter()
                .map(|(f, t)| FieldMapping::new(*f, *t))
                .collect(),
        },
    );
}

/// The baseline the shared benchmark README describes: the `liquid` crate used plainly, each
/// row converted to a `liquid::Object`, no JSON safety and no validation. Measured in the same
/// run so the ratio to kinesync's own rate holds whatever the machine is doing.
fn plain_liquid(c: &mut Criterion) {
    use liquid_core::ValueView;
    let (schema, rows) = reference_rows();
    let source =
        std::fs::read_to_string(kinesync_fixtures::fixture("bench/reference.liquid")).unwrap();
    let template = liquid::ParserBuilder::with_stdlib()
        .build()
        .unwrap()
        .parse(&source)
        .unwrap();
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("baseline_plain_liquid", |b| {
        b.iter(|| {
            for row in &rows {
                let mut object = liquid::Object::new();
                for (name, value) in schema.columns().iter().zip(row.values()) {
                    object.insert(name.clone().into(), value.to_value());
                }
                let globals = liquid::object!({ "row": object });
                black_box(template.render(&globals).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = modes, plain_liquid
}
criterion_main!(benches);
