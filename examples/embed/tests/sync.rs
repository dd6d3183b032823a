//! The service's own test of its sync: the in-memory stream in place of Kinesis, the in-memory
//! store in place of SQLite, two runs with a change in between.

use std::sync::{Arc, Mutex};

use kinesync::engine::Outcome;
use kinesync::state::MemoryStore;
use kinesync::transport::{InMemorySink, StreamConfig, StreamName};
use kinesync_embed_example::{Order, orders_engine, sync_orders};
use serde_json::{Value, json};

fn order(id: i64, customer: &str, total_cents: i64, items: &[&str]) -> Order {
    Order {
        id,
        customer: customer.to_owned(),
        total_cents,
        items: items.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The messages on the stream, in the order they landed per shard.
fn messages(sink: &InMemorySink, stream: &StreamName) -> Vec<Value> {
    sink.records(stream)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.data).unwrap())
        .collect()
}

#[tokio::test]
async fn a_second_run_sends_only_the_changed_added_and_removed_orders() {
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("orders").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(2));
    // The test keeps a handle to the store, to look inside it between runs.
    let state = Arc::new(Mutex::new(MemoryStore::new()));
    let mut engine = orders_engine(sink.clone(), stream.clone(), state.clone()).unwrap();

    let mut orders = vec![
        order(1, "ada@example.com", 1250, &["sku-1", "sku-2"]),
        order(2, "grace@example.com", 990, &[]),
        order(3, "ada@example.com", 4000, &["sku-9"]),
    ];
    let report = sync_orders(&mut engine, &orders).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(report.records.acknowledged, 3);
    let first = messages(&sink, &stream);
    assert_eq!(first.len(), 3);
    // An order without items has no first item: null, not an error.
    let grace = first.iter().find(|m| m["order"] == 2).unwrap();
    assert_eq!(
        (&grace["first_item"], &grace["item_count"]),
        (&json!(null), &json!(0))
    );
    let keys: Vec<String> = state.lock().unwrap().snapshot().keys().cloned().collect();
    assert_eq!(keys, ["1", "2", "3"]);

    // Order 1 changes, 2 is gone, 4 is new; 3 is as it was.
    orders[0].total_cents = 1500;
    orders.remove(1);
    orders.push(order(4, "grace@example.com", 100, &["sku-4"]));
    let report = sync_orders(&mut engine, &orders).await.unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{}", report.summary());
    assert_eq!(
        (
            report.events.added,
            report.events.changed,
            report.events.removed,
            report.events.unchanged
        ),
        (1, 1, 1, 1)
    );
    // (The stream lists records shard by shard: the second run's are those the first did not
    // send.)
    let second: Vec<Value> = messages(&sink, &stream)
        .into_iter()
        .filter(|m| !first.contains(m))
        .collect();
    let mut kinds: Vec<String> = second
        .iter()
        .map(|m| format!("{} {}", m["type"].as_str().unwrap(), m["order"]))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["order_added 4", "order_changed 1", "order_removed 2"]
    );
    let changed = second.iter().find(|m| m["order"] == 1).unwrap();
    assert_eq!(
        (&changed["total"], &changed["previous_total"]),
        (&json!(15.0), &json!(12.5))
    );
    let keys: Vec<String> = state.lock().unwrap().snapshot().keys().cloned().collect();
    assert_eq!(keys, ["1", "3", "4"]);

    // A third run over the same orders sends nothing.
    let report = sync_orders(&mut engine, &orders).await.unwrap();
    assert_eq!(report.records.to_send, 0);
}

#[test]
fn outside_a_tokio_runtime_a_run_says_so_instead_of_panicking() {
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("orders").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(1));
    let mut engine = orders_engine(sink, stream, Arc::new(Mutex::new(MemoryStore::new()))).unwrap();
    let orders = [order(1, "ada@example.com", 100, &[])];
    // Another executor (here the simplest one: polling on this thread).
    let error = poll_once_to_completion(sync_orders(&mut engine, &orders)).unwrap_err();
    assert!(
        error.to_string().contains("needs a tokio runtime"),
        "{error}"
    );
}

/// Runs a future on the calling thread, outside any tokio runtime.
fn poll_once_to_completion<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}
