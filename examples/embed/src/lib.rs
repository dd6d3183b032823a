//! An orders service that streams its orders into a Kinesis data stream with kinesync, written
//! as a user of the `kinesync` crate writes it (from its README and rendered docs alone).
//!
//! - [`order_records`]: how an order becomes a record (a JSON-safe Liquid template, and the
//!   customer as partition key, so one customer's orders stay in order).
//! - [`orders_engine`]: the sync engine over any sink and any state store; the service's tests
//!   (`tests/sync.rs`) give it the in-memory stream and store, production the real stream.
//! - [`sync_orders`]: one run over the orders in memory: added, changed and removed orders go
//!   out; unchanged ones do not.
//! - [`kinesis`] (feature `aws`): the real stream.
//!
//! `tests/template.rs` keeps the template under insta snapshots, and `tests/own_sink.rs`
//! drives the engine through a sink of its own and kinesync's fault and limit decorators.

use std::sync::Arc;

use kinesync::engine::{Engine, Events, Initial, RunReport, SharedState};
use kinesync::payload::{Payload, PayloadSpec, Row, Schema, Value};
use kinesync::transport::{KinesisSink, StreamName};
use kinesync::{KeySpec, RecordBuilder};

/// Any error of this service, shown with `{}` (kinesync's errors say where and what to do).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// An order, as the service keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The order's id (the primary key).
    pub id: i64,
    /// The customer's email: the partition key.
    pub customer: String,
    /// The total, in cents.
    pub total_cents: i64,
    /// The SKUs ordered.
    pub items: Vec<String>,
}

impl Order {
    /// The order as a row of [`schema`].
    pub fn to_row(&self) -> Row {
        Row::new(vec![
            Value::Int(self.id),
            Value::from(self.customer.as_str()),
            Value::Int(self.total_cents),
            Value::Array(self.items.iter().map(|s| Value::from(s.as_str())).collect()),
        ])
    }
}

/// The message each order becomes. `previous` is the version last sent (nil for a new order),
/// and `row.items.first` is nil for an order without items.
pub const ORDER_TEMPLATE: &str = r#"{
  "type": "order_{{ event }}",
  "order": {{ row.id }},
  "customer": "{{ row.customer }}",
  "total": {{ row.total_cents | divided_by: 100.0 }},
  "first_item": {{ row.items.first }},
  "item_count": {{ row.items.size }},
  "previous_total": {% if previous %}{{ previous.total_cents | divided_by: 100.0 }}{% else %}null{% endif %}
}"#;

/// The columns of an order row, `id` first and the primary key.
pub fn schema() -> Arc<Schema> {
    Schema::new(["id", "customer", "total_cents", "items"], "id").expect("the columns are distinct")
}

/// How an order becomes a record: [`ORDER_TEMPLATE`] with the customer as partition key.
pub fn order_records() -> Result<RecordBuilder, Error> {
    let schema = schema();
    let payload = Payload::compile(&PayloadSpec::template(ORDER_TEMPLATE), schema.clone())?;
    let keys = KeySpec::new(&schema, Some("customer"), None)?;
    Ok(RecordBuilder::new(payload, keys))
}

/// The engine that syncs orders into `stream` of `sink`, remembering what it sent in `state`:
/// a store the caller keeps a handle to (`Arc<Mutex<SqliteStore>>` in production,
/// `Arc<Mutex<MemoryStore>>` in tests, which look inside it between runs).
pub fn orders_engine(
    sink: Arc<dyn KinesisSink>,
    stream: StreamName,
    state: SharedState,
) -> Result<Engine, Error> {
    Ok(Engine::builder()
        .records(order_records()?)
        .sink(sink, stream)
        .state_shared(state)
        .events(Events::all())
        .initial(Initial::Backfill)
        .build()?)
}

/// One sync of every order the service holds. The engine runs on tokio: call it from within a
/// tokio runtime (`#[tokio::main]`, `#[tokio::test]`).
pub async fn sync_orders(engine: &mut Engine, orders: &[Order]) -> Result<RunReport, Error> {
    Ok(engine.run_rows(orders.iter().map(Order::to_row)).await?)
}

/// The real stream `stream` in `region`, with the SDK's default credentials (environment,
/// profile, role).
#[cfg(feature = "aws")]
pub async fn kinesis(
    region: &str,
    stream: &str,
) -> Result<(Arc<dyn KinesisSink>, StreamName), Error> {
    let sink = kinesync::transport::AwsKinesisSink::builder()
        .region(region)
        .build()
        .await?;
    Ok((Arc::new(sink), StreamName::new(stream)?))
}
