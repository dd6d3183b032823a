//! Reading a local Kinesis back by another path than the sink under test: the SDK's own
//! `CreateStream`, `ListShards`, `GetShardIterator` and `GetRecords`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use kinesync_keys::{ExplicitHashKey, PartitionKey};
use kinesync_transport::conformance::StreamProbe;
use kinesync_transport::{AwsKinesisSink, Credentials, Secret, StoredRecord, StreamName};

/// How often a new stream's status is read while waiting (within a deadline) for it to be
/// active.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The region the local servers are addressed in.
pub const TEST_REGION: &str = "us-east-1";

/// Static test credentials (local servers check no signatures).
pub fn test_credentials() -> Credentials {
    Credentials::AccessKey {
        access_key_id: "AKIDKINESYNCTEST".into(),
        secret_access_key: Secret::new("kinesync-test-secret-never-logged"),
        session_token: None,
    }
}

/// A raw SDK client for `endpoint`, with test credentials.
pub async fn sdk_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(TEST_REGION))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDKINESYNCTEST",
            "secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&config)
}

/// kinesync's own `AwsKinesisSink` pointed at `endpoint` with test credentials.
pub async fn aws_sink(endpoint: &str) -> AwsKinesisSink {
    AwsKinesisSink::builder()
        .region(TEST_REGION)
        .endpoint_url(endpoint)
        .credentials(test_credentials())
        .operation_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("test sink settings are valid")
}

/// A [`StreamProbe`] over a local Kinesis (kinesalite).
#[derive(Debug, Clone)]
pub struct KinesisProbe {
    client: aws_sdk_kinesis::Client,
}

impl KinesisProbe {
    /// A probe of the server at `endpoint`.
    pub async fn new(endpoint: &str) -> Self {
        Self {
            client: sdk_client(endpoint).await,
        }
    }
}

#[async_trait]
impl StreamProbe for KinesisProbe {
    async fn create_stream(&self, name: &StreamName, shards: u32) {
        self.client
            .create_stream()
            .stream_name(name.as_str())
            .shard_count(i32::try_from(shards).expect("a test's shard count fits"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CreateStream {name}: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(e)
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let summary = self
                .client
                .describe_stream_summary()
                .stream_name(name.as_str())
                .send()
                .await;
            if let Ok(out) = summary
                && out
                    .stream_description_summary()
                    .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {name} did not become active in 30 s"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn read_back(&self, name: &StreamName) -> Vec<StoredRecord> {
        let shards = self
            .client
            .list_shards()
            .stream_name(name.as_str())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ListShards {name}: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(e)
                )
            });
        let mut records = Vec::new();
        for shard in shards.shards() {
            let mut iterator = self
                .client
                .get_shard_iterator()
                .stream_name(name.as_str())
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "GetShardIterator: {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(e)
                    )
                })
                .shard_iterator()
                .map(str::to_owned);
            while let Some(it) = iterator {
                let page = self
                    .client
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "GetRecords: {}",
                            aws_sdk_kinesis::error::DisplayErrorContext(e)
                        )
                    });
                for r in page.records() {
                    records.push(StoredRecord {
                        shard_id: shard.shard_id().to_owned(),
                        sequence_number: r.sequence_number().to_owned(),
                        partition_key: PartitionKey::new(r.partition_key().unwrap_or_default())
                            .expect("the server stored a valid key"),
                        explicit_hash_key: None::<ExplicitHashKey>,
                        data: bytes::Bytes::copy_from_slice(r.data().as_ref()),
                    });
                }
                let caught_up = page.records().is_empty()
                    || (page.millis_behind_latest() == Some(0) && page.records().len() < 10_000);
                iterator = if caught_up {
                    None
                } else {
                    page.next_shard_iterator().map(str::to_owned)
                };
            }
        }
        records
    }
}
