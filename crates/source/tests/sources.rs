//! Every model source as a user meets it: types as the template will see them, and each bad
//! input named by file, line (or query row) and column.

use kinesync_payload::Value;
use kinesync_source::{ColumnType, SourceError, SourceRow, SourceSpec, open};

fn read_all(spec: &SourceSpec) -> Vec<Result<SourceRow, SourceError>> {
    open(spec).unwrap().collect()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn csv_columns_take_their_declared_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "users.csv",
        "id,age,score,active,attributes,note\n1,36,9.5,true,\"{\"\"plan\"\":\"\"pro\"\"}\",x\n2,,, NO ,\"[1,2]\",\n",
    );
    let spec = SourceSpec::new(&path, "id")
        .with_type("id", ColumnType::Integer)
        .with_type("age", ColumnType::Integer)
        .with_type("score", ColumnType::Float)
        .with_type("active", ColumnType::Boolean)
        .with_type("attributes", ColumnType::Json);
    let rows: Vec<SourceRow> = read_all(&spec).into_iter().map(Result::unwrap).collect();
    let first = rows[0].row.values();
    assert_eq!(first[0], Value::Int(1));
    assert_eq!(first[1], Value::Int(36));
    assert_eq!(first[2], Value::Float(9.5));
    assert_eq!(first[3], Value::Bool(true));
    assert_eq!(first[4].to_json_string(), r#"{"plan":"pro"}"#);
    assert_eq!(
        first[5],
        Value::from("x"),
        "undeclared columns stay strings"
    );
    let second = rows[1].row.values();
    assert_eq!(
        &second[1..4],
        [Value::Null, Value::Null, Value::Bool(false)],
        "an empty typed field is null; booleans ignore case and spaces"
    );
    assert_eq!(
        second[5],
        Value::from(""),
        "an empty string column stays a string"
    );
}

#[test]
fn a_value_that_does_not_parse_as_its_type_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "users.csv", "id,age\n1,36\n2,thirty\n3,40\n");
    let spec = SourceSpec::new(&path, "id").with_type("age", ColumnType::Integer);
    let results = read_all(&spec);
    assert!(results[0].is_ok() && results[2].is_ok(), "the run goes on");
    let err = results[1].as_ref().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:3: column \"age\" is declared integer, but holds \"thirty\"",
            path.display()
        )
    );
}

#[test]
fn a_type_for_a_column_the_model_lacks_is_refused_with_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "users.csv", "id,age\n1,36\n");
    let err = open(&SourceSpec::new(&path, "id").with_type("agee", ColumnType::Integer))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("column \"agee\"") && err.contains("its columns: id, age"),
        "{err}"
    );
}

#[test]
fn an_unknown_primary_key_column_is_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "users.csv", "user_id,age\n1,36\n");
    let err = open(&SourceSpec::new(&path, "userid"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&path.display().to_string())
            && err.contains("primary key \"userid\"")
            && err.contains("did you mean \"user_id\""),
        "{err}"
    );
}

#[test]
fn a_null_primary_key_is_a_row_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let ndjson = write(
        &dir,
        "users.ndjson",
        "{\"id\":1,\"name\":\"ada\"}\n{\"id\":null}\n{\"name\":\"no id\"}\n{\"id\":4}\n",
    );
    let results = read_all(&SourceSpec::new(&ndjson, "id"));
    assert_eq!(results.len(), 4);
    for (index, line) in [(1, 2), (2, 3)] {
        let err = results[index].as_ref().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:{line}: the primary key (column \"id\") is null; every row needs a primary key",
                ndjson.display()
            )
        );
    }
    assert!(results[3].is_ok());

    let csv = write(&dir, "users.csv", "name,id\nada,1\ngrace,\n");
    let results = read_all(&SourceSpec::new(&csv, "id").with_type("id", ColumnType::Integer));
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:3: the primary key (column \"id\")",
            csv.display()
        )),
        "{err}"
    );
}

fn sqlite_model(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("model.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, score REAL, avatar BLOB, plan TEXT);
         INSERT INTO users VALUES (1, 'ada@example.com', 9.5, NULL, 'pro');
         INSERT INTO users VALUES (2, 'grace@example.com', NULL, NULL, NULL);
         INSERT INTO users VALUES (3, 'ken@example.com', 1.0, x'00ff', 'free');",
    )
    .unwrap();
    path
}

#[test]
fn sqlite_rows_keep_sqlite_types_in_query_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_model(&dir);
    let spec = SourceSpec::new(&path, "id")
        .with_query("SELECT id, email, score, plan FROM users ORDER BY id DESC");
    let source = open(&spec).unwrap();
    assert_eq!(source.schema().columns(), ["id", "email", "score", "plan"]);
    let rows: Vec<SourceRow> = source.map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0].row.values(),
        [
            Value::Int(3),
            Value::from("ken@example.com"),
            Value::Float(1.0),
            Value::from("free")
        ]
    );
    assert_eq!(rows[1].row.values()[2], Value::Null);
    assert_eq!(
        rows.iter().map(|r| r.line).collect::<Vec<_>>(),
        [1, 2, 3],
        "rows are numbered in the query's order"
    );
}

#[test]
fn sqlite_errors_say_which_database_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_model(&dir);
    // A BLOB has no JSON form: that row is an error, the others go on.
    let results = read_all(&SourceSpec::new(&path, "id").with_query("SELECT * FROM users"));
    assert!(results[0].is_ok() && results[1].is_ok());
    let err = results[2].as_ref().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}, query row 3: column \"avatar\" holds a BLOB",
            path.display()
        )) && err.contains("hex(avatar)"),
        "{err}"
    );
    // A null key from a query.
    let results =
        read_all(&SourceSpec::new(&path, "plan").with_query("SELECT plan, email FROM users"));
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}, query row 2: the primary key (column \"plan\") is null",
            path.display()
        )),
        "{err}"
    );
    // A query that does not prepare, a key the query does not select, no query, no file.
    let err = open(&SourceSpec::new(&path, "id").with_query("SELECT * FROM userz"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("the query does not prepare") && err.contains("no such table: userz"),
        "{err}"
    );
    let err = open(&SourceSpec::new(&path, "id").with_query("SELECT email FROM users"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("primary key \"id\" is not a column"), "{err}");
    let err = open(&SourceSpec::new(&path, "id"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("needs a query"), "{err}");
    let err = open(&SourceSpec::new(dir.path().join("missing.db"), "id").with_query("SELECT 1"))
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::Open { .. }), "{err}");
}

#[test]
fn a_sqlite_model_is_opened_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = sqlite_model(&dir);
    let results =
        read_all(&SourceSpec::new(&path, "id").with_query("DELETE FROM users RETURNING id"));
    assert!(results[0].is_err(), "a query that writes is refused");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 3);
}
