//! What the CLI tests that run `kinesync sync` share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The README's example (model, template, config) copied into `dir`; the config's path.
#[allow(dead_code)] // not every test file starts from the example
pub(crate) fn example(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/users");
    for file in ["kinesync.toml", "users.ndjson", "user_event.liquid"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    dir.join("kinesync.toml")
}

/// `kinesync sync --config CONFIG EXTRA...`, and what it printed (stdout, then stderr).
#[allow(dead_code)] // not every test file runs a sync this way
pub(crate) fn sync(config: &Path, extra: &[&str]) -> (Output, String) {
    command("sync", config, extra)
}

/// `kinesync COMMAND --config CONFIG EXTRA...`, with no terminal on stdin, and what it printed
/// (stdout, then stderr).
#[allow(dead_code)] // not every test file runs a command this way
pub(crate) fn command(command: &str, config: &Path, extra: &[&str]) -> (Output, String) {
    command_with(command, config, extra, &[])
}

/// [`command`], with `env` set for it.
#[allow(dead_code)] // not every test file runs a command this way
pub(crate) fn command_with(
    command: &str,
    config: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args([command, "--config"])
        .arg(config)
        .args(extra)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// How often a killer polls the call log of the run it waits to kill.
const CALL_LOG_POLL: Duration = Duration::from_millis(5);

/// Calls logged so far by the newest run under `runs` (its `calls.jsonl`).
#[allow(dead_code)] // not every test file kills a run
pub(crate) fn calls_logged(runs: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return 0;
    };
    let Some(newest) = entries.filter_map(Result::ok).map(|e| e.path()).max() else {
        return 0;
    };
    std::fs::read_to_string(newest.join("calls.jsonl"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Starts `command` (a `kinesync sync` whose runs are kept in `runs`) and kills it with
/// SIGKILL once its run has logged `calls` calls: no destructor, no flush, no signal handler
/// runs.
#[allow(dead_code)] // not every test file kills a run
pub(crate) fn run_and_kill(mut command: Command, runs: &Path, calls: usize) {
    let runs_before = std::fs::read_dir(runs).map_or(0, Iterator::count);
    let mut child: Child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = std::fs::read_dir(runs).map_or(0, Iterator::count) > runs_before;
        if started && calls_logged(runs) >= calls {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "kinesync ended ({status}) before it could be killed after {calls} calls:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(Instant::now() < deadline, "no progress in 120 s");
        // The call log is a file another process appends to: there is nothing to wait on
        // but the file itself, so it is polled, within the deadline above.
        std::thread::sleep(CALL_LOG_POLL);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The `[destination]` (and its auth) of a test config that reaches `endpoint` (kinesalite, or
/// the test kit's endpoint in front of it), with keys from the variables [`sync_command`] sets.
#[allow(dead_code)] // not every test file talks to an endpoint
pub(crate) fn endpoint_destination(stream: &str, endpoint: &str) -> String {
    format!(
        r#"[destination]
stream = "{stream}"
region = "us-east-1"
endpoint_url = "{endpoint}"

[destination.auth]
kind = "access_key"
access_key_id_env = "KINESYNC_TEST_KEY_ID"
secret_access_key_env = "KINESYNC_TEST_SECRET"
"#
    )
}

/// `kinesync sync --config CONFIG`, its output piped, `RUST_LOG=warn`, and the test keys an
/// [`endpoint_destination`] names in its environment (kinesalite takes any).
#[allow(dead_code)] // not every test file talks to an endpoint
pub(crate) fn sync_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinesync"));
    command
        .args(["sync", "--config"])
        .arg(config)
        .env("KINESYNC_TEST_KEY_ID", "AKIDKINESYNCTEST")
        .env("KINESYNC_TEST_SECRET", "kinesync-test-secret")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a [`sync_command`] to the end; it must exit 0. What it printed on stdout.
#[allow(dead_code)] // not every test file talks to an endpoint
pub(crate) fn run_to_completion(config: &Path) -> String {
    run_command_to_completion(sync_command(config))
}

/// Runs `command` (a [`sync_command`], perhaps with more in its environment) to the end; it
/// must exit 0. What it printed on stdout.
#[allow(dead_code)] // not every test file talks to an endpoint
pub(crate) fn run_command_to_completion(mut command: Command) -> String {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
