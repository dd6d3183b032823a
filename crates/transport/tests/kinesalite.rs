//! `AwsKinesisSink` against kinesalite on loopback (started by the test itself): the same
//! conformance suite the in-memory sink passes, over the real SDK and HTTP path.

use std::sync::{Arc, Mutex};

use kinesync_testkit::probe::{KinesisProbe, aws_sink};
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance;
use kinesync_transport::{
    CallObserver, CallRecord, ErrorKind, KinesisSink, Operation, PutRecord, StreamName,
};

#[tokio::test]
async fn aws_sink_conforms_on_kinesalite() {
    let server = kinesalite();
    let sink = aws_sink(&server.endpoint).await;
    let probe = KinesisProbe::new(&server.endpoint).await;
    conformance::run_all(&sink, &probe, "aws").await;
}

#[tokio::test]
async fn in_memory_and_aws_sinks_agree_on_the_same_records() {
    // The same batch on both: the same shard for every record.
    let server = kinesalite();
    let aws = aws_sink(&server.endpoint).await;
    let probe = KinesisProbe::new(&server.endpoint).await;
    let memory = kinesync_transport::InMemorySink::new();
    let stream = conformance::unique_stream("agree");
    conformance::StreamProbe::create_stream(&probe, &stream, 5).await;
    conformance::StreamProbe::create_stream(&memory, &stream, 5).await;
    let records: Vec<PutRecord> = (0..200)
        .map(|i| {
            PutRecord::new(
                kinesync_keys::PartitionKey::new(format!("key-{i}")).unwrap(),
                format!("{i}").into_bytes(),
            )
        })
        .collect();
    let on_aws = aws.put_records(&stream, &records).await.unwrap();
    let in_memory = memory.put_records(&stream, &records).await.unwrap();
    let shard = |o: &kinesync_transport::RecordOutcome| match o {
        kinesync_transport::RecordOutcome::Accepted { shard_id, .. } => shard_id.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        on_aws.iter().map(shard).collect::<Vec<_>>(),
        in_memory.iter().map(shard).collect::<Vec<_>>()
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
async fn every_call_is_observed_without_secrets_or_payloads() {
    let server = kinesalite();
    let recorder = Arc::new(Recorder::default());
    let sink = kinesync_transport::AwsKinesisSink::builder()
        .region("us-east-1")
        .endpoint_url(&server.endpoint)
        .credentials(kinesync_testkit::probe::test_credentials())
        .observer(recorder.clone())
        .build()
        .await
        .unwrap();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = conformance::unique_stream("observed");
    conformance::StreamProbe::create_stream(&probe, &stream, 2).await;
    let records: Vec<PutRecord> = (0..3)
        .map(|i| {
            PutRecord::new(
                kinesync_keys::PartitionKey::new(format!("k{i}")).unwrap(),
                &b"{\"secret_payload\":1}"[..],
            )
        })
        .collect();
    sink.put_records(&stream, &records).await.unwrap();
    sink.describe_stream(&stream).await.unwrap();
    let missing = StreamName::new("no-such-stream-observed").unwrap();
    assert!(sink.put_records(&missing, &records).await.is_err());

    let calls = recorder.0.lock().unwrap().clone();
    let ops: Vec<Operation> = calls.iter().map(|c| c.operation).collect();
    assert_eq!(
        ops,
        [
            Operation::PutRecords,
            Operation::DescribeStreamSummary,
            Operation::ListShards,
            Operation::PutRecords
        ]
    );
    assert_eq!(
        (calls[0].records, calls[0].bytes, calls[0].http_status),
        (3, 3 * (2 + 20), Some(200))
    );
    assert!(
        calls[0].request_id.is_some(),
        "kinesalite sends request ids"
    );
    assert_eq!(calls[3].http_status, Some(400));
    let failure = calls[3].error.as_ref().expect("the call failed");
    assert_eq!(
        (failure.kind, failure.code.as_deref()),
        (ErrorKind::StreamNotFound, Some("ResourceNotFoundException"))
    );
    let text = format!("{calls:?}");
    assert!(
        !text.contains("kinesync-test-secret") && !text.contains("secret_payload"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_being_created_is_not_ready_not_a_failed_listing() {
    let server = kinesync_testkit::servers::kinesalite_creating_slowly();
    let client = kinesync_testkit::probe::sdk_client(&server.endpoint).await;
    let stream = kinesync_transport::conformance::unique_stream("creating");
    client
        .create_stream()
        .stream_name(stream.as_str())
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let sink = aws_sink(&server.endpoint).await;
    let error = sink.describe_stream(&stream).await.unwrap_err();
    assert_eq!(
        error.kind(),
        kinesync_transport::ErrorKind::StreamNotReady,
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("CREATING") && text.contains("takes no records until it is ACTIVE"),
        "{text}"
    );
}
