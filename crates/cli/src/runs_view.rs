//! How past runs look to a person: the list `kinesync runs` prints, and one run with every
//! call it made (`kinesync runs show ID`). The run history itself is the library's
//! (`kinesync::runs`); only its wording for a terminal lives here.

use kinesync::Error;
use kinesync::call_log::LoggedCall;
use kinesync::engine::Outcome;
use kinesync::runs::{RunDir, RunEntry};

/// The run and every call it made, for people: what `kinesync runs show ID` prints.
pub(crate) fn show_run(run: &RunDir) -> Result<String, Error> {
    let mut out = String::new();
    match run.report() {
        Some(report) => {
            push_line(
                &mut out,
                format!("run {} · stream {}", run.id, report.stream),
            );
            push_line(&mut out, report.summary());
            if !report.shards.is_empty() {
                push_line(&mut out, "shards:".to_owned());
            }
            // Aggregated, what a shard counts (and paces) is Kinesis records, not rows.
            let unit = if report.packing.is_some() {
                "Kinesis record"
            } else {
                "record"
            };
            for shard in &report.shards {
                push_line(
                    &mut out,
                    format!(
                        "  {}  {:>9} {unit} attempts  {:>7} throttled  paced at {:.0} {unit}s/s",
                        shard.shard, shard.attempts, shard.throttled, shard.paced_per_second
                    ),
                );
            }
            for error in &report.row_errors.first {
                push_line(
                    &mut out,
                    format!(
                        "  row error {} ({}): {}",
                        error.primary_key, error.kind, error.message
                    ),
                );
            }
        }
        None => match run.error() {
            Some(error) => push_line(
                &mut out,
                format!("run {} · stopped on an error: {}", run.id, error.trim_end()),
            ),
            None => push_line(
                &mut out,
                format!(
                    "run {} · interrupted: it has no report (killed or crashed); its calls so far:",
                    run.id
                ),
            ),
        },
    }
    let calls = run.calls()?;
    let noun = if calls.len() == 1 { "call" } else { "calls" };
    push_line(&mut out, format!("\n{} API {noun}:", calls.len()));
    for call in &calls {
        out.push_str(&describe_call(call));
        out.push('\n');
    }
    Ok(out)
}

/// One debugger-log line, readably: time, operation, records, bytes, status, duration,
/// per-record error codes, and for a failed call its code, request id and message.
fn describe_call(call: &LoggedCall) -> String {
    // Only the time of day: the run's date is in its id.
    let time = call.time.split('T').nth(1).unwrap_or(&call.time);
    let time = time.trim_end_matches('Z');
    let mut line = format!(
        "  {time}  {:<21}  {:>4} records  {:>9}  {:<16} {:>9.1} ms",
        call.operation,
        call.records,
        human_bytes(call.bytes as u64),
        call.status,
        call.duration_ms,
    );
    if !call.record_errors.is_empty() {
        let counted: Vec<String> = call
            .record_errors
            .iter()
            .map(|(code, n)| format!("{code} ×{n}"))
            .collect();
        line.push_str(&format!("  record errors: {}", counted.join(", ")));
    }
    if let Some(code) = &call.code {
        line.push_str(&format!("  {code}"));
    }
    if let Some(id) = &call.request_id {
        line.push_str(&format!("  request {id}"));
    }
    if let Some(message) = &call.message {
        line.push_str(&format!("\n      {message}"));
    }
    for payload in call.payloads.iter().flatten() {
        line.push_str(&format!("\n      {payload}"));
    }
    line
}

fn push_line(out: &mut String, text: String) {
    out.push_str(&text);
    out.push('\n');
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// A one-line description of a past run, for `kinesync runs`.
pub(crate) fn describe_entry(entry: &RunEntry) -> String {
    match &entry.report {
        Some(report) => {
            let outcome = match &report.outcome {
                Outcome::Complete => "complete",
                Outcome::Partial => "partial",
                Outcome::Failed { .. } => "failed",
                Outcome::Baseline => "baseline",
                Outcome::DryRun => "dry run",
                Outcome::RemovalsHeld { .. } => "held",
                Outcome::Interrupted => "interrupted",
            };
            format!(
                "{}  {:<9} rows {:>9}  added {:>8}  changed {:>8}  removed {:>8}  acknowledged {:>9}  pending {:>7}  errors {:>6}  calls {:>6}  {:>7.1} s",
                entry.run.id,
                outcome,
                report.rows_read,
                report.events.added,
                report.events.changed,
                report.events.removed,
                report.records.acknowledged,
                report.records.pending,
                report.row_errors.total,
                report.calls,
                report.duration_ms as f64 / 1000.0,
            )
        }
        None => match entry.run.error() {
            Some(error) => format!(
                "{}  failed    {}",
                entry.run.id,
                error.lines().next().unwrap_or_default()
            ),
            None => format!(
                "{}  interrupted (no report; {} calls logged)",
                entry.run.id,
                entry.run.call_count()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use kinesync::runs::Runs;

    use super::*;

    #[test]
    fn an_interrupted_run_shows_its_calls_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let run = Runs::new(dir.path()).start().unwrap();
        fs::write(
            run.calls_path(),
            concat!(
                r#"{"time":"2026-11-22T09:33:55.140Z","operation":"PutRecords","stream":"s","attempt":1,"records":500,"bytes":51200,"status":"ok","duration_ms":12.5,"record_errors":{"ProvisionedThroughputExceededException":3}}"#,
                "\n",
                r#"{"time":"2026-11-22T09:33:55.300Z","operation":"PutRecords","stream":"s","attempt":2,"records":3,"bytes":300,"status":"access_denied","code":"AccessDeniedException","request_id":"req-1","duration_ms":4.0,"message":"not allowed"}"#,
                "\n",
                r#"{"time":"2026-11-22T09:33:5"#,
            ),
        )
        .unwrap();
        let text = show_run(&run).unwrap();
        assert!(text.contains("interrupted"), "{text}");
        assert!(text.contains("2 API calls"), "{text}");
        // Lines of older kinesync versions (with an `attempt`) read as they are.
        assert!(text.contains("09:33:55.140  PutRecords "), "{text}");
        assert!(text.contains(" 500 records   50.0 KiB  ok "), "{text}");
        assert!(
            text.contains("record errors: ProvisionedThroughputExceededException ×3"),
            "{text}"
        );
        assert!(
            text.contains("access_denied") && text.contains("AccessDeniedException  request req-1"),
            "{text}"
        );
        assert!(text.contains("not allowed"), "{text}");
    }
}
