//! The engine through sinks other than the in-memory stream: one of the service's own (every
//! third record throttled), and kinesync's decorators (faults, the service's per-shard limits)
//! around the in-memory stream, on tokio's paused clock. Every order lands once, and one
//! customer's orders land in order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinesync::engine::Outcome;
use kinesync::state::MemoryStore;
use kinesync::transport::{
    FaultySink, InMemorySink, KinesisSink, LimitSink, PutRecord, RandomFaults, RecordFailure,
    RecordOutcome, StreamConfig, StreamDescription, StreamName, TokioClock, TransportError,
    async_trait,
};
use kinesync_embed_example::{Order, orders_engine, sync_orders};

/// A sink of the service's own: the in-memory stream, every third record throttled.
#[derive(Debug, Default)]
struct EveryThirdThrottled {
    inner: InMemorySink,
    seen: AtomicUsize,
}

/// Sinks are `Display` so that errors and logs can name the one a run used.
impl fmt::Display for EveryThirdThrottled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("in-memory stream, every third record throttled")
    }
}

#[async_trait]
impl KinesisSink for EveryThirdThrottled {
    async fn put_records(
        &self,
        stream: &StreamName,
        records: &[PutRecord],
    ) -> Result<Vec<RecordOutcome>, TransportError> {
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            if self.seen.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                outcomes.push(RecordOutcome::Failed {
                    failure: RecordFailure::Throttled,
                    message: "Rate exceeded for shard".into(),
                });
            } else {
                let landed = self.inner.put_records(stream, std::slice::from_ref(record));
                outcomes.extend(landed.await?);
            }
        }
        Ok(outcomes)
    }

    async fn describe_stream(
        &self,
        stream: &StreamName,
    ) -> Result<StreamDescription, TransportError> {
        self.inner.describe_stream(stream).await
    }

    async fn list_streams(&self) -> Result<Vec<String>, TransportError> {
        self.inner.list_streams().await
    }
}

/// `n` orders of 7 customers.
fn orders(n: i64) -> Vec<Order> {
    (1..=n)
        .map(|id| Order {
            id,
            customer: format!("customer-{}@example.com", id % 7),
            total_cents: id * 100,
            items: vec![format!("sku-{id}")],
        })
        .collect()
}

/// The order ids on the stream, by customer (partition key), in the order they landed.
fn landed(memory: &InMemorySink, stream: &StreamName) -> BTreeMap<String, Vec<i64>> {
    let mut by_customer: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for record in memory.records(stream).unwrap() {
        let message: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
        by_customer
            .entry(record.partition_key.as_str().to_owned())
            .or_default()
            .push(message["order"].as_i64().unwrap());
    }
    by_customer
}

/// What the orders should look like on the stream: each once, each customer's in order.
fn expected(orders: &[Order]) -> BTreeMap<String, Vec<i64>> {
    let mut by_customer: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for order in orders {
        by_customer
            .entry(order.customer.clone())
            .or_default()
            .push(order.id);
    }
    by_customer
}

#[tokio::test(start_paused = true)]
async fn a_sink_of_ones_own_that_throttles_every_third_record() {
    let sink = Arc::new(EveryThirdThrottled::default());
    let stream = StreamName::new("orders").unwrap();
    sink.inner
        .create_stream(&stream, StreamConfig::with_shards(2));
    let state = Arc::new(Mutex::new(MemoryStore::new()));
    let mut engine = orders_engine(sink.clone(), stream.clone(), state).unwrap();
    let orders = orders(300);
    let report = sync_orders(&mut engine, &orders).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(report.records.acknowledged, 300);
    assert!(report.throttled_records >= 100, "{}", report.summary());
    assert_eq!(landed(&sink.inner, &stream), expected(&orders));
}

#[tokio::test(start_paused = true)]
async fn faults_and_the_services_shard_limits_around_the_in_memory_stream() {
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("orders").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(2));
    // Throttled and failing records and failing calls (no lost answers: those may land twice),
    // then the service's 1,000 records and 1 MiB per second per shard, on tokio's clock.
    let faults = RandomFaults {
        record_throttle: 0.1,
        record_internal_failure: 0.05,
        call_error: 0.05,
        max_delay: Duration::from_millis(30),
        ..RandomFaults::default()
    };
    let limited = LimitSink::new(memory.clone(), Arc::new(TokioClock::default()));
    let sink = Arc::new(FaultySink::random(limited, 7, faults));
    let state = Arc::new(Mutex::new(MemoryStore::new()));
    let mut engine = orders_engine(sink, stream.clone(), state).unwrap();
    let orders = orders(5_000);
    let started = tokio::time::Instant::now();
    let report = sync_orders(&mut engine, &orders).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(landed(&memory, &stream), expected(&orders));
    // Two shards take 2,000 records a second (and a burst): 5,000 orders cannot all go within
    // the first second of the paused clock.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
