//! Aggregation through the binary, read back by a real consumer: `kinesync sync` with
//! `aggregate = true` into kinesalite behind the test kit's limiting endpoint, the stream read
//! back, and every Kinesis record deaggregated by AWS's own library for Python
//! (`aws-kinesis-agg`, installed on first use). Every row must come back with its data,
//! partition key and explicit hash key, on the shard its key maps to, in model order per key:
//! through a run the endpoint throttles, and through runs killed with SIGKILL and run again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kinesync::keys::{HashKey, PartitionKey, ShardMap};
use kinesync_testkit::fake_kinesis::{FakeKinesis, HttpFault};
use kinesync_testkit::kpl::{KplUserRecord, deaggregate_with_aws_library};
use kinesync_testkit::probe::{KinesisProbe, aws_sink};
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance::{StreamProbe, unique_stream};
use kinesync_transport::{LimitSink, ShardLimits, TokioClock};

mod common;

const SHARDS: u32 = 4;
const TENANTS: u64 = 40;
const MAX_IN_FLIGHT: u64 = 4;

/// Tenant `t`'s explicit hash key: inside shard `t % 4`'s range, so the tenants spread over
/// the shards whatever their names hash to.
fn explicit_hash_key(tenant: u64) -> u128 {
    u128::from(tenant % 4) * (1u128 << 126) + u128::from(tenant)
}

fn write_model(path: &Path, rows: u64, version: u64, with_explicit_keys: bool) {
    let mut text = String::new();
    for id in 1..=rows {
        let tenant = id % TENANTS;
        let ehk = if with_explicit_keys {
            format!(",\"ehk\":\"{}\"", explicit_hash_key(tenant))
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{{\"id\":{id},\"tenant\":\"tenant-{tenant}\",\"version\":{version}{ehk},\"note\":\"{}\"}}\n",
            "n".repeat(150)
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn write_config(dir: &Path, stream: &str, endpoint: &str, with_explicit_keys: bool) -> PathBuf {
    let ehk = if with_explicit_keys {
        "explicit_hash_key = \"ehk\"\n"
    } else {
        ""
    };
    let destination = common::endpoint_destination(stream, endpoint);
    let config = format!(
        r#"[source]
path = "model.ndjson"
primary_key = "id"

[payload]
mode = "row"

[keys]
partition_key = "tenant"
{ehk}
{destination}
[sync]
aggregate = true
max_in_flight = {MAX_IN_FLIGHT}
"#
    );
    let path = dir.join("kinesync.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// kinesalite behind the test kit's endpoint, which puts per-shard limits in front of it
/// (`bytes_per_second` a shard) and delays every call by 20 ms (a region's round trip).
async fn limited_endpoint(kinesalite: &str, bytes_per_second: f64) -> FakeKinesis {
    let limited = LimitSink::with_limits(
        aws_sink(kinesalite).await,
        Arc::new(TokioClock::default()),
        ShardLimits {
            bytes_per_second,
            ..ShardLimits::default()
        },
    );
    let fake = FakeKinesis::start(Arc::new(limited)).await;
    fake.fault_every("PutRecords", HttpFault::Delay(Duration::from_millis(20)));
    fake
}

/// One row as read back through AWS's library.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: u64,
    version: u64,
}

/// Checks what the library gave back (each user record carries its row's partition key and
/// explicit hash key, and is on the shard its key maps to; nearly all came out of aggregates,
/// a record left alone at its lane's end going as it is, as the KPL sends it) and returns each
/// tenant's rows in the order a consumer reads them.
fn check_and_group(users: &[KplUserRecord], with_explicit_keys: bool) -> BTreeMap<u64, Vec<Row>> {
    let map = ShardMap::even(SHARDS).unwrap();
    let mut by_tenant: BTreeMap<u64, Vec<Row>> = BTreeMap::new();
    for user in users {
        let message: serde_json::Value = serde_json::from_slice(&user.data).unwrap();
        let id = message["id"].as_u64().unwrap();
        let tenant = id % TENANTS;
        assert_eq!(user.partition_key, format!("tenant-{tenant}"));
        assert_eq!(message["tenant"], format!("tenant-{tenant}"));
        let hash = if with_explicit_keys {
            let ehk = explicit_hash_key(tenant);
            // A plain record's explicit hash key is not in what GetRecords returns; an
            // aggregated one's is in its aggregate's table.
            if user.aggregated {
                assert_eq!(user.explicit_hash_key, Some(ehk.to_string()));
            }
            HashKey(ehk)
        } else {
            assert_eq!(user.explicit_hash_key, None);
            HashKey::of_partition_key(&PartitionKey::new(user.partition_key.clone()).unwrap())
        };
        assert_eq!(
            map.shard_for(hash).id(),
            user.shard_id,
            "row {id} is read on the shard its key maps to"
        );
        by_tenant.entry(tenant).or_default().push(Row {
            id,
            version: message["version"].as_u64().unwrap(),
        });
    }
    let aggregated = users.iter().filter(|u| u.aggregated).count();
    assert!(
        aggregated * 100 >= users.len() * 95,
        "{aggregated} of {} records came out of aggregates",
        users.len()
    );
    by_tenant
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_aggregated_run_reads_back_with_aws_s_library() {
    let server = kinesalite();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = unique_stream("agg");
    probe.create_stream(&stream, SHARDS).await;
    // Half the bytes kinesync expects: it is throttled, and finds the limit.
    let fake = limited_endpoint(&server.endpoint, 512.0 * 1024.0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), stream.as_str(), &fake.endpoint, true);
    let rows = 30_000;
    write_model(&dir.path().join("model.ndjson"), rows, 1, true);
    let summary = tokio::task::spawn_blocking(move || common::run_to_completion(&config))
        .await
        .unwrap();
    assert!(summary.contains("complete"), "{summary}");
    let throttled: u64 = summary
        .split("throttled ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the summary counts throttles: {summary}"));
    assert!(throttled > 0, "the endpoint throttled the run: {summary}");
    assert!(summary.contains("packed 30000 records into"), "{summary}");

    let stored = probe.read_back(&stream).await;
    let users = deaggregate_with_aws_library(&stored);
    assert_eq!(users.len(), rows as usize, "every row, once");
    for (tenant, rows_of_tenant) in check_and_group(&users, true) {
        let ids: Vec<u64> = rows_of_tenant.iter().map(|r| r.id).collect();
        let want: Vec<u64> = (1..=rows).filter(|id| id % TENANTS == tenant).collect();
        assert_eq!(ids, want, "tenant {tenant}: in model order");
    }
}

/// The largest call's bytes logged by any run under `runs`.
fn largest_call_bytes(runs: &Path) -> u64 {
    let mut largest = 0;
    for run in std::fs::read_dir(runs).unwrap() {
        let Ok(text) = std::fs::read_to_string(run.unwrap().path().join("calls.jsonl")) else {
            continue;
        };
        for line in text.lines() {
            let Ok(call) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if call["operation"] == "PutRecords" {
                largest = largest.max(call["bytes"].as_u64().unwrap_or(0));
            }
        }
    }
    largest
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_aggregated_runs_lose_nothing_and_keep_per_key_order() {
    let server = kinesalite();
    let probe = KinesisProbe::new(&server.endpoint).await;
    let stream = unique_stream("aggkill");
    probe.create_stream(&stream, SHARDS).await;
    let fake = limited_endpoint(&server.endpoint, 1024.0 * 1024.0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), stream.as_str(), &fake.endpoint, false);
    let model = dir.path().join("model.ndjson");
    let rows = 30_000;
    write_model(&model, rows, 1, false);
    let runs = dir.path().join("kinesync-runs");

    // The backfill, killed twice, then finished; then every row changed, killed once, then
    // finished.
    let (config_ref, runs_ref) = (config.clone(), runs.clone());
    tokio::task::spawn_blocking(move || {
        common::run_and_kill(common::sync_command(&config_ref), &runs_ref, 3);
        common::run_and_kill(common::sync_command(&config_ref), &runs_ref, 8);
        common::run_to_completion(&config_ref);
    })
    .await
    .unwrap();
    write_model(&model, rows, 2, false);
    let (config_ref, runs_ref) = (config.clone(), runs.clone());
    tokio::task::spawn_blocking(move || {
        common::run_and_kill(common::sync_command(&config_ref), &runs_ref, 4);
        common::run_to_completion(&config_ref);
    })
    .await
    .unwrap();
    let kills = 3;

    let stored = probe.read_back(&stream).await;
    let users = deaggregate_with_aws_library(&stored);
    let mut duplicates = 0u64;
    for (tenant, read) in check_and_group(&users, false) {
        // With repeats of a row's same version removed, each tenant reads every row's version
        // 1, in model order, then every row's version 2, in model order.
        let mut distinct: Vec<Row> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for row in read {
            if seen.insert((row.id, row.version)) {
                distinct.push(row);
            } else {
                duplicates += 1;
            }
        }
        let ids: Vec<u64> = (1..=rows).filter(|id| id % TENANTS == tenant).collect();
        let want: Vec<Row> = [1, 2]
            .into_iter()
            .flat_map(|version| ids.iter().map(move |&id| Row { id, version }))
            .collect();
        assert_eq!(
            distinct, want,
            "tenant {tenant}: every version once, in order"
        );
    }
    // A kill repeats what the stream took but the state had not written: the calls in
    // flight, and acknowledged calls whose commits were queued (and the one being written).
    // Counted in user records: calls of at most the largest call's bytes, each user record at
    // least a row's bytes (about 230 here).
    let per_call = largest_call_bytes(&runs) / 200;
    let calls = MAX_IN_FLIGHT + kinesync::state::COMMITS_AHEAD as u64 + 1;
    let bound = kills * calls * per_call;
    eprintln!("{duplicates} duplicates after {kills} kills (bound {bound} user records)");
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, more than {bound}"
    );
    assert_eq!(users.len() as u64, 2 * rows + duplicates);
}
