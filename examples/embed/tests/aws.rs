//! With the `aws` feature (the default), the service reaches the real stream through kinesync's
//! AWS sink. Building it makes no call (credentials are resolved on the first one), so a bad
//! setting is found here without a network.
#![cfg(feature = "aws")]

use kinesync_embed_example::kinesis;

#[tokio::test]
async fn a_bad_region_is_refused_before_any_call_and_a_good_one_builds() {
    let error = kinesis("Europe West", "orders").await.unwrap_err();
    assert!(error.to_string().contains("Europe West"), "{error}");
    let (sink, stream) = kinesis("eu-west-1", "orders").await.unwrap();
    assert_eq!(stream.as_str(), "orders");
    assert!(sink.to_string().contains("eu-west-1"), "{sink}");
}
