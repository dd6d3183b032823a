//! AWS's own deaggregation library for Python (`aws-kinesis-agg` on PyPI), as a consumer of
//! aggregated records would use it: installed on first use into the test kit's cache (like
//! moto), and run over records read back from a stream. Tests check what kinesync sends
//! against what AWS's reader makes of it, not against kinesync's own idea of the format.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kinesync_transport::StoredRecord;

/// The pinned versions: the library, and what it imports (it imports `six` without declaring
/// it).
pub const KPL_AGG_VERSION: &str = "1.2.3";
const REQUIREMENTS: [&str; 3] = ["aws-kinesis-agg==1.2.3", "six==1.17.0", "protobuf==7.36.2"];

/// Feeds each record to the library as a Lambda event record (its usual input) and prints
/// one JSON line per user record it yields. `subSequenceNumber` and `aggregated` are set by
/// the library only on user records it took out of a valid aggregate; a record it does not
/// take for one (no magic, a digest that does not match) comes back as it went in.
const DEAGGREGATE: &str = r#"
import json, sys
# The deaggregator first: it puts the package's folder on sys.path, which its generated
# protobuf modules need.
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

for line in sys.stdin:
    record = json.loads(line)
    event = {"kinesis": {
        "kinesisSchemaVersion": "1.0",
        "approximateArrivalTimestamp": 0,
        "sequenceNumber": record["sequence_number"],
        "partitionKey": record["partition_key"],
        "data": record["data_b64"],
    }}
    for user in iter_deaggregate_records(event):
        user = user["kinesis"]
        data = user["data"]
        print(json.dumps({
            "shard_id": record["shard_id"],
            "sequence_number": user["sequenceNumber"],
            "sub_sequence": user.get("subSequenceNumber"),
            "aggregated": user.get("aggregated", False),
            "partition_key": user["partitionKey"],
            "explicit_hash_key": user.get("explicitHashKey"),
            "data_b64": data.decode("ascii") if isinstance(data, bytes) else data,
        }))
"#;

/// One user record as AWS's library gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KplUserRecord {
    /// The shard its Kinesis record was read from.
    pub shard_id: String,
    /// Its Kinesis record's sequence number.
    pub sequence_number: String,
    /// Its place in the aggregate, when it came out of one.
    pub sub_sequence: Option<u64>,
    /// Whether it came out of an aggregate.
    pub aggregated: bool,
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, when the aggregate gave it one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Vec<u8>,
}

fn python() -> std::path::PathBuf {
    crate::servers::python_venv(&format!("aws-kinesis-agg-{KPL_AGG_VERSION}"), &REQUIREMENTS)
        .join("bin")
        .join("python")
}

/// Every user record in `records` (as read back from a stream, in stream order), as AWS's
/// deaggregation library reads them.
pub fn deaggregate_with_aws_library(records: &[StoredRecord]) -> Vec<KplUserRecord> {
    let mut input = String::new();
    for record in records {
        let line = serde_json::json!({
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "partition_key": record.partition_key.as_str(),
            "data_b64": BASE64.encode(&record.data),
        });
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut child = Command::new(python())
        .args(["-c", DEAGGREGATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the deaggregation script");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("the deaggregation script");
    writer
        .join()
        .expect("the writer thread")
        .expect("write the records to the script");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "aws-kinesis-agg failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 JSON lines")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            KplUserRecord {
                shard_id: v["shard_id"].as_str().unwrap_or_default().to_owned(),
                sequence_number: v["sequence_number"].as_str().unwrap_or_default().to_owned(),
                sub_sequence: v["sub_sequence"].as_u64(),
                aggregated: v["aggregated"].as_bool().unwrap_or(false),
                partition_key: v["partition_key"].as_str().unwrap_or_default().to_owned(),
                explicit_hash_key: v["explicit_hash_key"].as_str().map(str::to_owned),
                data: BASE64
                    .decode(v["data_b64"].as_str().unwrap_or_default())
                    .expect("base64 data"),
            }
        })
        .collect()
}
