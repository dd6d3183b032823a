//! Reaching the server: the connection settings (a URL or libpq's pairs, libpq's environment
//! variables filling in the rest), TLS, and what a failure to connect says, never with the
//! password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::SourceError;

/// Connection settings as libpq takes them: a URL (`postgres://user@host:5432/db`) or
/// `key=value` pairs. What they leave out comes from libpq's environment variables (`PGHOST`,
/// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`,
/// `PGSSLMODE`, `PGSSLROOTCERT`). It may hold a password, so it is never printed, `Debug`
/// included.
#[derive(Clone)]
pub struct Connection(String);

impl Connection {
    /// Settings from `text` (a URL or `key=value` pairs; empty for the environment's alone).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// A client connected with these settings, and where it is connected
    /// (`postgres://user@host:port/database`, without the password).
    ///
    /// The client blocks on a runtime of its own, which tokio forbids on a thread that drives
    /// a runtime: connecting happens on a thread of its own, and so must every later call
    /// made from async code (or inside `tokio::task::block_in_place`).
    pub fn connect(&self) -> Result<(postgres::Client, String), SourceError> {
        super::off_the_runtime(|| self.connect_here())
    }

    /// [`connect`](Self::connect), on the calling thread.
    pub(super) fn connect_here(&self) -> Result<(postgres::Client, String), SourceError> {
        let (config, root_cert) = config(self)?;
        let place = describe(&config);
        let error = |message: String| SourceError::Postgres {
            location: place.clone(),
            message,
        };
        let client = match config.get_ssl_mode() {
            postgres::config::SslMode::Disable => config.connect(postgres::NoTls),
            _ => config.connect(tls(root_cert.as_deref()).map_err(error)?),
        }
        .map_err(|e| error(connect_error(&config, &e)))?;
        Ok((client, place))
    }
}

impl Connection {
    /// Asks the server to stop the statement running on the connection `token` is of (a read
    /// the sync no longer wants), over a connection of its own, as securely as the first; a
    /// request that fails changes nothing (the statement then ends on its own). Blocks: call
    /// it off the async threads.
    pub(super) fn cancel(&self, token: &postgres::CancelToken) {
        let Ok((config, root_cert)) = config(self) else {
            return;
        };
        let cancelled = match config.get_ssl_mode() {
            postgres::config::SslMode::Disable => token.cancel_query(postgres::NoTls),
            _ => match tls(root_cert.as_deref()) {
                Ok(tls) => token.cancel_query(tls),
                Err(_) => return,
            },
        };
        if let Err(e) = cancelled {
            tracing::debug!(error = %e, "the model's statement could not be cancelled");
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connection(<not shown: may hold a password>)")
    }
}

/// The settings of `connection`, with libpq's environment variables filling in what it leaves
/// out, and the extra root certificate file to trust (`sslrootcert`, which the client's own
/// parser does not take).
fn config(connection: &Connection) -> Result<(Config, Option<PathBuf>), SourceError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (text, root_cert) = take_root_cert(connection.0.trim());
    // libpq's `verify-ca` and `verify-full`: every TLS connection here verifies the server.
    let text = text
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    let mut config: Config = if text.is_empty() {
        Config::new()
    } else {
        text.parse().map_err(|e: postgres::Error| {
            // The parser's message quotes no value, only what it expected.
            SourceError::Postgres {
                location: "the Postgres connection string".to_owned(),
                message: format!(
                    "{e} (a URL postgres://user@host:5432/database, or key=value pairs)"
                ),
            }
        })?
    };
    if !text.contains("sslmode")
        && let Some(mode) = env("PGSSLMODE")
    {
        config.ssl_mode(match mode.as_str() {
            "disable" => postgres::config::SslMode::Disable,
            "require" | "verify-ca" | "verify-full" => postgres::config::SslMode::Require,
            _ => postgres::config::SslMode::Prefer,
        });
    }
    let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT").map(PathBuf::from));
    if config.get_hosts().is_empty() {
        config.host(&env("PGHOST").unwrap_or_else(|| "localhost".to_owned()));
    }
    if config.get_ports().is_empty()
        && let Some(port) = env("PGPORT").and_then(|p| p.parse().ok())
    {
        config.port(port);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".to_owned());
        config.user(&user);
    }
    if config.get_password().is_none()
        && let Some(password) = env("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_dbname().is_none()
        && let Some(database) = env("PGDATABASE")
    {
        config.dbname(&database);
    }
    if config.get_application_name().is_none() {
        config.application_name(&env("PGAPPNAME").unwrap_or_else(|| "kinesync".to_owned()));
    }
    if config.get_connect_timeout().is_none() {
        let seconds = env("PGCONNECT_TIMEOUT")
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        config.connect_timeout(Duration::from_secs(seconds));
    }
    Ok((config, root_cert))
}

/// `text` without its `sslrootcert` setting, and the file it names.
fn take_root_cert(text: &str) -> (String, Option<PathBuf>) {
    let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = text.split_once('?') else {
            return (text.to_owned(), None);
        };
        let mut root = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.strip_prefix("sslrootcert=") {
                Some(path) => {
                    root = Some(PathBuf::from(percent_decoded(path)));
                    false
                }
                None => true,
            })
            .collect();
        let text = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (text, root);
    }
    let mut root = None;
    let kept: Vec<&str> = text
        .split_whitespace()
        .filter(|pair| match pair.strip_prefix("sslrootcert=") {
            Some(path) => {
                root = Some(PathBuf::from(path.trim_matches('\'')));
                false
            }
            None => true,
        })
        .collect();
    (kept.join(" "), root)
}

/// `%2F` and the like decoded (a path in a URL's query).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// rustls, trusting the system's roots and those of `root_cert`.
fn tls(root_cert: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    // A system root that does not parse is passed over, as libpq does.
    for cert in rustls_native_certs::load_native_certs().certs {
        roots.add(cert).ok();
    }
    if let Some(path) = root_cert {
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut text.as_slice()) {
            let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!(
                "sslrootcert {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `postgres://user@host:port/database`, never with the password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let database = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{database}")
}

/// Why connecting failed, in words that say what to check.
fn connect_error(config: &Config, error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return match db.code().code() {
            "28P01" | "28000" => format!(
                "authentication failed for user {:?}: check the user and password (the password is not shown)",
                config.get_user().unwrap_or("?")
            ),
            "3D000" => format!("{}: check the database name", db.message()),
            _ => db.message().to_owned(),
        };
    }
    let io =
        std::error::Error::source(error).and_then(|source| source.downcast_ref::<std::io::Error>());
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "connection refused: is the server running, and listening on that host and port?"
                .to_owned()
        }
        Some(std::io::ErrorKind::TimedOut) => {
            "no answer within the connect timeout: check the host, port and firewall".to_owned()
        }
        _ if error.to_string().to_lowercase().contains("tls") => {
            let mut why = error.to_string();
            let mut cause = std::error::Error::source(error);
            while let Some(inner) = cause {
                why = format!("{why}: {inner}");
                cause = inner.source();
            }
            format!(
                "{why}; if the server's certificate is signed by a CA of your own, give its certificate as sslrootcert (in the connection string, or PGSSLROOTCERT), or use sslmode=disable on a private network"
            )
        }
        _ => format!("cannot connect: {error}"),
    }
}
