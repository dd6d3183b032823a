//! kinesync's sync engine: from the rows of a model to records the stream acknowledged, and
//! a state store that holds exactly those.
//!
//! One run, in the order the data flows, one module per stage:
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | 1 | `prepare` | a row's primary key, stored form (`codec`) and fingerprint, on the thread that reads the model |
//! | 2 | `diff` | added, changed or unchanged against the state; duplicate keys; the removal walk over the sorted key sets |
//! | 3 | `build` | messages rendered and keys checked on a pool of threads ([`RecordBuilder`]), removed rows too |
//! | 4 | `batch` | records into calls within the limits, one record per partition key at a time (pure, property-tested) |
//! | 5 | `send` | calls in flight, outcomes, retries with `backoff` |
//! | 6 | `commit` | acknowledged changes into the state store, per call |
//!
//! `run` holds the loop of one run; [`Engine`] is what a caller builds once and runs as often
//! as the model changes; [`RunReport`] is what a run did, [`Progress`] what it is doing.
//!
//! The engine is async and needs a tokio runtime with its time driver (the outbox waits on
//! tokio's timers between retries). Rendering happens on threads of its own.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use kinesync::engine::{Engine, Events, Initial};
//! use kinesync::payload::{Payload, PayloadSpec, Row, Schema, Value};
//! use kinesync::state::MemoryStore;
//! use kinesync::transport::{InMemorySink, StreamConfig, StreamName};
//! use kinesync::{KeySpec, RecordBuilder};
//!
//! let schema = Schema::new(["id", "email"], "id").unwrap();
//! let payload = Payload::compile(&PayloadSpec::template(r#"{"email": "{{ row.email }}", "event": "{{ event }}"}"#), schema.clone()).unwrap();
//! let records = RecordBuilder::new(payload, KeySpec::new(&schema, None, None).unwrap());
//!
//! // The in-memory stream stands in for Kinesis; swap in `AwsKinesisSink` for the real one.
//! let sink = Arc::new(InMemorySink::new());
//! let stream = StreamName::new("users").unwrap();
//! sink.create_stream(&stream, StreamConfig::with_shards(2));
//!
//! let mut sync = Engine::builder()
//!     .records(records)
//!     .sink(sink.clone(), stream.clone())
//!     .state(MemoryStore::new())
//!     .events(Events::all())
//!     .initial(Initial::Backfill)
//!     .build()
//!     .unwrap();
//! let rows = vec![
//!     Row::new(vec![Value::Int(1), Value::from("ada@example.com")]),
//!     Row::new(vec![Value::Int(2), Value::from("grace@example.com")]),
//! ];
//! let report = sync.run_rows(rows).await.unwrap();
//! assert_eq!(report.records.acknowledged, 2);
//! assert_eq!(sink.records(&stream).unwrap().len(), 2);
//!
//! // A second run sends only what changed.
//! let rows = vec![Row::new(vec![Value::Int(1), Value::from("ada@new.example.com")])];
//! let report = sync.run_rows(rows).await.unwrap();
//! assert_eq!((report.events.changed, report.events.removed), (1, 1));
//! # });
//! ```

mod backoff;
mod batch;
mod build;
mod codec;
mod commit;
mod definition;
mod diff;
mod engine;
mod error;
mod estimate;
mod hashed;
mod interrupt;
mod pace;
mod prepare;
mod progress;
mod record;
mod record_id;
mod report;
mod run;
mod send;
mod settings;
mod sorted_keys;
mod store;
mod watermark;

pub use codec::last_sent_rows;
pub use definition::SyncChange;
pub use engine::{Engine, EngineBuilder};
pub use error::{Error, KeyRole, Result};
pub use interrupt::Interrupt;
pub use prepare::ModelRow;
pub use progress::{Progress, ProgressSnapshot};
pub use record::{KeySpec, Record, RecordBuilder, RowError};
pub use report::{
    EventCounts, MAX_LISTED_ROW_ERRORS, Outcome, Packing, RecordCounts, RowErrorEntry, RowErrors,
    RunReport, SendEstimate, ShardReport,
};
pub use settings::{
    Aggregation, Events, EventsError, Initial, LimitError, Limits, MAX_IN_FLIGHT,
    MIN_AGGREGATE_BYTES,
};
pub use store::SharedState;
pub use watermark::diff_watermark;
