//! Local servers the tests talk to, on loopback: kinesalite (a faithful Kinesis) and moto (for
//! STS). Each is installed on first use into a cache the tests share, started once per test
//! process, and stopped when that process ends. A missing tool or a failed install fails the
//! test with what to install; nothing is skipped.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often a launcher's port is tried while waiting (within a deadline) for it to open.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The pinned versions.
pub const KINESALITE_VERSION: &str = "3.3.3";
/// The pinned moto version.
pub const MOTO_VERSION: &str = "5.2.5";

/// A running local server.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The port.
    pub port: u16,
    /// Held so the server lives as long as the test process: the server's launcher exits when
    /// this pipe closes, which happens when the process ends, however it ends.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// Where installs are kept: `$KINESYNC_TESTKIT_CACHE`, or `~/.cache/kinesync-testkit`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KINESYNC_TESTKIT_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("kinesync-testkit")
}

pub(crate) fn require_tool(tool: &str, hint: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the tests need `{tool}`, which was not found or does not run: {hint}"
    );
}

/// Runs `install` once across every test process, under a file lock, unless `marker` exists.
pub(crate) fn install_once(dir: &Path, what: &str, install: impl FnOnce(&Path)) {
    let marker = dir.join(".installed");
    if marker.exists() {
        return;
    }
    fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("cannot create the test cache {}: {e}", dir.display()));
    let lock = File::create(dir.with_extension("lock"))
        .unwrap_or_else(|e| panic!("cannot create the install lock: {e}"));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", dir.display()));
    if !marker.exists() {
        eprintln!(
            "kinesync-testkit: installing {what} into {} (first use only)",
            dir.display()
        );
        install(dir);
        fs::write(&marker, what)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", marker.display()));
    }
    // The lock is released when `lock` drops.
}

pub(crate) fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Python virtual environment in the test cache under `name`, with `packages` (pinned)
/// installed by pip on first use; its directory.
pub(crate) fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    require_tool(
        "python3",
        "install Python 3 with venv and pip (for example `apt-get install python3 python3-venv`)",
    );
    let dir = cache_dir().join(name);
    install_once(&dir, &packages.join(" "), |dir| {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(dir),
            "python3 -m venv",
        );
        run(
            Command::new(dir.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(packages),
            &format!("pip install {}", packages.join(" ")),
        );
    });
    dir
}

/// Starts `command` (a launcher that prints `LISTENING <port>` and exits when its stdin
/// closes) and waits, with a deadline, until the port accepts connections.
pub(crate) fn start(mut command: Command, what: &str) -> Server {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let port = lines.next().and_then(Result::ok).and_then(|l| {
            l.strip_prefix("LISTENING ")
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        // The receiver only goes away once it gave up waiting; nothing to do then.
        tx.send(port).ok();
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!("{what} did not report its port within 60 s (see its output above)")
        });
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} reported port {port} but does not accept connections after 60 s"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    }
}

const KINESALITE_LAUNCHER: &str = r#"
const kinesalite = require('kinesalite');
const createStreamMs = Number(process.argv[2] || 0);
const server = kinesalite({createStreamMs, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000});
server.listen(0, '127.0.0.1', () => console.log('LISTENING ' + server.address().port));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
"#;

/// kinesalite on 127.0.0.1, one per test process: streams are ACTIVE as soon as created.
pub fn kinesalite() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| start_kinesalite(0))
}

/// A second kinesalite whose streams stay `CREATING` for ten minutes: what a stream just
/// created looks like to a sync.
pub fn kinesalite_creating_slowly() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| start_kinesalite(600_000))
}

fn start_kinesalite(create_stream_ms: u64) -> Server {
    let hint = "install Node.js 20 and npm (for example `apt-get install nodejs npm`)";
    require_tool("node", hint);
    require_tool("npm", hint);
    let dir = cache_dir().join(format!("kinesalite-{KINESALITE_VERSION}"));
    install_once(&dir, &format!("kinesalite@{KINESALITE_VERSION}"), |dir| {
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(dir)
                .arg(format!("kinesalite@{KINESALITE_VERSION}")),
            "npm install kinesalite",
        );
    });
    let launcher = dir.join("launch.js");
    fs::write(&launcher, KINESALITE_LAUNCHER).expect("write the kinesalite launcher");
    let mut command = Command::new("node");
    command
        .arg(&launcher)
        .arg(create_stream_ms.to_string())
        .current_dir(&dir);
    start(command, "kinesalite")
}

const MOTO_LAUNCHER: &str = r#"
import socket, subprocess, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("LISTENING", port, flush=True)
sys.stdin.read()
server.terminate()
"#;

/// moto's server on 127.0.0.1 (used for STS), one per test process.
pub fn moto() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = python_venv(
            &format!("moto-{MOTO_VERSION}"),
            &[&format!("moto[server]=={MOTO_VERSION}")],
        );
        let launcher = dir.join("launch.py");
        fs::write(&launcher, MOTO_LAUNCHER).expect("write the moto launcher");
        let mut command = Command::new(dir.join("bin").join("python"));
        command.arg(&launcher);
        start(command, "moto")
    })
}
