//! `kinesync sync` over a model in PostgreSQL (a real server on loopback, started by the test
//! kit): the backfill, a run after one `UPDATE`, `DELETE` and `INSERT` that sends exactly those
//! changes, and the connection's password nowhere in what kinesync prints or keeps.

use std::path::Path;
use std::process::{Command, Output};

use kinesync_testkit::postgres::{PASSWORD, postgres};

mod common;

/// The variable the configs name for the connection string.
const URL_VARIABLE: &str = "KINESYNC_TEST_WAREHOUSE_URL";

fn config(dir: &Path, source: &str) -> std::path::PathBuf {
    let path = dir.join("kinesync.toml");
    std::fs::write(
        &path,
        format!(
            r#"[source]
format = "postgres"
connection_env = "{URL_VARIABLE}"
primary_key = "id"
{source}

[payload]
mode = "template"
template = '{{"id": {{{{ row.id }}}}, "email": "{{{{ row.email }}}}", "score": {{{{ row.score }}}}, "tags": {{{{ row.tags }}}}, "event": "{{{{ event }}}}", "was": {{{{ previous.score }}}}}}'

[keys]
partition_key = "email"

[destination]
stream = "users"
simulated = {{ shards = 2 }}
"#
        ),
    )
    .unwrap();
    path
}

fn sync(config: &Path, url: &str, extra: &[&str]) -> (Output, String) {
    let (output, text) = common::command_with("sync", config, extra, &[(URL_VARIABLE, url)]);
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    (output, text)
}

/// The config of a sync of the table `users` with its state in the warehouse.
fn warehouse_state_config(dir: &Path) -> std::path::PathBuf {
    let path = config(dir, r#"table = "users""#);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text + "\n[sync]\nstate_schema = \"kinesync\"\n").unwrap();
    path
}

/// Every file under `dir`, read whole, holds no `needle`.
fn assert_nowhere_in(dir: &Path, needle: &str) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_nowhere_in(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds the password",
                path.display()
            );
        }
    }
}

#[test]
fn a_postgres_model_syncs_then_sends_exactly_what_changed() {
    let pg = postgres();
    let db = pg.new_database("warehouse_sync");
    pg.psql(
        &db,
        "CREATE TABLE users (id int8 PRIMARY KEY, email text NOT NULL, score numeric(30,2), tags text[]);
         INSERT INTO users SELECT g, 'user' || g || '@example.com', g * 1.25, ARRAY['t' || (g % 3)]
           FROM generate_series(1, 2000) AS g;
         UPDATE users SET score = 12345678901234567890.01 WHERE id = 7;",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), r#"table = "public.users""#);
    let url = pg.url(&db);
    let report = dir.path().join("report.json");
    let report_arg = report.to_str().unwrap();

    let (output, text) = sync(&config, &url, &["--report", report_arg]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("records acknowledged 2000 of 2000"), "{text}");

    // One UPDATE of 1% of the rows, a DELETE, an INSERT.
    pg.psql(
        &db,
        "UPDATE users SET score = score + 1 WHERE id % 100 = 0;
         DELETE FROM users WHERE id IN (3, 4);
         INSERT INTO users VALUES (5001, 'new@example.com', 1.5, '{}');",
    );
    let (output, text) = sync(&config, &url, &["--report", report_arg]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let events = &report["events"];
    assert_eq!(
        (
            &events["added"],
            &events["changed"],
            &events["removed"],
            &events["unchanged"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(20),
            &serde_json::json!(2),
            &serde_json::json!(1978)
        ),
        "{report}"
    );
    assert_eq!(report["records"]["acknowledged"], 23, "{report}");
    assert_nowhere_in(dir.path(), PASSWORD);

    // The third run finds nothing to send.
    let (output, text) = sync(&config, &url, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("nothing to send") || text.contains("records acknowledged 0"),
        "{text}"
    );
}

#[test]
fn a_postgres_model_previews_its_exact_values() {
    let pg = postgres();
    let db = pg.new_database("warehouse_preview");
    pg.psql(
        &db,
        "CREATE TABLE users (id int8 PRIMARY KEY, email text, score numeric(30,2), tags text[]);
         INSERT INTO users VALUES (1, 'ada@example.com', 12345678901234567890.01, '{a,b}');",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        r#"query = "SELECT id, email, score, tags FROM users""#,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["preview", "--config"])
        .arg(&config)
        .env(URL_VARIABLE, pg.url(&db))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(r#""score":12345678901234567890.01"#)
            && stdout.contains(r#""tags":["a","b"]"#),
        "{stdout}"
    );
}

#[test]
fn a_bad_connection_setting_is_refused_with_what_to_do_and_no_secret() {
    let pg = postgres();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), r#"table = "public.users""#);
    // The variable is not set.
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["sync", "--config"])
        .arg(&config)
        .env_remove(URL_VARIABLE)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        text.contains(URL_VARIABLE) && text.contains("not set"),
        "{text}"
    );
    // The connection string itself where the variable's name goes: refused, not echoed.
    let url = pg.url("postgres");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(URL_VARIABLE, &url),
    )
    .unwrap();
    let (output, text) = sync(&config, &url, &[]);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        text.contains("connection_env must name an environment variable"),
        "{text}"
    );
    // A wrong password: the user is named, the password is not.
    let config = self::config(dir.path(), r#"table = "public.users""#);
    let wrong = url.replace(PASSWORD, "wrong-password");
    let (output, text) = sync(&config, &wrong, &[]);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        text.contains(r#"authentication failed for user "kinesync""#)
            && !text.contains("wrong-password"),
        "{text}"
    );
}

#[test]
fn the_warehouse_example_loads_and_previews() {
    let pg = postgres();
    let db = pg.new_database("warehouse_example");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/warehouse");
    let schema = std::fs::read_to_string(example.join("schema.sql")).unwrap();
    pg.psql(&db, &schema);
    // The role the example grants to can read the model (given a password here to log in).
    pg.psql(&db, "ALTER ROLE kinesync_reader PASSWORD 'reader-secret'");
    let url = pg.url_as("kinesync_reader", "reader-secret", &db);
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["preview", "--config"])
        .arg(example.join("kinesync.toml"))
        .env("WAREHOUSE_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stdout.contains(r#""lifetime_value":1234.5"#)
            && stdout.contains(r#""first_tag":null"#)
            && stdout.contains(r#""country":"GB""#)
            && stdout.contains(r#""updated_at":"2026-11-30T09:00:00+00:00""#)
            && stdout.contains(r#""plan":"free""#),
        "{stdout}"
    );
    assert!(!stdout.contains("reader-secret") && !stderr.contains("reader-secret"));
    // The grants are enough to keep the state in the warehouse too: a sync as the role, with
    // state_schema, creates it and sends every row.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kinesync.toml");
    std::fs::write(
        &config,
        std::fs::read_to_string(example.join("kinesync.toml"))
            .unwrap()
            .replace(
                "state = \"kinesync-state.db\"",
                "state_schema = \"kinesync\"",
            ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["sync", "--config"])
        .arg(&config)
        .env("WAREHOUSE_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("records acknowledged 3 of 3"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'kinesync_users_rows'"
        )
        .trim(),
        "kinesync_reader"
    );
}

#[test]
fn the_state_kept_in_the_warehouse_syncs_locks_dry_runs_and_resets() {
    let pg = postgres();
    let db = pg.new_database("warehouse_state");
    pg.psql(
        &db,
        "CREATE TABLE users (id int8 PRIMARY KEY, email text NOT NULL, score numeric(30,2), tags text[]);
         INSERT INTO users SELECT g, 'user' || g || '@example.com', g, '{}' FROM generate_series(1, 500) AS g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = warehouse_state_config(dir.path());
    let url = pg.url(&db);
    let tables = || {
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'kinesync'",
        )
        .trim()
        .to_owned()
    };

    // A dry run before any run: nothing is created in the warehouse.
    let (output, text) = sync(&config, &url, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_eq!(tables(), "0", "a dry run creates nothing");

    let (output, text) = sync(&config, &url, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("records acknowledged 500 of 500"), "{text}");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM kinesync.kinesync_users_rows")
            .trim(),
        "500",
        "the state is in the warehouse"
    );
    assert!(
        !dir.path().join("kinesync-state.db").exists(),
        "no local state file"
    );

    pg.psql(&db, "UPDATE users SET score = score + 1 WHERE id <= 5");
    let report = dir.path().join("report.json");
    let (output, text) = sync(&config, &url, &["--report", report.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["events"]["changed"], 5, "{report}");
    assert_eq!(report["records"]["acknowledged"], 5, "{report}");
    // The diff ran in the warehouse: only the changed rows came.
    assert_eq!(
        (&report["diffed_at_source"], &report["rows_read"]),
        (&serde_json::json!(true), &serde_json::json!(5)),
        "{report}"
    );
    assert_eq!(report["events"]["unchanged"], 495, "{report}");
    assert!(
        text.contains("rows read 5 (diffed in the warehouse)"),
        "{text}"
    );
    // A dry run diffs there too, and changes nothing.
    pg.psql(&db, "DELETE FROM users WHERE id = 9");
    let (output, text) = sync(&config, &url, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("(diffed in the warehouse)") && text.contains("removed 1"),
        "{text}"
    );
    pg.psql(
        &db,
        "INSERT INTO users VALUES (9, 'user9@example.com', 9, '{}')",
    );

    // One sync at a time: a run finds the state held by another and stops before reading.
    let (client, place) = kinesync::source::Connection::new(url.clone())
        .connect()
        .unwrap();
    let held = kinesync::state::PostgresStore::open(client, place, "kinesync", "users").unwrap();
    let (output, text) = sync(&config, &url, &[]);
    assert_ne!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("in use"), "{text}");
    drop(held);

    // Reset forgets it; the next run sends every row again.
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["reset", "--yes", "--config"])
        .arg(&config)
        .env(URL_VARIABLE, &url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("500 rows forgotten") && !text.contains(PASSWORD),
        "{text}"
    );
    let (output, text) = sync(&config, &url, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("records acknowledged 500 of 500"), "{text}");
}

#[test]
fn without_connection_env_libpq_variables_alone_reach_the_server() {
    let pg = postgres();
    let db = pg.new_database("pg_variables");
    pg.psql(&db, "CREATE TABLE users (id int8 PRIMARY KEY, email text, score numeric, tags text[]); INSERT INTO users VALUES (1, 'ada@example.com', 1, '{}');");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), r#"table = "users""#);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&format!("connection_env = \"{URL_VARIABLE}\"\n"), ""),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["preview", "--config"])
        .arg(&config)
        .env_remove(URL_VARIABLE)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port().to_string())
        .env("PGUSER", "kinesync")
        .env("PGPASSWORD", PASSWORD)
        .env("PGDATABASE", &db)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", pg.ca_file())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(r#""email":"ada@example.com""#), "{stdout}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
}

#[test]
fn a_key_the_warehouse_cannot_join_is_diffed_by_kinesync_with_a_warning() {
    let pg = postgres();
    let db = pg.new_database("warehouse_numeric_key");
    pg.psql(
        &db,
        "CREATE TABLE users (id numeric(38,0) PRIMARY KEY, email text NOT NULL, score int4, tags text[]);
         INSERT INTO users SELECT g, 'user' || g || '@example.com', g, '{}' FROM generate_series(1, 50) AS g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = warehouse_state_config(dir.path());
    let url = pg.url(&db);
    let (output, text) = sync(&config, &url, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    pg.psql(&db, "UPDATE users SET score = 0 WHERE id <= 3");
    let (output, text) = sync(&config, &url, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    // Read whole, said why, and still exactly the changes.
    assert!(
        text.contains("the diff runs in kinesync") && text.contains("numeric"),
        "{text}"
    );
    assert!(
        text.contains("rows read 50 ·") && text.contains("changed 3"),
        "{text}"
    );
}
