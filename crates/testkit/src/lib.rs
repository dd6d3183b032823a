//! Test-only helpers shared by kinesync's crates: local servers (kinesalite, moto, a
//! fault-injecting Kinesis endpoint) and a probe that reads streams back; where the fixtures
//! are; the reference benchmark rows. Never a dependency of a shipped crate.

use std::path::PathBuf;

pub mod fake_kinesis;
pub mod probe;
pub mod servers;

/// The repository's `fixtures/` directory (an absolute path without `..`).
pub fn fixtures_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"));
    dir.canonicalize().unwrap_or(dir)
}

/// `text` with the fixtures directory's absolute path written as `fixtures`, so that
/// messages naming fixture files read the same on every machine.
pub fn machine_independent(text: &str) -> String {
    text.replace(&fixtures_dir().display().to_string(), "fixtures")
}

/// A file under `fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    fixtures_dir().join(relative)
}

/// One reference benchmark row, typed: row `i` of the shared benchmark's `gen_rows.py`.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Primary key, `i + 1`.
    pub id: i64,
    /// First name.
    pub first_name: &'static str,
    /// Last name.
    pub last_name: &'static str,
    /// Email.
    pub email: String,
    /// Age.
    pub age: i64,
    /// Three tags.
    pub tags: [&'static str; 3],
    /// RFC 3339 time.
    pub created_at: String,
    /// Country code.
    pub country: &'static str,
    /// Plan.
    pub plan: &'static str,
    /// Score.
    pub score: f64,
    /// Active flag.
    pub active: bool,
}

/// The reference rows' column names, in order.
pub const BENCH_COLUMNS: [&str; 11] = [
    "id",
    "first_name",
    "last_name",
    "email",
    "age",
    "tags",
    "created_at",
    "country",
    "plan",
    "score",
    "active",
];

/// Row `i` of the reference benchmark rows.
pub fn bench_row(i: usize) -> BenchRow {
    const FIRST: [&str; 10] = [
        "Ada", "Grace", "Alan", "Linus", "Barbara", "Edsger", "Margaret", "Dennis", "Frances",
        "Ken",
    ];
    const LAST: [&str; 10] = [
        "Lovelace", "Hopper", "Turing", "Torvalds", "Liskov", "Dijkstra", "Hamilton", "Ritchie",
        "Allen", "Thompson",
    ];
    const TAGS: [&str; 8] = [
        "vip",
        "beta",
        "churn-risk",
        "newsletter",
        "trial",
        "enterprise",
        "mobile",
        "web",
    ];
    const COUNTRIES: [&str; 5] = ["US", "DE", "FR", "JP", "BR"];
    const PLANS: [&str; 3] = ["free", "pro", "team"];
    let first = i % 10;
    let last = (i * 7 + i / 10) % 10;
    // `{first}.{last}{i}@example.com` in lower case, built without `format!`: the engine
    // benchmark generates a million of these, and should measure the engine, not `fmt`.
    let mut email = String::with_capacity(40);
    email.extend(FIRST[first].chars().map(|c| c.to_ascii_lowercase()));
    email.push('.');
    email.extend(LAST[last].chars().map(|c| c.to_ascii_lowercase()));
    email.push_str(itoa::Buffer::new().format(i));
    email.push_str("@example.com");
    BenchRow {
        id: i as i64 + 1,
        first_name: FIRST[first],
        last_name: LAST[last],
        email,
        age: 13 + ((i * 31) % 60) as i64,
        tags: [TAGS[i % 8], TAGS[(i + 3) % 8], TAGS[(i + 5) % 8]],
        created_at: rfc3339(1_704_067_200 + 37 * i as i64),
        country: COUNTRIES[i % 5],
        plan: PLANS[i % 3],
        score: (i % 997) as f64 + 0.5,
        active: !i.is_multiple_of(3),
    }
}

/// The reference benchmark rows as NDJSON lines, row `i` for `i` in `0..n`.
///
/// The same rows, byte for byte, as the shared benchmark's `gen_rows.py` writes (deterministic
/// user rows: id, names, email, age, three tags, an RFC 3339 time, country, plan, score,
/// active), so figures measured here compare with the engines measured on those rows.
pub fn bench_rows(n: usize) -> impl Iterator<Item = String> {
    bench_rows_changed(n, 0)
}

/// [`bench_rows`] as they are after `generation` edits: each edit raises the score of every
/// 100th row (1% of them) by one, so a sync of generation 1 after generation 0 finds 1% changed.
pub fn bench_rows_changed(n: usize, generation: u64) -> impl Iterator<Item = String> {
    (0..n).map(move |i| {
        let mut r = bench_row(i);
        if i.is_multiple_of(100) {
            r.score += generation as f64;
        }
        format!(
            concat!(
                r#"{{"id":{},"first_name":"{}","last_name":"{}","email":"{}","#,
                r#""age":{},"tags":["{}","{}","{}"],"created_at":"{}","country":"{}","plan":"{}","#,
                r#""score":{:.1},"active":{}}}"#
            ),
            r.id,
            r.first_name,
            r.last_name,
            r.email,
            r.age,
            r.tags[0],
            r.tags[1],
            r.tags[2],
            r.created_at,
            r.country,
            r.plan,
            r.score,
            r.active,
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (proleptic Gregorian, UTC).
pub fn rfc3339(epoch_seconds: i64) -> String {
    let days = epoch_seconds.div_euclid(86_400);
    let secs = epoch_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // Digit by digit rather than `format!`, for the same reason as the email above; four
    // digits of year, which is all the reference rows need.
    assert!((0..=9999).contains(&y), "year {y} is outside 0..=9999");
    let mut out = String::with_capacity(20);
    let mut push = |value: i64, digits: u32, then: char| {
        for place in (0..digits).rev() {
            out.push(char::from(b'0' + (value / 10_i64.pow(place) % 10) as u8));
        }
        out.push(then);
    };
    push(y, 4, '-');
    push(i64::from(m), 2, '-');
    push(i64::from(d), 2, 'T');
    push(secs / 3600, 2, ':');
    push(secs / 60 % 60, 2, ':');
    push(secs % 60, 2, 'Z');
    out
}

/// Calendar date of a day count since 1970-01-01, by the era method (400-year cycles).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cross_month_year_and_leap_day() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn first_rows_are_the_reference_rows() {
        let first = bench_rows(1).next().unwrap();
        assert_eq!(
            first,
            r#"{"id":1,"first_name":"Ada","last_name":"Lovelace","email":"ada.lovelace0@example.com","age":13,"tags":["vip","newsletter","enterprise"],"created_at":"2024-01-01T00:00:00Z","country":"US","plan":"free","score":0.5,"active":false}"#
        );
        // Line 123,457 of `gen_rows.py 200000`, as that script wrote it.
        assert_eq!(
            bench_rows(123_457).last().unwrap(),
            r#"{"id":123457,"first_name":"Margaret","last_name":"Ritchie","email":"margaret.ritchie123456@example.com","age":49,"tags":["vip","newsletter","enterprise"],"created_at":"2024-02-22T20:51:12Z","country":"DE","plan":"free","score":825.5,"active":false}"#
        );
    }
}
