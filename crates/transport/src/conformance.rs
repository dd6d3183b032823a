//! One conformance suite for every sink (feature `testing`; unstable, for tests).
//!
//! Each check takes the sink under test and a [`StreamProbe`] that can make a fresh stream and
//! read its records back by another path than the sink itself (the in-memory log, or
//! `GetRecords` on a local server). Every check works on its own, uniquely named stream.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use kinesync_keys::{ExplicitHashKey, HashKey, PartitionKey};

use crate::{
    ErrorKind, InMemorySink, KinesisSink, PutRecord, RecordOutcome, StoredRecord, StreamConfig,
    StreamName, StreamStatus,
};

/// Makes streams and reads them back, independently of the sink under test.
#[async_trait]
pub trait StreamProbe: Send + Sync {
    /// Creates a new stream of `shards` evenly split shards and waits until it is active.
    async fn create_stream(&self, name: &StreamName, shards: u32);
    /// Every record of the stream, shard by shard, each shard in arrival order.
    async fn read_back(&self, name: &StreamName) -> Vec<StoredRecord>;
}

#[async_trait]
impl StreamProbe for InMemorySink {
    async fn create_stream(&self, name: &StreamName, shards: u32) {
        InMemorySink::create_stream(self, name, StreamConfig::with_shards(shards));
    }
    async fn read_back(&self, name: &StreamName) -> Vec<StoredRecord> {
        self.records(name).unwrap_or_default()
    }
}

static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// A stream name no other check (or test process) uses.
pub fn unique_stream(prefix: &str) -> StreamName {
    let n = STREAMS.fetch_add(1, Ordering::Relaxed);
    StreamName::new(format!("{prefix}-{}-{n}", std::process::id()))
        .expect("prefix makes a valid name")
}

fn key(s: &str) -> PartitionKey {
    PartitionKey::new(s).expect("test keys are valid")
}

/// Records put are read back exactly once each, on the shard their MD5 (or explicit hash
/// key) predicts, in order per key; outcomes are per index and name that shard.
pub async fn put_and_read_back(sink: &dyn KinesisSink, probe: &dyn StreamProbe, prefix: &str) {
    let stream = unique_stream(prefix);
    probe.create_stream(&stream, 4).await;
    let described = sink
        .describe_stream(&stream)
        .await
        .expect("describe a new stream");
    let mut records = Vec::new();
    for i in 0..60 {
        let k = format!("user-{}", i % 7);
        records.push(PutRecord::new(
            key(&k),
            format!("{{\"i\":{i}}}").into_bytes(),
        ));
    }
    records.push(PutRecord::new(
        key("🦀 ünïcödé"),
        &b"{\"unicode\":true}"[..],
    ));
    records.push(
        PutRecord::new(key("x"), &b"{\"edge\":\"min\"}"[..])
            .with_explicit_hash_key(ExplicitHashKey::new(0)),
    );
    records.push(
        PutRecord::new(key("x"), &b"{\"edge\":\"max\"}"[..])
            .with_explicit_hash_key(ExplicitHashKey::new(u128::MAX)),
    );
    records.push(
        PutRecord::new(key("x"), &b"{\"edge\":\"mid\"}"[..])
            .with_explicit_hash_key(ExplicitHashKey::new(1u128 << 127)),
    );

    let outcomes = sink
        .put_records(&stream, &records)
        .await
        .expect("a valid batch is accepted");
    assert_eq!(outcomes.len(), records.len(), "one outcome per record");
    for (record, outcome) in records.iter().zip(&outcomes) {
        let expected = described.shards.shard_for(HashKey::for_record(
            &record.partition_key,
            record.explicit_hash_key,
        ));
        match outcome {
            RecordOutcome::Accepted {
                shard_id,
                sequence_number,
            } => {
                assert_eq!(
                    shard_id,
                    expected.id(),
                    "outcome names the predicted shard for {record:?}"
                );
                assert!(!sequence_number.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let stored = probe.read_back(&stream).await;
    assert_eq!(
        stored.len(),
        records.len(),
        "every record read back exactly once"
    );
    for record in &records {
        let found: Vec<&StoredRecord> = stored
            .iter()
            .filter(|s| s.data == record.data && s.partition_key == record.partition_key)
            .collect();
        assert_eq!(found.len(), 1, "{record:?} stored once");
        let expected = described.shards.shard_for(HashKey::for_record(
            &record.partition_key,
            record.explicit_hash_key,
        ));
        assert_eq!(
            found[0].shard_id,
            expected.id(),
            "{record:?} on its predicted shard"
        );
    }
    // Per key, arrival order is put order.
    for k in 0..7 {
        let pk = format!("user-{k}");
        let got: Vec<&[u8]> = stored
            .iter()
            .filter(|s| s.partition_key.as_str() == pk)
            .map(|s| &s.data[..])
            .collect();
        let want: Vec<&[u8]> = records
            .iter()
            .filter(|r| r.partition_key.as_str() == pk)
            .map(|r| &r.data[..])
            .collect();
        assert_eq!(got, want, "order of key {pk}");
    }
}

/// Each bad input of the contract is refused, as a whole call, with `InvalidRequest` (or,
/// for a call over an endpoint's size cap, `RequestTooLarge`).
pub async fn refuses_bad_batches(sink: &dyn KinesisSink, probe: &dyn StreamProbe, prefix: &str) {
    let stream = unique_stream(prefix);
    probe.create_stream(&stream, 1).await;
    let small = |i: usize| PutRecord::new(key(&format!("k{i}")), &b"{}"[..]);
    let cases: Vec<(&str, Vec<PutRecord>)> = vec![
        ("no records", vec![]),
        ("501 records", (0..501).map(small).collect()),
        // Data alone over 1 MiB: both the service's rule (key plus data) and kinesalite's older
        // one (data only) refuse it.
        (
            "a record over 1 MiB",
            vec![PutRecord::new(key("big"), vec![b'x'; 1024 * 1024 + 1])],
        ),
        (
            "11 MiB in one call",
            (0..11)
                .map(|i| PutRecord::new(key(&format!("k{i}")), vec![b'x'; 1024 * 1024 - 16]))
                .collect(),
        ),
    ];
    for (what, records) in cases {
        let err = sink.put_records(&stream, &records).await.expect_err(what);
        // An endpoint may refuse a call over its size cap before reading it (HTTP 413).
        assert!(
            matches!(
                err.kind(),
                ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge
            ),
            "{what}: {err}"
        );
        assert!(!err.is_retryable());
    }
    assert!(
        probe.read_back(&stream).await.is_empty(),
        "nothing of a refused call lands"
    );
}

/// An unknown stream is `StreamNotFound` for put and describe.
pub async fn unknown_stream(sink: &dyn KinesisSink, prefix: &str) {
    let stream = unique_stream(&format!("{prefix}-missing"));
    let err = sink
        .put_records(&stream, &[PutRecord::new(key("k"), &b"{}"[..])])
        .await
        .expect_err("no such stream");
    assert_eq!(err.kind(), ErrorKind::StreamNotFound, "{err}");
    assert_eq!(err.stream(), Some(stream.as_str()));
    let err = sink
        .describe_stream(&stream)
        .await
        .expect_err("no such stream");
    assert_eq!(err.kind(), ErrorKind::StreamNotFound, "{err}");
}

/// Describe gives an active stream with its open shards tiling the hash key space, and the
/// default maximum record size; list includes it.
pub async fn describe_and_list(sink: &dyn KinesisSink, probe: &dyn StreamProbe, prefix: &str) {
    let stream = unique_stream(prefix);
    probe.create_stream(&stream, 3).await;
    let d = sink.describe_stream(&stream).await.expect("describe");
    assert_eq!(d.name, stream.as_str());
    assert_eq!(d.status, StreamStatus::Active);
    assert_eq!(d.shards.len(), 3);
    assert_eq!(
        d.shards,
        kinesync_keys::ShardMap::even(3).unwrap(),
        "a new stream is split evenly"
    );
    assert_eq!(d.max_record_bytes, crate::DEFAULT_MAX_RECORD_BYTES);
    assert!(
        sink.list_streams()
            .await
            .expect("list")
            .contains(&stream.as_str().to_owned())
    );
}

/// Every check, one after another.
pub async fn run_all(sink: &dyn KinesisSink, probe: &dyn StreamProbe, prefix: &str) {
    put_and_read_back(sink, probe, prefix).await;
    refuses_bad_batches(sink, probe, prefix).await;
    unknown_stream(sink, prefix).await;
    describe_and_list(sink, probe, prefix).await;
}
