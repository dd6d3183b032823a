//! Cross-account writes: a role assumed with an external ID, against moto's STS on loopback
//! (started by the test), signing calls to a local Kinesis endpoint.

use std::sync::Arc;

use kinesync_keys::PartitionKey;
use kinesync_testkit::fake_kinesis::FakeKinesis;
use kinesync_testkit::probe::{TEST_REGION, test_credentials};
use kinesync_testkit::servers::moto;
use kinesync_transport::{
    AssumeRole, AwsKinesisSink, CallObserver, CallRecord, InMemorySink, KinesisSink, Operation,
    PutRecord, StreamConfig, StreamName,
};

/// Keeps every call the sink reports.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<CallRecord>>);

impl CallObserver for Recorder {
    fn on_call(&self, call: &CallRecord, _records: &[PutRecord]) {
        self.0.lock().unwrap().push(call.clone());
    }
}

#[tokio::test]
async fn an_assumed_role_with_an_external_id_signs_the_calls() {
    let sts = moto();
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("cross-account").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(1));
    let kinesis = FakeKinesis::start(memory.clone()).await;
    let external_id = format!("kinesync-ext-{}", std::process::id());

    let recorder = Arc::new(Recorder::default());
    let sink = AwsKinesisSink::builder()
        .observer(recorder.clone())
        .region(TEST_REGION)
        .endpoint_url(&kinesis.endpoint)
        .sts_endpoint_url(&sts.endpoint)
        .credentials(test_credentials())
        .assume_role(AssumeRole {
            role_arn: "arn:aws:iam::210987654321:role/kinesync-writer".into(),
            external_id: Some(external_id.clone()),
            session_name: Some("kinesync-test".into()),
        })
        .build()
        .await
        .unwrap();
    let record = PutRecord::new(PartitionKey::new("k").unwrap(), &b"{}"[..]);
    assert!(sink.put_records(&stream, &[record]).await.unwrap()[0].is_accepted());

    // The call was signed with the role's temporary credentials, not the base key.
    let seen = kinesis.seen();
    let key_id = seen[0].access_key_id.clone().expect("a signed request");
    assert_ne!(
        key_id, "AKIDKINESYNCTEST",
        "signed with the assumed role, not the base credentials"
    );
    assert!(
        seen[0].session_token,
        "temporary credentials carry a session token"
    );

    // The STS call is one of the calls the sink reports, before the write it made possible.
    let operations: Vec<Operation> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.operation)
        .collect();
    assert_eq!(operations, [Operation::AssumeRole, Operation::PutRecords]);
    assert!(recorder.0.lock().unwrap()[0].error.is_none());

    // moto recorded the AssumeRole call with the external ID and the role.
    let state: serde_json::Value =
        reqwest_like_get(&format!("{}/moto-api/data.json", sts.endpoint)).await;
    let text = state.to_string();
    assert!(
        text.contains(&external_id),
        "moto saw the external ID: {text}"
    );
    assert!(
        text.contains("kinesync-writer"),
        "moto saw the role: {text}"
    );
}

/// A plain HTTP GET over a TCP socket (the test needs nothing more).
async fn reqwest_like_get(url: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("moto's state is JSON ({e}): {body}"))
}

#[tokio::test]
async fn a_role_sts_will_not_give_names_sts_the_role_and_why() {
    // No STS where the sink is told to look: AssumeRole cannot succeed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sts_endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let memory = Arc::new(InMemorySink::new());
    let stream = StreamName::new("cross-account").unwrap();
    memory.create_stream(&stream, StreamConfig::with_shards(1));
    let kinesis = FakeKinesis::start(memory.clone()).await;
    let sink = AwsKinesisSink::builder()
        .region(TEST_REGION)
        .endpoint_url(&kinesis.endpoint)
        .sts_endpoint_url(&sts_endpoint)
        .credentials(test_credentials())
        .assume_role(AssumeRole {
            role_arn: "arn:aws:iam::210987654321:role/kinesync-writer".into(),
            external_id: None,
            session_name: None,
        })
        .build()
        .await
        .unwrap();
    let record = PutRecord::new(PartitionKey::new("k").unwrap(), &b"{}"[..]);
    let error = sink.put_records(&stream, &[record]).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(
            "STS AssumeRole of role arn:aws:iam::210987654321:role/kinesync-writer failed"
        ),
        "{text}"
    );
    assert!(text.contains("access key ending"), "{text}");
    assert!(
        !text.contains("no usable credentials"),
        "not a vague message: {text}"
    );
}
