//! `kinesync sync` on the example model and a simulated stream, as a user runs it: a backfill,
//! a run with nothing to send, runs after edits, the JSON report, and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn example(dir: &Path) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/users");
    for file in ["kinesync.toml", "users.ndjson", "user_event.liquid"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    dir.join("kinesync.toml")
}

fn sync(config: &Path, extra: &[&str]) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .arg("sync")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[test]
fn the_example_syncs_then_sends_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("records acknowledged 3 of 3"), "{stdout}");
    assert!(
        stdout.contains("simulated stream users (4 shards)"),
        "{stdout}"
    );
    // Not on a terminal: log lines, not a progress bar.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("INFO")
            && stderr.contains("sync starting")
            && stderr.contains("sync finished"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal escapes in a log: {stderr}"
    );
    assert!(
        dir.path().join("kinesync-state.db").exists(),
        "the state lives beside the config"
    );

    let (_, stdout) = sync(&config, &[]);
    assert!(
        stdout.contains("unchanged 3") && stdout.contains("records acknowledged 0 of 0"),
        "{stdout}"
    );

    // Edit one user, drop another.
    let model = std::fs::read_to_string(dir.path().join("users.ndjson")).unwrap();
    let mut lines: Vec<String> = model.lines().map(str::to_owned).collect();
    lines[0] = lines[0].replace("ada@example.com", "ada@lovelace.example.com");
    lines.pop();
    std::fs::write(dir.path().join("users.ndjson"), lines.join("\n") + "\n").unwrap();
    let report = dir.path().join("report.json");
    let (output, stdout) = sync(&config, &["--report", report.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout.contains("changed 1 · removed 1 · unchanged 1"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(report["outcome"]["status"], "complete");
    assert_eq!(report["records"]["acknowledged"], 2);
}

#[test]
fn a_row_in_error_exits_two_and_a_bad_template_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let model = std::fs::read_to_string(dir.path().join("users.ndjson")).unwrap();
    std::fs::write(
        dir.path().join("users.ndjson"),
        model.replace("\"email\": \"alan@example.com\"", "\"email\": \"\""),
    )
    .unwrap();
    let (output, stdout) = sync(&config, &["--dry-run"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a dry run fails on the errors the run would meet: {stdout}"
    );
    assert!(stdout.contains("row errors 1"), "{stdout}");
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("row errors 1"), "{stdout}");

    std::fs::write(
        dir.path().join("user_event.liquid"),
        "{\"x\": {{ row.nope }}}",
    )
    .unwrap();
    let (output, _) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no column `nope`"));
}

#[test]
fn a_dry_run_says_what_would_be_sent_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (output, stdout) = sync(&config, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("dry run: nothing sent, nothing committed; 3 records would be sent"),
        "{stdout}"
    );
    assert!(stdout.contains("shardId-"), "per shard: {stdout}");
    assert!(
        !dir.path().join("kinesync-runs").exists(),
        "a dry run keeps no run"
    );
    assert!(
        !dir.path().join("kinesync-state.db").exists(),
        "nor creates a state file"
    );
    // Nothing was committed: the real run still sends every row.
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("records acknowledged 3 of 3"), "{stdout}");
    // And a dry run after it finds nothing to send.
    let (_, stdout) = sync(&config, &["--dry-run"]);
    assert!(stdout.contains("0 records would be sent"), "{stdout}");
}

#[test]
fn a_dry_run_reads_a_state_file_of_the_older_schema_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    // Back to what schema version 1 held: integer keys as they are (fingerprints are the
    // same in both versions).
    let state = dir.path().join("kinesync-state.db");
    let conn = rusqlite::Connection::open(&state).unwrap();
    conn.execute_batch(
        "UPDATE rows SET key = substr(key, 2) WHERE unicode(key) < 32; PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);

    let (output, stdout) = sync(&config, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("0 records would be sent"),
        "the older file's keys are found: {stdout}"
    );
    let conn = rusqlite::Connection::open(&state).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let raw: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM rows WHERE unicode(key) >= 32",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((version, raw), (1, 3), "the dry run upgraded nothing");
    drop(conn);

    // A real run upgrades it, and still finds every key.
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("unchanged 3"), "{stdout}");
}

fn kinesync(config: &Path, args: &[&str]) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[test]
fn runs_lists_past_runs_and_shows_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let (_, stdout) = kinesync(&config, &["runs"]);
    assert!(stdout.starts_with("no runs yet"), "{stdout}");

    let (_, first) = sync(&config, &[]);
    let (_, second) = sync(&config, &["--debug-payloads"]);
    let id_of = |stdout: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("run "))
            .and_then(|rest| rest.split(':').next())
            .unwrap()
            .to_owned()
    };
    let (first_id, second_id) = (id_of(&first), id_of(&second));

    let (output, listed) = kinesync(&config, &["runs"]);
    assert_eq!(output.status.code(), Some(0));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with(&first_id) && lines[0].contains("complete"),
        "oldest first: {listed}"
    );
    assert!(
        lines[0].contains("added        3") && lines[1].contains("added        0"),
        "{listed}"
    );

    let (output, shown) = kinesync(&config, &["runs", "show", &first_id]);
    assert_eq!(output.status.code(), Some(0));
    // The stream's description, then the one PutRecords.
    assert!(shown.contains("2 API calls"), "{shown}");
    assert!(shown.contains("DescribeStreamSummary"), "{shown}");
    assert!(
        shown.contains("PutRecords                3 records") && shown.contains(" ok "),
        "{shown}"
    );
    assert!(
        !shown.contains("ada@example.com"),
        "no payloads unless asked: {shown}"
    );
    // Each of the stream's four shards: what it was sent, throttled, and its pace.
    assert!(shown.contains("shards:"), "{shown}");
    assert_eq!(
        shown.matches("paced at 1000 records/s").count(),
        4,
        "{shown}"
    );
    // The second run sent nothing: its one call described the stream.
    let (_, shown) = kinesync(&config, &["runs", "show", "latest"]);
    assert!(
        shown.contains(&second_id) && shown.contains("1 API call:"),
        "{shown}"
    );
    assert!(!shown.contains("PutRecords"), "{shown}");

    // An edit, sent with payloads in the debugger log.
    let model = std::fs::read_to_string(dir.path().join("users.ndjson")).unwrap();
    std::fs::write(
        dir.path().join("users.ndjson"),
        model.replace("ada@example.com", "ada@lovelace.example.com"),
    )
    .unwrap();
    let (_, third) = sync(&config, &["--debug-payloads"]);
    let (_, shown) = kinesync(&config, &["runs", "show", &id_of(&third)]);
    assert!(shown.contains("ada@lovelace.example.com"), "{shown}");

    let (output, _) = kinesync(&config, &["runs", "show", "1999"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no run \"1999\""));
}

#[test]
fn a_duplicate_primary_key_names_its_line_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let model = std::fs::read_to_string(dir.path().join("users.ndjson")).unwrap();
    let first = model.lines().next().unwrap().to_owned();
    std::fs::write(dir.path().join("users.ndjson"), format!("{model}{first}\n")).unwrap();
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line = model.lines().count() + 1;
    assert!(
        stdout.contains(&format!(
            "users.ndjson:{line}: primary key 1 (column \"id\") appears more than once in the model (first at line 1)"
        )),
        "{stdout}"
    );
}

#[test]
fn a_sqlite_model_and_typed_csv_sync_with_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("model.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, score REAL);
         INSERT INTO users VALUES (1, 'ada@example.com', 9.5), (2, 'grace@example.com', NULL);",
    )
    .unwrap();
    drop(conn);
    let template = r#"template = '{"id": {{ row.id }}, "score": {{ row.score | json }}, "int": {% if row.id == 1 %}true{% else %}false{% endif %}}'"#;
    let config = dir.path().join("sqlite.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\npath = \"model.db\"\nquery = \"SELECT id, email, score FROM users\"\nprimary_key = \"id\"\n[payload]\nmode = \"template\"\n{template}\n[destination]\nstream = \"s\"\nsimulated = {{ shards = 2 }}\n[sync]\nstate = \"sqlite-state.db\"\n"
        ),
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let (output, stdout) = sync(&config, &["--report", report.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("records acknowledged 2 of 2"), "{stdout}");

    // The same rows as CSV: strings unless typed. `row.id == 1` holds only for a typed id.
    std::fs::write(
        dir.path().join("model.csv"),
        "id,email,score\n1,ada@example.com,9.5\n2,grace@example.com,\n",
    )
    .unwrap();
    let config = dir.path().join("csv.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\npath = \"model.csv\"\nprimary_key = \"id\"\n[source.types]\nid = \"integer\"\nscore = \"float\"\n[payload]\nmode = \"template\"\n{template}\n[destination]\nstream = \"s\"\nsimulated = {{ shards = 2 }}\n[sync]\nstate = \"csv-state.db\"\n"
        ),
    )
    .unwrap();
    let (output, stdout) = kinesync(&config, &["preview"]);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["data"],
        serde_json::json!({"id": 1, "score": 9.5, "int": true})
    );
    assert_eq!(
        lines[1]["data"],
        serde_json::json!({"id": 2, "score": null, "int": false})
    );
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{stdout}");

    // A type that does not parse: that row is reported with its line, the others are sent.
    std::fs::write(
        dir.path().join("model.csv"),
        "id,email,score\n1,ada@example.com,9.5\n2,grace@example.com,high\n3,ken@example.com,1\n",
    )
    .unwrap();
    let (output, stdout) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("model.csv:3: column \"score\" is declared float, but holds \"high\""),
        "{stdout}"
    );
    assert!(stdout.contains("added 1"), "row 3 still went: {stdout}");
}

/// A simulated stream takes what a real one does, 1,000 records a second per shard after a
/// second's burst, so a quick start with many rows shows the real duration (`unlimited = true`
/// lifts the limits, for benchmarks).
#[test]
fn a_simulated_stream_enforces_the_shard_limits_unless_unlimited() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (1..=3000).map(|id| format!("{{\"id\":{id}}}\n")).collect();
    std::fs::write(dir.path().join("m.ndjson"), rows).unwrap();
    let config = dir.path().join("kinesync.toml");
    let write = |simulated: &str| {
        std::fs::write(
            &config,
            format!(
                "[source]\npath = \"m.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"row\"\n\
                 [destination]\nstream = \"s\"\nsimulated = {simulated}\n[sync]\nstate = \"{}\"\n",
                dir.path().join(format!("{}.db", simulated.len())).display()
            ),
        )
        .unwrap();
    };
    write("{ shards = 1 }");
    let started = std::time::Instant::now();
    let (output, text) = sync(&config, &[]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{text}");
    // 3,000 records into one shard: 1,000 at once, then 1,000 a second. (A lower bound: a
    // slow machine can only make it longer.)
    assert!(
        took >= std::time::Duration::from_secs(2),
        "{took:?}: {text}"
    );

    write("{ shards = 1, unlimited = true }");
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("acknowledged 3000 of 3000"), "{text}");
}

/// A dry run says how long sending would take at the stream's capacity, and which share of the
/// records the busiest shard has: a partition key that puts every row on one shard shows.
#[test]
fn a_dry_run_estimates_the_time_and_shows_a_hot_shard() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (1..=5000)
        .map(|id| format!("{{\"id\":{id},\"tenant\":\"acme\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("m.ndjson"), rows).unwrap();
    let config = dir.path().join("kinesync.toml");
    let write = |keys: &str| {
        std::fs::write(
            &config,
            format!(
                "[source]\npath = \"m.ndjson\"\nprimary_key = \"id\"\n[payload]\nmode = \"row\"\n{keys}\
                 [destination]\nstream = \"s\"\nsimulated = {{ shards = 2 }}\n"
            ),
        )
        .unwrap();
    };
    write("");
    let (output, text) = sync(&config, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let least = |text: &str| -> f64 {
        let (_, rest) = text.split_once("sending takes at least ").expect(text);
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    // About 2,500 records a shard: 1,000 at once, then 1,000 a second.
    assert!((1.3..=1.7).contains(&least(&text)), "{text}");
    assert!(!text.contains("sets the pace"), "{text}");

    // Every row keyed by one tenant: one shard has them all.
    write("[keys]\npartition_key = \"tenant\"\n");
    let (output, text) = sync(&config, &["--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("the busiest shard has 100% of the records and sets the pace"),
        "{text}"
    );
    assert!((3.9..=4.1).contains(&least(&text)), "{text}");
}

/// A share of each shard out of range is a configuration error that says what it may be.
#[test]
fn a_shard_share_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}shard_share = 1.5\n")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kinesync"))
        .args(["sync", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shard_share must be more than 0 and at most 1") && stderr.contains("1.5"),
        "{stderr}"
    );
}
