//! The in-memory stream and the decorators, held to the conformance suite and to the
//! service's own throttling and fault behaviour.

use std::sync::Arc;
use std::time::Duration;

use kinesync_keys::PartitionKey;
use kinesync_transport::conformance::{self, StreamProbe};
use kinesync_transport::{
    CallObserver, CallRecord, ErrorKind, Fault, FaultySink, InMemorySink, KinesisSink, LimitSink,
    ManualClock, ObservedSink, Operation, PutRecord, RandomFaults, RecordFailure, RecordOutcome,
    StreamConfig, StreamName,
};

fn record(key: &str, bytes: usize) -> PutRecord {
    PutRecord::new(PartitionKey::new(key).unwrap(), vec![b'x'; bytes])
}

#[tokio::test]
async fn in_memory_sink_conforms() {
    let sink = InMemorySink::new();
    conformance::run_all(&sink, &sink, "mem").await;
}

#[tokio::test]
async fn conformance_holds_through_arc_box_and_pass_through_decorators() {
    let sink = Arc::new(InMemorySink::new());
    let as_dyn: Arc<dyn KinesisSink> = sink.clone();
    conformance::run_all(&as_dyn, &*sink, "arc").await;
    let boxed: Box<dyn KinesisSink> = Box::new(sink.clone());
    conformance::run_all(&boxed, &*sink, "box").await;
    let faulty = FaultySink::scripted(sink.clone(), []);
    conformance::run_all(&faulty, &*sink, "faulty").await;
    let limited = LimitSink::new(sink.clone(), Arc::new(ManualClock::new()));
    // Within one second's allowance, the limits let everything through.
    conformance::put_and_read_back(&limited, &*sink, "limited").await;
    conformance::refuses_bad_batches(&limited, &*sink, "limited").await;
    let observed = ObservedSink::new(sink.clone(), Arc::new(Counted::default()));
    conformance::run_all(&observed, &*sink, "observed").await;
}

/// An observer that only counts.
#[derive(Debug, Default)]
struct Counted(std::sync::atomic::AtomicUsize);

impl CallObserver for Counted {
    fn on_call(&self, _call: &CallRecord, _records: &[PutRecord]) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test]
async fn an_observed_sink_reports_each_call_with_its_records_and_failures() {
    #[derive(Debug, Default)]
    struct Kept(std::sync::Mutex<Vec<(CallRecord, usize)>>);
    impl CallObserver for Kept {
        fn on_call(&self, call: &CallRecord, records: &[PutRecord]) {
            self.0.lock().unwrap().push((call.clone(), records.len()));
        }
    }
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("observed").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(1));
    let faulty = FaultySink::scripted(
        memory,
        [
            Fault::FailRecords(vec![(1, RecordFailure::Throttled)]),
            Fault::CallError(ErrorKind::AccessDenied),
        ],
    );
    let kept = Arc::new(Kept::default());
    let sink = ObservedSink::new(faulty, kept.clone());
    sink.describe_stream(&stream).await.unwrap();
    sink.put_records(&stream, &[record("a", 10), record("b", 20)])
        .await
        .unwrap();
    sink.put_records(&stream, &[record("c", 5)])
        .await
        .unwrap_err();
    let kept = kept.0.lock().unwrap();
    let operations: Vec<Operation> = kept.iter().map(|(c, _)| c.operation).collect();
    assert_eq!(
        operations,
        [
            Operation::DescribeStreamSummary,
            Operation::PutRecords,
            Operation::PutRecords
        ]
    );
    let (put, records) = &kept[1];
    assert_eq!((put.records, put.bytes, *records), (2, 1 + 10 + 1 + 20, 2));
    assert_eq!(
        put.record_errors
            .get("ProvisionedThroughputExceededException"),
        Some(&1)
    );
    assert!(put.error.is_none());
    let failed = kept[2].0.error.as_ref().expect("the call failed");
    assert_eq!(failed.kind, ErrorKind::AccessDenied);
}

#[tokio::test]
async fn shard_limits_throttle_the_excess_records_like_the_service() {
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("limited").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(1));
    let clock = ManualClock::new();
    let sink = LimitSink::new(memory.clone(), Arc::new(clock.clone()));

    // 1,000 records/s: two calls of 500 fill the second; the next call is throttled whole.
    for _ in 0..2 {
        let outcomes = sink
            .put_records(
                &stream,
                &(0..500)
                    .map(|i| record(&format!("k{i}"), 10))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        assert!(outcomes.iter().all(RecordOutcome::is_accepted));
    }
    let outcomes = sink
        .put_records(&stream, &[record("late", 10)])
        .await
        .unwrap();
    let RecordOutcome::Failed { failure, message } = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(failure, &RecordFailure::Throttled);
    assert!(message.contains("shardId-000000000000"), "{message}");

    // Half a second later, half the allowance is back.
    clock.advance(Duration::from_millis(500));
    let outcomes = sink
        .put_records(
            &stream,
            &(0..500)
                .map(|i| record(&format!("j{i}"), 10))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(outcomes.iter().filter(|o| o.is_accepted()).count(), 500);
    let outcomes = sink
        .put_records(&stream, &[record("late", 10)])
        .await
        .unwrap();
    assert!(!outcomes[0].is_accepted());

    // 1 MiB/s: two 600 KiB records in one call, the second throttled, the first landed.
    clock.advance(Duration::from_secs(5));
    let outcomes = sink
        .put_records(&stream, &[record("a", 600 * 1024), record("b", 600 * 1024)])
        .await
        .unwrap();
    assert!(outcomes[0].is_accepted());
    assert!(!outcomes[1].is_accepted());
    assert_eq!(
        memory.records(&stream).unwrap().len(),
        1000 + 500 + 1,
        "throttled records never land"
    );
}

#[tokio::test]
async fn limits_are_per_shard() {
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("two").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(2));
    let described = memory.describe_stream(&stream).await.unwrap();
    let sink = LimitSink::new(memory.clone(), Arc::new(ManualClock::new()));
    // 1,500 records spread over both shards: each shard takes its 1,000 at most.
    let records: Vec<PutRecord> = (0..1500).map(|i| record(&format!("k{i}"), 1)).collect();
    let mut accepted_per_shard = std::collections::HashMap::new();
    for chunk in records.chunks(500) {
        for (r, o) in chunk
            .iter()
            .zip(sink.put_records(&stream, chunk).await.unwrap())
        {
            let shard = described
                .shards
                .shard_for(kinesync_keys::HashKey::of_partition_key(&r.partition_key))
                .id()
                .to_owned();
            *accepted_per_shard.entry(shard).or_insert(0) += usize::from(o.is_accepted());
        }
    }
    assert!(
        accepted_per_shard.values().all(|&n| n <= 1000),
        "{accepted_per_shard:?}"
    );
    assert_eq!(
        accepted_per_shard.values().sum::<usize>(),
        memory.records(&stream).unwrap().len()
    );
}

#[tokio::test]
async fn scripted_faults_fail_what_they_say() {
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("faulty").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(2));
    let sink = FaultySink::scripted(
        memory.clone(),
        [
            Fault::FailRecords(vec![
                (1, RecordFailure::Throttled),
                (2, RecordFailure::InternalFailure),
            ]),
            Fault::CallError(ErrorKind::Throttled),
            Fault::LostAnswer,
            Fault::Delay(Duration::from_millis(1)),
        ],
    );
    let batch: Vec<PutRecord> = (0..4).map(|i| record(&format!("k{i}"), 3)).collect();
    let outcomes = sink.put_records(&stream, &batch).await.unwrap();
    assert!(outcomes[0].is_accepted() && outcomes[3].is_accepted());
    assert!(matches!(
        &outcomes[1],
        RecordOutcome::Failed {
            failure: RecordFailure::Throttled,
            ..
        }
    ));
    assert!(matches!(
        &outcomes[2],
        RecordOutcome::Failed {
            failure: RecordFailure::InternalFailure,
            ..
        }
    ));
    assert_eq!(
        memory.records(&stream).unwrap().len(),
        2,
        "failed records do not land"
    );

    let err = sink.put_records(&stream, &batch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled);
    assert!(err.is_retryable());
    assert_eq!(
        memory.records(&stream).unwrap().len(),
        2,
        "a failed call lands nothing"
    );

    let err = sink.put_records(&stream, &batch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(
        memory.records(&stream).unwrap().len(),
        6,
        "a lost answer's records landed"
    );

    assert!(
        sink.put_records(&stream, &batch)
            .await
            .unwrap()
            .iter()
            .all(RecordOutcome::is_accepted)
    );
    assert!(
        sink.put_records(&stream, &batch)
            .await
            .unwrap()
            .iter()
            .all(RecordOutcome::is_accepted),
        "an exhausted script passes"
    );
}

#[tokio::test]
async fn random_faults_replay_from_their_seed() {
    async fn run(seed: u64) -> Vec<String> {
        let memory = Arc::new(InMemorySink::new());
        let stream = StreamName::new("random").unwrap();
        memory.create_stream(&stream, StreamConfig::with_shards(2));
        let rates = RandomFaults {
            record_throttle: 0.2,
            record_internal_failure: 0.1,
            call_error: 0.1,
            lost_answer: 0.05,
            ..RandomFaults::default()
        };
        let sink = FaultySink::random(memory, seed, rates);
        let batch: Vec<PutRecord> = (0..20).map(|i| record(&format!("k{i}"), 3)).collect();
        let mut trace = Vec::new();
        for _ in 0..30 {
            trace.push(match sink.put_records(&stream, &batch).await {
                Ok(outcomes) => outcomes
                    .iter()
                    .map(|o| if o.is_accepted() { '.' } else { 'x' })
                    .collect(),
                Err(e) => e.kind().name().to_owned(),
            });
        }
        trace
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await, "the same seed, the same faults");
    assert_ne!(a, run(8).await);
    assert!(a.iter().any(|t| t.contains('x')) && a.iter().any(|t| t.contains('.')));
    assert!(a.iter().any(|t| t == "throttled" || t == "transient"));
}

#[tokio::test]
async fn probes_see_what_the_sink_wrote() {
    let memory = InMemorySink::new();
    let stream = StreamName::new("probe").unwrap();
    StreamProbe::create_stream(&memory, &stream, 1).await;
    memory
        .put_records(&stream, &[record("a", 1)])
        .await
        .unwrap();
    assert_eq!(memory.read_back(&stream).await.len(), 1);
    assert_eq!(
        memory
            .shard_records(&stream, "shardId-000000000000")
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn record_size_counts_the_partition_key_as_the_service_does() {
    let sink = InMemorySink::new();
    let stream = StreamName::new("sizes").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(1));
    let exactly = record("abc", 1024 * 1024 - 3);
    assert!(
        sink.put_records(&stream, &[exactly]).await.unwrap()[0].is_accepted(),
        "key plus data at exactly 1 MiB fits"
    );
    let over = record("abcd", 1024 * 1024 - 3);
    assert_eq!(
        sink.put_records(&stream, &[over]).await.unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
    let mut bigger = StreamConfig::with_shards(1);
    bigger.max_record_bytes = 2 * 1024 * 1024;
    sink.create_stream(&stream, bigger);
    assert!(
        sink.put_records(&stream, &[record("k", 1024 * 1024 + 100)])
            .await
            .unwrap()[0]
            .is_accepted(),
        "a stream's own maximum applies"
    );
    // 10 MiB a call, keys included.
    let ten: Vec<PutRecord> = (0..10)
        .map(|i| record(&format!("{i}"), 1024 * 1024 - 1))
        .collect();
    assert!(
        sink.put_records(&stream, &ten).await.is_ok(),
        "exactly 10 MiB fits"
    );
    let mut over_ten = ten.clone();
    over_ten[0] = record("00", 1024 * 1024 - 1);
    assert_eq!(
        sink.put_records(&stream, &over_ten)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidRequest
    );
}

/// A split closes the shard (its records stay readable) and opens two with new ids over its
/// range; records go to them from then on.
#[tokio::test]
async fn a_split_shard_closes_and_its_children_take_its_range() {
    let sink = Arc::new(InMemorySink::new());
    let stream = StreamName::new("split").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(2));
    let records: Vec<PutRecord> = (0..200).map(|i| record(&format!("k{i}"), 10)).collect();
    let on_first = |outcomes: &[RecordOutcome]| {
        outcomes
            .iter()
            .filter(|o| matches!(o, RecordOutcome::Accepted { shard_id, .. } if shard_id == "shardId-000000000000"))
            .count()
    };
    let before = sink.put_records(&stream, &records).await.unwrap();
    assert!(on_first(&before) > 50);
    assert!(sink.split_shard(&stream, "shardId-000000000000"));
    assert!(
        !sink.split_shard(&stream, "shardId-000000000000"),
        "closed: no longer splits"
    );
    let described = sink.describe_stream(&stream).await.unwrap();
    let ids: Vec<&str> = described.shards.shards().iter().map(|s| s.id()).collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000002",
            "shardId-000000000003",
            "shardId-000000000001"
        ]
    );
    let after = sink.put_records(&stream, &records).await.unwrap();
    assert_eq!(on_first(&after), 0, "nothing goes to the closed shard");
    let counts = sink.shard_counts(&stream).unwrap();
    assert_eq!(counts.len(), 4);
    assert_eq!(counts[0].1 as usize, on_first(&before), "its records stay");
    assert_eq!(sink.records(&stream).unwrap().len(), 400);
}

/// A merge closes two adjacent shards and opens one with a new id over both ranges.
#[tokio::test]
async fn merged_shards_close_and_one_takes_both_ranges() {
    let sink = InMemorySink::new();
    let stream = StreamName::new("merge").unwrap();
    sink.create_stream(&stream, StreamConfig::with_shards(3));
    assert!(
        !sink.merge_shards(&stream, "shardId-000000000000", "shardId-000000000002"),
        "not adjacent"
    );
    assert!(sink.merge_shards(&stream, "shardId-000000000001", "shardId-000000000002"));
    let described = sink.describe_stream(&stream).await.unwrap();
    let ids: Vec<&str> = described.shards.shards().iter().map(|s| s.id()).collect();
    assert_eq!(ids, ["shardId-000000000000", "shardId-000000000003"]);
    let records: Vec<PutRecord> = (0..100).map(|i| record(&format!("k{i}"), 10)).collect();
    let outcomes = sink.put_records(&stream, &records).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, RecordOutcome::Accepted { shard_id, .. }
        if shard_id == "shardId-000000000000" || shard_id == "shardId-000000000003"))
    );
}
