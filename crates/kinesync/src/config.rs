//! The configuration file (TOML), read strictly: an unknown key is an error, not ignored.
//!
//! ```toml
//! [source]
//! path = "rows.ndjson"        # or .csv, or a SQLite .db with `query`; relative to this file
//! primary_key = "id"
//! # query = "SELECT * FROM users"                    # SQLite models
//! # [source.types]                                    # CSV models: typed columns
//! # age = "integer"                                   # integer | float | boolean | json
//!
//! [payload]
//! mode = "template"           # row | column | mapping | template
//! template = '''{"name": "{{ row.full_name }}"}'''   # or template_file = "x.liquid"
//! # escape = "none"
//! # column = "event_json"                             # mode = "column"
//! # [[payload.fields]]                                # mode = "mapping", in order
//! # from = "first_name"
//! # to = "customer_first_name"
//!
//! [keys]
//! partition_key = "user_id"   # default: the primary key
//! # explicit_hash_key = "hash_key"
//! ```

use std::path::{Path, PathBuf};

use kinesync_payload::{Escape, FieldMapping, PayloadSpec};
use serde::Deserialize;

use crate::Error;

/// A whole configuration file. Each command reads the sections it needs: `preview` the
/// source, payload and keys; `check` the destination; `sync` all of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the model's rows come from.
    pub source: Option<SourceConfig>,
    /// How a row becomes a message.
    pub payload: Option<PayloadConfig>,
    /// How a record's keys are chosen.
    #[serde(default)]
    pub keys: KeysConfig,
    /// The stream records go to.
    pub destination: Option<DestinationConfig>,
    /// How `kinesync sync` runs.
    #[serde(default)]
    pub sync: SyncConfig,
    /// The directory relative paths are resolved against (the config file's own).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
    /// The config file's text, for pointing into it.
    #[serde(skip)]
    pub text: String,
}

/// `[source]`: a model file, a SQLite database and a query, or a Postgres query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// An `.ndjson`, `.jsonl` or `.csv` file, or a SQLite database (`.db`, `.sqlite`,
    /// `.sqlite3`). A sync from a file needs it; a Postgres model has none; a snapshot test
    /// that brings its own rows file ([`crate::preview::snapshot_files`]) needs only
    /// `primary_key`.
    pub path: Option<PathBuf>,
    /// The column that identifies a row.
    pub primary_key: String,
    /// `ndjson`, `csv` or `sqlite` when the extension does not say; `postgres` for a model in
    /// PostgreSQL.
    pub format: Option<crate::model::ModelFormat>,
    /// The query a SQLite or Postgres model runs, e.g. `SELECT * FROM users`.
    pub query: Option<String>,
    /// Instead of a query, the Postgres table (or view) whose rows are the model, e.g.
    /// `analytics.users`.
    pub table: Option<String>,
    /// The environment variable holding the Postgres connection string (a URL or libpq's
    /// `key=value` pairs); libpq's `PG*` variables fill in what it leaves out. Without it,
    /// those variables alone. The config names the variable, never the string, which may hold a
    /// password.
    pub connection_env: Option<String>,
    /// The longest one Postgres statement may run, in seconds (default: no limit). The model's
    /// rows are read with one statement, drained as fast as the server sends them (up to 1 GiB
    /// waiting on disk), so it measures the server's work rather than the sync's.
    pub statement_timeout_seconds: Option<u64>,
    /// CSV column types: `[source.types]` with `age = "integer"` (integer, float, boolean,
    /// json, string).
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, kinesync_source::ColumnType>,
}

/// `[sync]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Which changes to send: any of `added`, `changed`, `removed` (default: all three).
    pub events: Option<Vec<String>>,
    /// What the first run does: `backfill` (default) or `skip`.
    pub initial: Option<InitialConfig>,
    /// The SQLite state file (default: `kinesync-state.db` beside the config file).
    pub state: Option<PathBuf>,
    /// Keep the state in the warehouse instead, in this schema of the Postgres model's
    /// database (created if missing), in tables named after `state_name`.
    pub state_schema: Option<String>,
    /// The name of this sync's state tables in `state_schema` (default: the stream's name,
    /// then its region for a real stream): set it when two syncs feed one stream.
    pub state_name: Option<String>,
    /// The directory past runs' reports and debugger logs are kept in (default:
    /// `kinesync-runs` beside the config file).
    pub runs: Option<PathBuf>,
    /// How many past runs to keep (default 50).
    pub keep_runs: Option<usize>,
    /// `PutRecords` calls in flight at once (default: twice the stream's shards, 2..=64).
    pub max_in_flight: Option<usize>,
    /// Failed attempts per record before it is left for the next run (default 10; throttles
    /// do not count).
    pub max_attempts: Option<u32>,
    /// Seconds the run goes on while the stream acknowledges nothing (default 120); a run
    /// that keeps getting records acknowledged keeps going.
    pub retry_seconds: Option<u64>,
    /// The most records per second sent to one shard (default 1,000, the service's limit):
    /// lower it to leave room for other producers on a stream shared on purpose.
    pub shard_records_per_second: Option<f64>,
    /// The most bytes per second sent to one shard (default 1048576, the service's 1 MiB).
    pub shard_bytes_per_second: Option<f64>,
    /// The share of each shard's limits (records and bytes) this sync may use, more than 0 and
    /// at most 1: for a stream shared on purpose. The two settings above, when set, win.
    pub shard_share: Option<f64>,
    /// Threads that render messages (default: one per core, up to 8). Fewer leave cores to
    /// other work on a shared host.
    pub build_threads: Option<usize>,
    /// The largest share (0.0 to 1.0) of the rows last sent that one run may remove (default
    /// 0.5). A run whose model lacks more sends no removal and exits 1: an empty file or a
    /// broken query would otherwise remove every row downstream.
    pub max_removed_share: Option<f64>,
    /// Pack records of one shard into aggregated records, in the Kinesis Producer Library's
    /// format (default false). Consumers must read that format: the KCL does, and Lambda and
    /// other readers with AWS's deaggregation modules.
    pub aggregate: Option<bool>,
    /// The largest aggregated record, in bytes (default 51200, the KPL's; 1024 to 10485760,
    /// and at most the stream's maximum record size).
    pub aggregate_max_bytes: Option<usize>,
}

impl SyncConfig {
    /// The engine's limits: the defaults, with what this section sets.
    pub fn limits(&self) -> kinesync_engine::Limits {
        let mut limits = kinesync_engine::Limits::default();
        if let Some(n) = self.max_in_flight {
            limits.max_in_flight = Some(n);
        }
        if let Some(n) = self.max_attempts {
            limits.max_attempts = n;
        }
        if let Some(seconds) = self.retry_seconds {
            limits.retry_time = std::time::Duration::from_secs(seconds);
        }
        if let Some(n) = self.build_threads {
            limits.build_threads = n;
        }
        if let Some(share) = self.shard_share {
            limits.shard_records_per_second *= share;
            limits.shard_bytes_per_second *= share;
        }
        if let Some(rate) = self.shard_records_per_second {
            limits.shard_records_per_second = rate;
        }
        if let Some(rate) = self.shard_bytes_per_second {
            limits.shard_bytes_per_second = rate;
        }
        if let Some(share) = self.max_removed_share {
            limits.max_removed_share = share;
        }
        limits
    }

    /// Aggregation, when `aggregate = true`. `aggregate_max_bytes` alone turns nothing on;
    /// the run says so (see [`crate::run_config`]).
    pub fn aggregation(&self) -> Option<kinesync_engine::Aggregation> {
        self.aggregate.unwrap_or(false).then(|| {
            let mut aggregation = kinesync_engine::Aggregation::default();
            if let Some(max) = self.aggregate_max_bytes {
                aggregation.max_bytes = max;
            }
            aggregation
        })
    }
}

/// `initial = "backfill" | "skip"`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialConfig {
    /// Send every row as added.
    Backfill,
    /// Record the baseline, send nothing.
    Skip,
}

/// `[destination]`: a Kinesis stream, or a simulated one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// The stream's name (case-sensitive).
    pub stream: String,
    /// The stream's region; required for a real stream.
    pub region: Option<String>,
    /// Send calls here instead of the region's endpoint (a VPC endpoint, or kinesalite).
    pub endpoint_url: Option<String>,
    /// Send STS calls (for `assume_role`) here instead of the region's STS endpoint.
    pub sts_endpoint_url: Option<String>,
    /// An in-memory stream instead of a real one: `simulated = { shards = 4 }`.
    pub simulated: Option<SimulatedConfig>,
    /// Where credentials come from.
    #[serde(default)]
    pub auth: AuthConfig,
}

/// `simulated = { shards = N }`, or `{ shards = N, unlimited = true }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedConfig {
    /// Evenly split shards.
    pub shards: u32,
    /// Lift the service's per-shard limits (1,000 records and 1 MiB per second), which a
    /// simulated stream enforces in real time by default: for benchmarks of kinesync itself.
    #[serde(default)]
    pub unlimited: bool,
}

/// `[destination.auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `default`, `profile`, `access_key` or `assume_role`.
    #[serde(default)]
    pub kind: AuthKind,
    /// The profile (`kind = "profile"`, or the base of `assume_role`).
    pub profile: Option<String>,
    /// The environment variable holding the access key id.
    pub access_key_id_env: Option<String>,
    /// The environment variable holding the secret access key.
    pub secret_access_key_env: Option<String>,
    /// The environment variable holding a session token, for temporary keys.
    pub session_token_env: Option<String>,
    /// The role to assume (`kind = "assume_role"`).
    pub role_arn: Option<String>,
    /// The external ID the role's trust policy requires.
    pub external_id: Option<String>,
    /// The session name (default `kinesync`).
    pub session_name: Option<String>,
}

/// How credentials are found.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// The SDK's default chain.
    #[default]
    Default,
    /// A named profile.
    Profile,
    /// An access key pair from environment variables.
    AccessKey,
    /// A role assumed with the default chain, a profile or an access key pair.
    AssumeRole,
}

/// `[payload]`: one of the four modes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum PayloadConfig {
    /// The whole row as a JSON object. (A struct variant, so that `deny_unknown_fields`
    /// applies to it too.)
    Row {
        /// Adds each record's id to the message under this name.
        record_id_field: Option<String>,
    },
    /// One column that already holds JSON.
    Column {
        /// The column.
        column: String,
        /// Adds each record's id to the message (an object) under this name.
        record_id_field: Option<String>,
    },
    /// Chosen columns, renamed.
    Mapping {
        /// The fields, in order.
        fields: Vec<FieldConfig>,
        /// Adds each record's id to the message under this name.
        record_id_field: Option<String>,
    },
    /// A Liquid template.
    Template {
        /// The template text, inline.
        template: Option<String>,
        /// Or a file holding it, relative to the config file.
        template_file: Option<PathBuf>,
        /// `"json"` (default) or `"none"`.
        #[serde(default)]
        escape: EscapeConfig,
    },
}

/// One `[[payload.fields]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// The source column.
    pub from: String,
    /// The name written.
    pub to: String,
}

/// `escape = "json" | "none"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EscapeConfig {
    /// JSON-safe output tags.
    #[default]
    Json,
    /// Plain Liquid.
    None,
}

/// `[keys]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The column whose value is the partition key; the primary key when unset.
    pub partition_key: Option<String>,
    /// The column whose value is the explicit hash key, if any.
    pub explicit_hash_key: Option<String>,
}

/// Where a template's text came from, so errors can point into the right file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateOrigin {
    /// The file to name: the template file, or the config file for an inline template.
    pub file: PathBuf,
    /// Lines before the template's first line in that file.
    pub line_offset: usize,
    /// Characters before the template's first character on its first line.
    pub column_offset: usize,
}

impl Config {
    /// Reads and parses a config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "read the config file",
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let mut config: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: toml_error_message(text, &e),
        })?;
        config.base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        config.path = path.to_owned();
        config.text = text.to_owned();
        Ok(config)
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        if relative.is_absolute() {
            relative.to_owned()
        } else {
            self.base_dir.join(relative)
        }
    }

    /// The state file: `[sync] state`, or `kinesync-state.db` beside the config file.
    pub fn state_path(&self) -> PathBuf {
        self.resolve(
            self.sync
                .state
                .as_deref()
                .unwrap_or(Path::new("kinesync-state.db")),
        )
    }

    /// The directory of past runs: `[sync] runs`, or `kinesync-runs` beside the config file.
    pub fn runs_dir(&self) -> PathBuf {
        self.resolve(
            self.sync
                .runs
                .as_deref()
                .unwrap_or(Path::new("kinesync-runs")),
        )
    }

    /// An error about this config file.
    pub(crate) fn invalid(&self, message: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// The `[source]` section, which this command needs.
    pub fn source(&self) -> Result<&SourceConfig, Error> {
        self.source.as_ref().ok_or_else(|| {
            self.invalid("there is no [source] section (path and primary_key of the model)")
        })
    }

    /// The `[destination]` section, which this command needs.
    pub fn destination(&self) -> Result<&DestinationConfig, Error> {
        self.destination.as_ref().ok_or_else(|| {
            self.invalid("there is no [destination] section (stream and region, or simulated = { shards = N })")
        })
    }

    /// `[payload] record_id_field`: the member each record's id is added as (not in template
    /// mode, where a template writes `record.id` itself).
    pub fn record_id_field(&self) -> Option<&str> {
        match self.payload.as_ref()? {
            PayloadConfig::Row { record_id_field }
            | PayloadConfig::Column {
                record_id_field, ..
            }
            | PayloadConfig::Mapping {
                record_id_field, ..
            } => record_id_field.as_deref(),
            PayloadConfig::Template { .. } => None,
        }
    }

    /// The payload spec, with a template file read, and where a template's text came from.
    pub fn payload_spec(&self) -> Result<(PayloadSpec, Option<(String, TemplateOrigin)>), Error> {
        let invalid = |message: &str| self.invalid(message);
        let payload = self.payload.as_ref().ok_or_else(|| {
            invalid("there is no [payload] section (mode = row | column | mapping | template)")
        })?;
        Ok(match payload {
            PayloadConfig::Row { .. } => (PayloadSpec::Row, None),
            PayloadConfig::Column { column, .. } => (
                PayloadSpec::Column {
                    column: column.clone(),
                },
                None,
            ),
            PayloadConfig::Mapping { fields, .. } => (
                PayloadSpec::Mapping {
                    fields: fields
                        .iter()
                        .map(|f| FieldMapping::new(&f.from, &f.to))
                        .collect(),
                },
                None,
            ),
            PayloadConfig::Template {
                template,
                template_file,
                escape,
            } => {
                let (source, origin) = match (template, template_file) {
                    (Some(text), None) => (text.clone(), self.inline_template_origin()),
                    (None, Some(file)) => {
                        let file = self.resolve(file);
                        let text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
                            what: "read the template file",
                            path: file.clone(),
                            source,
                        })?;
                        (
                            text,
                            TemplateOrigin {
                                file,
                                line_offset: 0,
                                column_offset: 0,
                            },
                        )
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "[payload] sets both `template` and `template_file`; keep one",
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "[payload] mode = \"template\" needs `template` or `template_file`",
                        ));
                    }
                };
                let escape = match escape {
                    EscapeConfig::Json => Escape::Json,
                    EscapeConfig::None => Escape::None,
                };
                (
                    PayloadSpec::Template {
                        source: source.clone(),
                        escape,
                    },
                    Some((source, origin)),
                )
            }
        })
    }

    /// Where an inline `template = ...` value starts in the config file. TOML drops a newline
    /// right after an opening `'''` or `"""`, so such a template starts on the next line.
    fn inline_template_origin(&self) -> TemplateOrigin {
        let mut origin = TemplateOrigin {
            file: self.path.clone(),
            line_offset: 0,
            column_offset: 0,
        };
        for (index, line) in self.text.lines().enumerate() {
            let Some(rest) = line.trim_start().strip_prefix("template") else {
                continue;
            };
            let Some(value) = rest.trim_start().strip_prefix('=') else {
                continue;
            };
            let value = value.trim_start();
            let before_value = line.len() - value.len();
            let triple = value.starts_with("'''") || value.starts_with("\"\"\"");
            if triple && value.len() == 3 {
                origin.line_offset = index + 1;
            } else {
                origin.line_offset = index;
                let delimiter = if triple { 3 } else { 1 };
                origin.column_offset = line[..before_value + delimiter].chars().count();
            }
            break;
        }
        origin
    }
}

/// A TOML error as a user reads it: where (line and column), what, and the line itself, with
/// the value left out when the line's key may hold a secret (a user who wrote
/// `secret_access_key = "..."` must not find the secret in a log).
fn toml_error_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_number = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or_default();
    format!(
        "line {line_number}, column {column}: {message}\n  {line_number} | {}",
        without_secret(line)
    )
}

/// `line`, or its key alone when the key names something secret (a key, a token, a
/// password) and is not a `..._env` setting, whose value is only a variable's name.
fn without_secret(line: &str) -> String {
    let Some((key, _)) = line.split_once('=') else {
        return line.to_owned();
    };
    let lower = key.trim().to_ascii_lowercase();
    let secret = [
        "secret",
        "token",
        "password",
        "passwd",
        "credential",
        "private",
    ]
    .iter()
    .any(|word| lower.contains(word));
    if secret && !lower.ends_with("_env") {
        format!("{}= (value not shown: it may be a secret)", key)
    } else {
        line.to_owned()
    }
}

/// Whether `name` looks like an environment variable's name as people write them: capitals,
/// digits and underscores, not starting with a digit, at most 128 long. A secret key (mixed
/// case, `/` and `+`) or a token never does.
pub(crate) fn looks_like_a_variable(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_with_their_place() {
        let err = Config::from_toml(
            "[source]\npath = \"x.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"row\"\ncolour = 1\n",
            "k.toml",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("k.toml") && text.contains("colour"), "{text}");
        let err = Config::from_toml(
            "[source]\npath = \"x.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"rows\"\n",
            "k.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("rows"), "{err}");
    }

    #[test]
    fn inline_templates_know_their_line_in_the_file() {
        let text = "[source]\npath = \"x.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"template\"\ntemplate = '''\n{\"a\": 1}\n'''\n";
        let config = Config::from_toml(text, "k.toml").unwrap();
        let (_, origin) = config.payload_spec().unwrap();
        assert_eq!(origin.unwrap().1.line_offset, 6);
        let text = "[source]\npath = \"x.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"template\"\ntemplate = '{\"a\": 1}'\n";
        let config = Config::from_toml(text, "k.toml").unwrap();
        let (_, origin) = config.payload_spec().unwrap();
        let origin = origin.unwrap().1;
        assert_eq!((origin.line_offset, origin.column_offset), (5, 12));
    }

    #[test]
    fn sync_settings_set_the_engine_limits() {
        let base =
            "[source]\npath = \"x.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"row\"\n";
        let config = Config::from_toml(
            &format!("{base}[sync]\nmax_in_flight = 3\nmax_attempts = 4\nretry_seconds = 5\nbuild_threads = 1\n"),
            "k.toml",
        )
        .unwrap();
        let limits = config.sync.limits();
        assert_eq!(limits.max_in_flight, Some(3));
        assert_eq!(limits.max_attempts, 4);
        assert_eq!(limits.retry_time, std::time::Duration::from_secs(5));
        assert_eq!(limits.build_threads, 1);
        let defaults = Config::from_toml(base, "k.toml").unwrap().sync.limits();
        assert_eq!(defaults, kinesync_engine::Limits::default());
        assert!(defaults.build_threads >= 1);
        // A share of each shard scales both ceilings; a rate set outright wins over it.
        let shared = Config::from_toml(
            &format!("{base}[sync]\nshard_share = 0.25\nshard_bytes_per_second = 1000\n"),
            "k.toml",
        )
        .unwrap()
        .sync
        .limits();
        assert_eq!(shared.shard_records_per_second, 250.0);
        assert_eq!(shared.shard_bytes_per_second, 1000.0);
    }
}
