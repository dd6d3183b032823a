//! What the CLI tests that run `kinesync sync` share.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args([command, "--config"])
        .arg(config)
        .args(extra)
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
