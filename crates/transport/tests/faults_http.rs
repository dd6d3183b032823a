//! The real SDK path of `AwsKinesisSink` under faults kinesalite cannot make: a loopback
//! endpoint speaking the Kinesis JSON protocol, backed by `InMemorySink` and `FaultySink`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinesync_keys::PartitionKey;
use kinesync_testkit::fake_kinesis::{FakeKinesis, HttpFault};
use kinesync_testkit::probe::{TEST_REGION, aws_sink, test_credentials};
use kinesync_transport::{
    AwsKinesisSink, CallObserver, CallRecord, ErrorKind, Fault, FaultySink, InMemorySink,
    KinesisSink, PutRecord, RecordFailure, RecordOutcome, StreamConfig, StreamName,
};

struct Setup {
    memory: Arc<InMemorySink>,
    faulty: Arc<FaultySink<Arc<InMemorySink>>>,
    fake: FakeKinesis,
    stream: StreamName,
}

async fn setup() -> Setup {
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("faults").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(2));
    let faulty = Arc::new(FaultySink::scripted(memory.clone(), []));
    let fake = FakeKinesis::start(faulty.clone()).await;
    Setup {
        memory,
        faulty,
        fake,
        stream,
    }
}

fn batch(n: usize) -> Vec<PutRecord> {
    (0..n)
        .map(|i| {
            PutRecord::new(
                PartitionKey::new(format!("k{i}")).unwrap(),
                format!("{{\"i\":{i}}}").into_bytes(),
            )
        })
        .collect()
}

#[tokio::test]
async fn per_record_failures_inside_an_http_200_are_outcomes_not_errors() {
    let s = setup().await;
    let sink = aws_sink(&s.fake.endpoint).await;
    s.faulty.push(Fault::FailRecords(vec![
        (1, RecordFailure::Throttled),
        (3, RecordFailure::InternalFailure),
    ]));
    let outcomes = sink.put_records(&s.stream, &batch(5)).await.unwrap();
    assert!(outcomes[0].is_accepted() && outcomes[2].is_accepted() && outcomes[4].is_accepted());
    assert!(
        matches!(&outcomes[1], RecordOutcome::Failed { failure: RecordFailure::Throttled, message } if message.contains("Rate exceeded"))
    );
    assert!(matches!(
        &outcomes[3],
        RecordOutcome::Failed {
            failure: RecordFailure::InternalFailure,
            ..
        }
    ));
    assert_eq!(s.memory.records(&s.stream).unwrap().len(), 3);
    assert_eq!(
        s.fake.requests(),
        ["PutRecords"],
        "one attempt: the SDK does not retry, kinesync does"
    );
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<CallRecord>>);

impl CallObserver for Recorder {
    fn on_call(&self, call: &CallRecord, _records: &[PutRecord]) {
        self.0.lock().unwrap().push(call.clone());
    }
}

#[tokio::test]
async fn per_record_failures_are_counted_in_the_one_call_record() {
    let s = setup().await;
    let recorder = Arc::new(Recorder::default());
    let sink = AwsKinesisSink::builder()
        .region(TEST_REGION)
        .endpoint_url(&s.fake.endpoint)
        .credentials(test_credentials())
        .observer(recorder.clone())
        .build()
        .await
        .unwrap();
    s.faulty.push(Fault::FailRecords(vec![
        (0, RecordFailure::Throttled),
        (2, RecordFailure::Throttled),
        (3, RecordFailure::InternalFailure),
    ]));
    sink.put_records(&s.stream, &batch(5)).await.unwrap();
    sink.put_records(&s.stream, &batch(2)).await.unwrap();

    let calls = recorder.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one record per call: {calls:?}");
    let failed = &calls[0];
    assert_eq!(
        (failed.records, failed.http_status, failed.error.as_ref()),
        (5, Some(200), None),
        "per-record failures do not fail the call"
    );
    assert_eq!(
        failed.record_errors,
        BTreeMap::from([
            ("InternalFailure".to_owned(), 1),
            ("ProvisionedThroughputExceededException".to_owned(), 2),
        ])
    );
    assert!(failed.request_id.is_some(), "{failed:?}");
    assert!(calls[1].record_errors.is_empty(), "{:?}", calls[1]);
}

#[tokio::test]
async fn whole_call_errors_surface_by_kind_after_one_attempt() {
    let s = setup().await;
    let sink = aws_sink(&s.fake.endpoint).await;
    for (fault, kind, code) in [
        (
            HttpFault::Status(400, "ProvisionedThroughputExceededException"),
            ErrorKind::Throttled,
            Some("ProvisionedThroughputExceededException"),
        ),
        (
            HttpFault::Status(400, "LimitExceededException"),
            ErrorKind::Throttled,
            Some("LimitExceededException"),
        ),
        (
            HttpFault::Status(500, "InternalFailure"),
            ErrorKind::Transient,
            Some("InternalFailure"),
        ),
        (
            HttpFault::Status(503, "ServiceUnavailable"),
            ErrorKind::Transient,
            Some("ServiceUnavailable"),
        ),
        (
            HttpFault::Status(400, "AccessDeniedException"),
            ErrorKind::AccessDenied,
            Some("AccessDeniedException"),
        ),
        (
            HttpFault::Status(400, "KMSDisabledException"),
            ErrorKind::Kms(kinesync_transport::KmsProblem::Disabled),
            Some("KMSDisabledException"),
        ),
        (
            HttpFault::Status(400, "ExpiredTokenException"),
            ErrorKind::Credentials,
            Some("ExpiredTokenException"),
        ),
        (
            HttpFault::Status(400, "ValidationException"),
            ErrorKind::InvalidRequest,
            Some("ValidationException"),
        ),
        (HttpFault::Drop, ErrorKind::Transient, None),
    ] {
        let before = s.fake.requests().len();
        s.fake.push_fault(fault.clone());
        let err = sink.put_records(&s.stream, &batch(2)).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{fault:?}: {err}");
        assert_eq!(err.code(), code, "{fault:?}");
        assert_eq!(err.stream(), Some("faults"));
        assert_eq!(err.is_retryable(), kind.is_retryable());
        assert_eq!(
            s.fake.requests().len(),
            before + 1,
            "{fault:?}: exactly one attempt"
        );
    }
    assert!(
        s.memory.records(&s.stream).unwrap().is_empty(),
        "no faulted call landed"
    );
}

#[tokio::test]
async fn slow_answers_time_out_as_transient() {
    let s = setup().await;
    let sink = AwsKinesisSink::builder()
        .region(TEST_REGION)
        .endpoint_url(&s.fake.endpoint)
        .credentials(test_credentials())
        .operation_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    s.fake.push_fault(HttpFault::Delay(Duration::from_secs(2)));
    let err = sink.put_records(&s.stream, &batch(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn refused_connections_are_transient() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let sink = aws_sink(&endpoint).await;
    let err = sink
        .put_records(&StreamName::new("x").unwrap(), &batch(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn describe_and_list_through_the_protocol() {
    let s = setup().await;
    let sink = aws_sink(&s.fake.endpoint).await;
    let d = sink.describe_stream(&s.stream).await.unwrap();
    assert_eq!(d.shards, kinesync_keys::ShardMap::even(2).unwrap());
    assert_eq!(d.max_record_bytes, 1024 * 1024);
    assert_eq!(sink.list_streams().await.unwrap(), ["faults"]);
    let err = sink
        .describe_stream(&StreamName::new("Faults").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamNotFound);
    assert!(err.to_string().contains("case-sensitive"), "{err}");
}
