//! The order template under insta snapshots: a change to any message, key or shard shows up as
//! a diff to review (`cargo insta review`).

use kinesync::keys::ShardMap;
use kinesync::payload::Event;
use kinesync::preview::Preview;
use kinesync_embed_example::{Order, order_records};

fn orders() -> Vec<Order> {
    vec![
        Order {
            id: 1,
            customer: "ada@example.com".into(),
            total_cents: 1250,
            items: vec!["sku-1".into(), "sku-2".into()],
        },
        // No items: `first_item` is null. A quote in the customer stays inside its string.
        Order {
            id: 2,
            customer: "grace \"amazing\" hopper@example.com".into(),
            total_cents: 990,
            items: vec![],
        },
        // An empty partition key is the row's error, shown in the snapshot.
        Order {
            id: 3,
            customer: String::new(),
            total_cents: 1,
            items: vec!["sku-3".into()],
        },
    ]
}

fn snapshot(event: Event) -> String {
    // `{e}` (Display) shows a compile error as a compiler does: line, column, what to fix.
    let records = order_records().unwrap_or_else(|e| panic!("{e}"));
    let preview = Preview::new(records, ShardMap::even(4).unwrap(), event);
    preview.snapshot(orders().iter().map(Order::to_row))
}

#[test]
fn new_orders() {
    insta::assert_snapshot!(snapshot(Event::Added));
}

#[test]
fn changed_orders_see_their_previous_version() {
    insta::assert_snapshot!(snapshot(Event::Changed));
}
