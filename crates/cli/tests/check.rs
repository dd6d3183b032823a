//! `kinesync check`, run as a user runs it, against a simulated stream, kinesalite on loopback
//! (started by the test), and a fault-injecting endpoint for the errors kinesalite cannot make.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use kinesync_testkit::fake_kinesis::{FakeKinesis, HttpFault};
use kinesync_testkit::probe::KinesisProbe;
use kinesync_testkit::servers::kinesalite;
use kinesync_transport::conformance::{StreamProbe, unique_stream};
use kinesync_transport::{InMemorySink, StreamConfig, StreamName};

const SECRET: &str = "check-secret-value-must-never-print";

fn write_config(dir: &Path, destination: &str) -> PathBuf {
    let path = dir.join("kinesync.toml");
    std::fs::write(&path, format!("[destination]\n{destination}\n")).unwrap();
    path
}

async fn check(config: &Path) -> Output {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kinesync"))
            .args(["check", "--config"])
            .arg(&config)
            .env("TEST_KEY_ID", "AKIDCHECKTEST")
            .env("TEST_SECRET", SECRET)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("the kinesync binary runs")
    })
    .await
    .unwrap()
}

fn texts(output: &Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "the secret leaked:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

const ACCESS_KEY_AUTH: &str = "[destination.auth]\nkind = \"access_key\"\naccess_key_id_env = \"TEST_KEY_ID\"\nsecret_access_key_env = \"TEST_SECRET\"";

#[tokio::test(flavor = "multi_thread")]
async fn shows_a_kinesalite_streams_shards_and_settings() {
    let server = kinesalite();
    let stream = unique_stream("check");
    KinesisProbe::new(&server.endpoint)
        .await
        .create_stream(&stream, 3)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "stream = \"{stream}\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n{ACCESS_KEY_AUTH}",
            server.endpoint
        ),
    );
    let output = check(&config).await;
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("stream       {stream}")),
        "{stdout}"
    );
    assert!(stdout.contains("status       ACTIVE"), "{stdout}");
    assert!(stdout.contains("shards       3 open"), "{stdout}");
    assert!(stdout.contains("shardId-000000000000                                        0 .. 113427455640312821154458202477256070484"), "{stdout}");
    assert!(stdout.contains("shardId-000000000002  226854911280625642308916404954512140970 .. 340282366920938463463374607431768211455"), "{stdout}");
    assert!(
        stdout.contains("max record   1024 KiB")
            && stdout.contains("encryption   none")
            && stdout.contains("capacity     provisioned"),
        "{stdout}"
    );
    assert!(
        stdout.contains("credentials  access key ending TEST from $TEST_KEY_ID")
            && !stdout.contains("AKIDCHECKTEST"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_stream_names_the_stream_region_and_case() {
    let server = kinesalite();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "stream = \"No-Such-Stream\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n{ACCESS_KEY_AUTH}",
            server.endpoint
        ),
    );
    let output = check(&config).await;
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("stream_not_found")
            && stderr.contains("\"No-Such-Stream\" in region us-east-1")
            && stderr.contains("case-sensitive"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_stream_needs_no_account() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "stream = \"quickstart\"\nsimulated = { shards = 4 }",
    );
    let output = check(&config).await;
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("shards       4 open")
            && stdout.contains("where        simulated in memory, 4 shards"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("25.0% of hash keys").count(), 4, "{stdout}");
}

async fn fake_check(fault: HttpFault) -> (Output, String) {
    let memory = Arc::new(InMemorySink::new());
    memory.create_stream(
        &StreamName::new("orders").unwrap(),
        StreamConfig::with_shards(1),
    );
    let fake = FakeKinesis::start(memory).await;
    fake.push_fault(fault);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "stream = \"orders\"\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\n{ACCESS_KEY_AUTH}",
            fake.endpoint
        ),
    );
    let output = check(&config).await;
    let (_, stderr) = texts(&output);
    (output, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_names_the_iam_action_and_stream_arn() {
    let (output, stderr) = fake_check(HttpFault::Status(400, "AccessDeniedException")).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(
            "kinesis:DescribeStreamSummary on arn:aws:kinesis:eu-west-1:ACCOUNT:stream/orders"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("kinesis:PutRecords") && stderr.contains("kinesis:ListShards"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_say_so() {
    let (output, stderr) = fake_check(HttpFault::Status(400, "UnrecognizedClientException")).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("(credentials, UnrecognizedClientException)")
            && stderr.contains("credentials were refused"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_problems_keep_their_code() {
    let (output, stderr) = fake_check(HttpFault::Status(400, "KMSAccessDeniedException")).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("KMSAccessDeniedException") && stderr.contains("kms:GenerateDataKey"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_problems_are_named_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    for (destination, expected) in [
        ("stream = \"orders\"", "a region is required"),
        (
            "stream = \"orders\"\nregion = \"Frankfurt\"",
            "\"Frankfurt\" is not an AWS region name",
        ),
        (
            "stream = \"bad name\"\nregion = \"us-east-1\"",
            "invalid stream name \"bad name\"",
        ),
        (
            "stream = \"orders\"\nregion = \"us-east-1\"\n[destination.auth]\nkind = \"access_key\"\naccess_key_id_env = \"UNSET_KINESYNC_VAR\"\nsecret_access_key_env = \"TEST_SECRET\"",
            "access_key_id_env names the environment variable UNSET_KINESYNC_VAR, which is not set",
        ),
        (
            "stream = \"orders\"\nregion = \"us-east-1\"\n[destination.auth]\nkind = \"assume_role\"",
            "needs role_arn",
        ),
        (
            // Half an access key is not quietly replaced by the default chain.
            "stream = \"orders\"\nregion = \"us-east-1\"\n[destination.auth]\nkind = \"assume_role\"\nrole_arn = \"arn:aws:iam::210987654321:role/w\"\nsecret_access_key_env = \"TEST_SECRET\"",
            "[destination.auth] needs access_key_id_env",
        ),
        (
            "stream = \"orders\"\nregion = \"us-east-1\"\n[destination.auth]\nkind = \"sso\"",
            "unknown variant `sso`",
        ),
    ] {
        let config = write_config(dir.path(), destination);
        let output = check(&config).await;
        let (_, stderr) = texts(&output);
        assert_eq!(output.status.code(), Some(1), "{destination}");
        assert!(stderr.contains(expected), "{destination}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_in_the_wrong_place_is_never_printed() {
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let dir = tempfile::tempdir().unwrap();
    for (destination, expected) in [
        (
            // The secret pasted where the name of its variable goes.
            format!(
                "stream = \"orders\"\nregion = \"us-east-1\"\n[destination.auth]\nkind = \"access_key\"\naccess_key_id_env = \"TEST_KEY_ID\"\nsecret_access_key_env = \"{SECRET}\""
            ),
            "does not look like one",
        ),
        (
            // The secret written into the config as a setting kinesync does not have.
            format!(
                "stream = \"orders\"\nregion = \"us-east-1\"\n[destination.auth]\nkind = \"access_key\"\nsecret_access_key = \"{SECRET}\""
            ),
            "unknown field `secret_access_key`",
        ),
    ] {
        let config = write_config(dir.path(), &destination);
        let output = check(&config).await;
        let (stdout, stderr) = texts(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET) && !stderr.contains("wJalr"),
            "the secret was printed: {stderr}"
        );
    }
}
