//! The Postgres source against a real PostgreSQL server on loopback (started by the test kit):
//! every mapped type comes out exactly, rows stream (the server done before they are read), and every failure names its
//! place without the password.

use kinesync_payload::Value;
use kinesync_source::{Connection, PostgresSource, PostgresSpec, RowSource, SourceError};
use kinesync_testkit::postgres::{PASSWORD, postgres};

fn spec(database: &str, query: &str) -> PostgresSpec {
    PostgresSpec::new(Connection::new(postgres().url(database)), query, "id")
}

/// `query`'s rows in `database`, read by a connection named `application` (to find it in
/// `pg_stat_activity`).
fn named_spec(database: &str, query: &str, application: &str) -> PostgresSpec {
    let url = format!(
        "{}&application_name={application}",
        postgres().url(database)
    );
    PostgresSpec::new(Connection::new(url), query, "id")
}

fn read_all(spec: &PostgresSpec) -> Vec<Vec<Value>> {
    PostgresSource::open(spec)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|row| row.unwrap_or_else(|e| panic!("{e}")).row.values().to_vec())
        .collect()
}

fn open_error(spec: &PostgresSpec) -> String {
    let error = PostgresSource::open(spec)
        .expect_err("opening fails")
        .to_string();
    assert!(!error.contains(PASSWORD), "the password leaked: {error}");
    error
}

#[test]
fn every_mapped_type_comes_out_exactly() {
    let pg = postgres();
    let db = pg.new_database("types");
    pg.psql(
        &db,
        r#"CREATE TABLE t (
            id int8 PRIMARY KEY, small int2, medium int4,
            big_id numeric(38,0), amount numeric(12,2), ratio float8, single float4,
            flag bool, name text, code varchar(8), padded char(4),
            doc jsonb, raw json, uid uuid, day date, at timestamp, at_tz timestamptz,
            ints int4[], words text[], "Odd ""Name""" text
        );
        INSERT INTO t VALUES (
            9223372036854775807, -32768, 2147483647,
            12345678901234567890123456789012345678, 12.50, 0.1, 1.5,
            true, 'quote " tab	newline
end', 'abc', 'ab',
            '{"n": 123456789012345678901234567890, "f": 1.25, "s": "x"}', '[1, "two"]',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2026-11-30', '2026-11-30 21:04:19.5',
            '2026-11-30 23:04:19+02', '{1,NULL,3}', '{"a b","c"}', 'odd'
        ), (2, NULL, NULL, -5, -0.01, -2.5e-300, NULL, false, '', NULL, NULL, 'null', NULL,
            NULL, NULL, NULL, NULL, '{}', NULL, NULL);"#,
    );
    let rows = read_all(&spec(&db, "SELECT * FROM t ORDER BY id DESC"));
    assert_eq!(rows.len(), 2);
    let json = |text: &str| Value::from_json_exact(text).unwrap();
    assert_eq!(
        rows[0],
        vec![
            Value::Int(i64::MAX),
            Value::Int(-32768),
            Value::Int(2147483647),
            json("12345678901234567890123456789012345678"),
            Value::Float(12.5),
            Value::Float(0.1),
            Value::Float(1.5),
            Value::Bool(true),
            Value::from("quote \" tab\tnewline\nend"),
            Value::from("abc"),
            Value::from("ab  "),
            json(r#"{"f": 1.25, "n": 123456789012345678901234567890, "s": "x"}"#),
            json(r#"[1, "two"]"#),
            Value::from("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Value::from("2026-11-30"),
            Value::from("2026-11-30T21:04:19.5"),
            Value::from("2026-11-30T21:04:19+00:00"),
            json("[1, null, 3]"),
            json(r#"["a b", "c"]"#),
            Value::from("odd"),
        ]
    );
    assert!(matches!(rows[0][3], Value::Decimal(_)), "{:?}", rows[0][3]);
    assert_eq!(
        rows[1],
        vec![
            Value::Int(2),
            Value::Null,
            Value::Null,
            Value::Int(-5),
            Value::Float(-0.01),
            Value::Float(-2.5e-300),
            Value::Null,
            Value::Bool(false),
            Value::from(""),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            json("[]"),
            Value::Null,
            Value::Null,
        ]
    );
    let source = PostgresSource::open(&spec(&db, "SELECT * FROM t")).unwrap();
    assert_eq!(source.schema().columns()[19], "Odd \"Name\"");
}

#[test]
fn numerics_come_out_digit_for_digit_whatever_their_precision() {
    let pg = postgres();
    let db = pg.new_database("numeric_fraction");
    let rows = read_all(&spec(
        &db,
        "SELECT * FROM (VALUES (1, 12345678901234567890.01::numeric), (2, 0.25::numeric), (3, -0.000000000000000000000000000001::numeric), (4, 'NaN'::numeric)) AS v(id, amount) WHERE id < 4",
    ));
    assert_eq!(rows[0][1], Value::Decimal("12345678901234567890.01".into()));
    assert_eq!(rows[0][1].to_json_string(), "12345678901234567890.01");
    assert_eq!(rows[1][1], Value::Float(0.25));
    assert_eq!(rows[2][1], Value::Float(-1e-30));
    let nan: Vec<_> = PostgresSource::open(&spec(&db, "SELECT 1 AS id, 'NaN'::numeric AS amount"))
        .unwrap()
        .collect();
    let error = nan[0].as_ref().unwrap_err().to_string();
    assert!(error.contains("not a finite number"), "{error}");
}

/// Waits, in the server, until `condition` (SQL) holds, a minute at most.
fn wait_until(database: &str, condition: &str) {
    postgres().psql(
        database,
        &format!(
            "DO $$ DECLARE deadline timestamptz := clock_timestamp() + interval '60 s'; BEGIN
               WHILE NOT ({condition}) LOOP
                 IF clock_timestamp() > deadline THEN
                   RAISE EXCEPTION 'still not: %', $c${condition}$c$;
                 END IF;
                 PERFORM pg_sleep(0.05);
                 -- A transaction sees one snapshot of the activity unless it asks again.
                 PERFORM pg_stat_clear_snapshot();
               END LOOP;
             END $$"
        ),
    );
}

/// Whether no connection named `application` is in a statement or a transaction.
fn idle(application: &str) -> String {
    format!(
        "NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = '{application}' AND state <> 'idle')"
    )
}

#[test]
fn the_server_is_done_before_the_rows_are_read_and_they_come_in_query_order() {
    let pg = postgres();
    let db = pg.new_database("stream");
    // About 40 MB of rows: more than the spool keeps in memory, so most wait in its file.
    let n = 200_000;
    let query = format!(
        "SELECT g AS id, repeat('x', 200) || g AS name FROM generate_series(1, {n}) AS g ORDER BY g"
    );
    let spec = named_spec(&db, &query, "kinesync-drain");
    let mut source = PostgresSource::open(&spec).unwrap();
    let first = source.next().unwrap().unwrap();
    assert_eq!(first.row.values()[0], Value::Int(1));
    // The statement and its snapshot end while the sync has read one row: the server is not
    // kept waiting (and holding back vacuum) for as long as the stream takes.
    wait_until(&db, &idle("kinesync-drain"));
    let mut expected = 1;
    for row in source.by_ref() {
        let row = row.unwrap();
        expected += 1;
        assert_eq!(row.line, expected as u64);
        assert_eq!(row.row.values()[0], Value::Int(expected));
        assert_eq!(
            row.row.values()[1],
            Value::String(format!("{}{expected}", "x".repeat(200)))
        );
    }
    assert_eq!(expected, n);
}

#[test]
fn a_type_kinesync_does_not_map_is_refused_before_any_row_with_the_cast_to_write() {
    let pg = postgres();
    let db = pg.new_database("unmapped");
    let error = open_error(&spec(
        &db,
        "SELECT 1 AS id, interval '1 day' AS wait, '\\x00'::bytea AS blob",
    ));
    assert!(
        error.contains(r#"column "wait" is of type interval"#),
        "{error}"
    );
    assert!(error.contains(r#""wait"::text"#), "{error}");
    assert!(
        error.contains(r#"column "blob" is of type bytea"#),
        "{error}"
    );
}

#[test]
fn query_errors_point_into_the_query() {
    let pg = postgres();
    let db = pg.new_database("query_errors");
    let error = open_error(&spec(&db, "SELECT id,\n  email FROM no_such_table"));
    assert!(
        error.contains("query line 2, column 14: relation \"no_such_table\" does not exist"),
        "{error}"
    );
    pg.psql(&db, "CREATE TABLE users (id int PRIMARY KEY, email text)");
    let error = open_error(&spec(&db, "SELECT id, emial FROM users"));
    assert!(error.contains("query line 1, column 12"), "{error}");
    assert!(error.contains("emial"), "{error}");
    // A primary key the query does not return.
    let error = open_error(&PostgresSpec::new(
        Connection::new(pg.url(&db)),
        "SELECT email FROM users",
        "id",
    ));
    assert!(error.contains("id"), "{error}");
}

#[test]
fn connection_errors_name_the_place_and_never_the_password() {
    let pg = postgres();
    // Nothing listens on this port: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = open_error(&PostgresSpec::new(
        Connection::new(format!(
            "postgres://kinesync:{PASSWORD}@127.0.0.1:{port}/postgres"
        )),
        "SELECT 1 AS id",
        "id",
    ));
    assert!(
        refused.contains(&format!("postgres://kinesync@127.0.0.1:{port}/postgres"))
            && refused.contains("connection refused"),
        "{refused}"
    );
    let wrong = open_error(&PostgresSpec::new(
        Connection::new(pg.url_as("kinesync", &format!("not-{PASSWORD}"), "postgres")),
        "SELECT 1 AS id",
        "id",
    ));
    assert!(
        wrong.contains(r#"authentication failed for user "kinesync""#),
        "{wrong}"
    );
    assert!(!wrong.contains("not-"), "{wrong}");
    // Debug output of the settings shows no password either.
    let spec = spec("postgres", "SELECT 1 AS id");
    assert!(!format!("{spec:?}").contains(PASSWORD));
}

#[test]
fn a_statement_timeout_stops_a_slow_query_and_says_so() {
    let pg = postgres();
    let db = pg.new_database("timeout");
    let mut slow = spec(&db, "SELECT 1 AS id, pg_sleep(5)::text AS slept");
    slow.statement_timeout = Some(std::time::Duration::from_millis(200));
    // Opening prepares the query; it runs once opened, and its error comes as the first row.
    let mut source = PostgresSource::open(&slow).unwrap_or_else(|e| panic!("{e}"));
    let error = source.next().expect("an item").expect_err("the timeout");
    let text = error.to_string();
    assert!(text.contains("statement timeout"), "{text}");
    assert!(source.next().is_none(), "nothing more after the error");
}

#[test]
fn a_read_given_up_stops_the_servers_statement() {
    let pg = postgres();
    let db = pg.new_database("given_up");
    // A statement that takes three minutes (a minute a row: the sleep is per row).
    let spec = named_spec(
        &db,
        "SELECT g AS id FROM generate_series(1, 3) AS g WHERE (SELECT true FROM pg_sleep(60 + 0 * g))",
        "kinesync-given-up",
    );
    let source = PostgresSource::open(&spec).unwrap();
    wait_until(
        &db,
        "EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'kinesync-given-up' AND state = 'active')",
    );
    drop(source);
    // Stopped well within the minute the wait allows, not minutes later.
    wait_until(&db, &idle("kinesync-given-up"));
}

#[test]
fn a_connection_lost_mid_read_ends_the_rows_with_its_error() {
    let pg = postgres();
    let db = pg.new_database("lost");
    // The last row keeps the statement running, so that the connection is lost mid-read.
    let spec = named_spec(
        &db,
        "SELECT g AS id, CASE WHEN g = 100000 THEN pg_sleep(60)::text END AS slept
         FROM generate_series(1, 100000) AS g",
        "kinesync-lost",
    );
    let mut source = PostgresSource::open(&spec).unwrap();
    let first = source.next().unwrap().unwrap();
    assert_eq!(first.row.values()[0], Value::Int(1));
    pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kinesync-lost'",
    );
    // The rows that came before are read, in order; then the rows end with the error, never
    // silently.
    let mut read = 1;
    let error = loop {
        match source.next() {
            Some(Ok(row)) => {
                read += 1;
                assert_eq!(row.row.values()[0], Value::Int(read));
            }
            Some(Err(e)) => break e,
            None => panic!("the rows ended without an error after {read}"),
        }
    };
    assert!(read < 100_000, "{read} rows before the error");
    assert!(matches!(error, SourceError::Postgres { .. }), "{error}");
    assert!(source.next().is_none());
}

#[test]
fn a_null_primary_key_is_that_rows_error_and_the_rest_go_on() {
    let pg = postgres();
    let db = pg.new_database("null_key");
    let rows: Vec<_> = PostgresSource::open(&spec(
        &db,
        "SELECT * FROM (VALUES (1, 'a'), (NULL, 'b'), (3, 'c')) AS v(id, name)",
    ))
    .unwrap()
    .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].is_ok() && rows[2].is_ok());
    let error = rows[1].as_ref().unwrap_err().to_string();
    assert!(
        error.contains("query row 2") && error.contains("primary key"),
        "{error}"
    );
}

/// Whether the source's own connection uses TLS, as the server sees it.
fn uses_tls(url: String) -> Result<Value, String> {
    let spec = PostgresSpec::new(
        Connection::new(url),
        "SELECT 1 AS id, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        "id",
    );
    let mut source = PostgresSource::open(&spec).map_err(|e| e.to_string())?;
    let row = source.next().unwrap().unwrap();
    Ok(row.row.values()[1].clone())
}

#[test]
fn tls_verifies_the_server_against_the_roots_given() {
    let pg = postgres();
    // Trusting the server's CA (sslrootcert): TLS, verified.
    assert_eq!(uses_tls(pg.url("postgres")), Ok(Value::Bool(true)));
    // libpq's verify-full is taken, and verifies the same way.
    assert_eq!(
        uses_tls(format!("{}&sslmode=verify-full", pg.url("postgres"))),
        Ok(Value::Bool(true))
    );
    // The CA unknown (the system's roots do not hold it): refused, saying what to give.
    let untrusted = format!(
        "postgres://kinesync:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port()
    );
    let error = uses_tls(untrusted.clone()).unwrap_err();
    assert!(
        error.contains("sslrootcert") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");
    // Without TLS, on purpose.
    assert_eq!(
        uses_tls(format!("{untrusted}?sslmode=disable")),
        Ok(Value::Bool(false))
    );
    // A root file that is not there says so.
    let error = uses_tls(format!("{untrusted}?sslrootcert=/nonexistent/ca.pem")).unwrap_err();
    assert!(
        error.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{error}"
    );
}

#[test]
fn a_fingerprint_changes_with_the_message_not_with_the_type_alone() {
    let pg = postgres();
    let db = pg.new_database("fingerprints");
    let fingerprint = |query: &str| {
        let mut source = PostgresSource::open(&spec(&db, query)).unwrap();
        let row = source.next().unwrap().unwrap();
        row.fingerprint.expect("the server fingerprints every row")
    };
    let int4 = fingerprint("SELECT 7::int4 AS id, 'a'::varchar AS name");
    // Read the same way, the same message: the same fingerprint.
    assert_eq!(int4, fingerprint("SELECT 7::int8 AS id, 'a'::text AS name"));
    // Another message: 7 as a string, another value, another column name.
    assert_ne!(int4, fingerprint("SELECT 7::text AS id, 'a'::text AS name"));
    assert_ne!(int4, fingerprint("SELECT 7::int4 AS id, 'b'::text AS name"));
    assert_ne!(
        int4,
        fingerprint("SELECT 7::int4 AS id, 'a'::text AS label")
    );
}

/// A role's or database's own settings (a DBA's time zone, date style or float digits) change
/// how the server writes a row as text, which the fingerprint hashes; the source sets its own
/// session, so the same rows keep the same fingerprints and nothing is sent again.
#[test]
fn a_fingerprint_does_not_change_with_the_servers_settings() {
    let pg = postgres();
    let query = "SELECT 1 AS id, timestamptz '2026-12-01 10:00:00.5+00' AS at, \
                 date '2026-12-01' AS day, 0.1::float8 + 0.2::float8 AS score, 12.50::numeric AS amount";
    let read = |database: &str| {
        let mut source = PostgresSource::open(&spec(database, query)).unwrap();
        let row = source.next().unwrap().unwrap();
        (row.row.values().to_vec(), row.fingerprint)
    };
    let plain = pg.new_database("fingerprints_plain");
    let tuned = pg.new_database("fingerprints_tuned");
    pg.psql(
        "postgres",
        "ALTER DATABASE fingerprints_tuned SET TimeZone = 'Asia/Tokyo'; \
         ALTER DATABASE fingerprints_tuned SET DateStyle = 'SQL, DMY'; \
         ALTER DATABASE fingerprints_tuned SET extra_float_digits = 0",
    );
    assert_eq!(
        pg.psql(&tuned, "SELECT now()::date::text LIKE '%/%'")
            .trim(),
        "t",
        "the database's own date style is in force"
    );
    assert_eq!(read(&plain), read(&tuned));
}
