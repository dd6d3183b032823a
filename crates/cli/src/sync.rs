//! `kinesync sync` (one run, with its progress shown and its report and calls kept) and
//! `kinesync runs` (past runs).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kinesync::engine::{Interrupt, Outcome, Progress, ProgressSnapshot};
use kinesync::runs::Runs;

use crate::runs_view::{describe_entry, show_run};
use kinesync::{Config, Error, RunOptions};
use tracing_subscriber::EnvFilter;

use crate::RunsCommand;

/// Waits for SIGINT or SIGTERM: the first asks the run to stop cleanly (no new row, no new
/// call; the calls in flight finish and are committed, the report says interrupted), and
/// notes the exit code it calls for; a second one ends the process at once.
async fn watch_signals(interrupt: Interrupt, exit_code: Arc<AtomicU8>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        exit_code.store(code, Ordering::SeqCst);
        interrupt.interrupt();
        tracing::warn!(
            "stopping: no new rows or calls; the calls in flight finish and are committed (a second signal stops at once)"
        );
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(i32::from(code));
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            exit_code.store(130, Ordering::SeqCst);
            interrupt.interrupt();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    }
}

/// How many past runs are kept when `[sync] keep_runs` is not set.
const DEFAULT_KEEP_RUNS: usize = 50;

/// How `kinesync sync` runs, beyond its config.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncFlags {
    /// Do everything but send and commit: read the model, find the changes, build every
    /// record, and say what would be sent (per shard).
    #[arg(long)]
    dry_run: bool,
    /// Also keep the messages sent in the run's debugger log (`kinesync runs show`). Off by
    /// default: messages are your customers' data.
    #[arg(long)]
    debug_payloads: bool,
    /// Send this run's removals however many they are. A run whose model lacks more of the
    /// rows last sent than `[sync] max_removed_share` allows (half, by default) sends no
    /// removal and exits 1; this says the model really lost them.
    #[arg(long)]
    allow_removals: bool,
    /// Send every row of the model again, unchanged ones too (as `changed`, with the version
    /// last sent as `previous`): after the payload, keys or stream changed, so that consumers
    /// get every row in its new form. Removed rows are sent as on any run.
    #[arg(long)]
    resync: bool,
}

/// Finds out before anything is sent that the report can be written where `--report` says: a
/// run that sends its records and then cannot keep its report would exit 1 after the work was
/// done. A file this creates to find out is removed again.
fn check_writable(path: &Path) -> Result<(), Error> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Io {
            what: "write the report (checked before the run, so nothing was sent)",
            path: path.to_owned(),
            source,
        })?;
    if !existed {
        std::fs::remove_file(path).ok();
    }
    Ok(())
}

/// One sync run from `config_path`.
pub(crate) fn run(
    config_path: &Path,
    report_path: Option<&Path>,
    flags: SyncFlags,
) -> Result<ExitCode, Error> {
    let SyncFlags {
        dry_run,
        debug_payloads,
        allow_removals,
        resync,
    } = flags;
    let terminal = std::io::stderr().is_terminal();
    init_tracing(terminal);
    let config = Config::from_file(config_path)?;
    if let Some(path) = report_path {
        check_writable(path)?;
    }
    let runs = Runs::new(config.runs_dir());
    // A dry run sends nothing, so it has no calls to keep.
    let run_dir = if dry_run { None } else { Some(runs.start()?) };
    let call_log = run_dir
        .as_ref()
        .map(|run| run.call_log(debug_payloads).map(Arc::new))
        .transpose()?;
    let progress = Arc::new(Progress::new());
    let display = ProgressDisplay::start(progress.clone(), terminal);
    let runtime = crate::runtime();
    let interrupt = Interrupt::new();
    let signal = Arc::new(AtomicU8::new(0));
    let watcher = runtime.spawn(watch_signals(interrupt.clone(), signal.clone()));
    let result = runtime.block_on(kinesync::run_config(
        &config,
        RunOptions {
            dry_run,
            call_log,
            run_id: run_dir.as_ref().map(|run| run.id.clone()),
            allow_removals,
            resync,
            message_excerpts: debug_payloads,
            interrupt: Some(interrupt),
            progress: Some(progress),
        },
    ));
    watcher.abort();
    display.finish();
    let (report, destination) = match result {
        Ok(done) => done,
        Err(e) => {
            // The run is kept with why it stopped and the calls it made, even when it stopped
            // before its first PutRecords (a missing stream, refused credentials, a template
            // that does not compile against the model it opened).
            if let Some(run) = &run_dir {
                if let Err(note) = run.write_error(&e) {
                    tracing::warn!("{note}");
                }
                if let Err(e) = runs.prune(config.sync.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS), run)
                {
                    tracing::warn!("keeping old runs: {e}");
                }
            }
            return Err(e);
        }
    };
    if let Some(run) = &run_dir {
        run.write_report(&report)?;
        // Old runs that cannot be deleted are no reason to fail this one.
        if let Err(e) = runs.prune(config.sync.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS), run) {
            tracing::warn!("keeping old runs: {e}");
        }
    }
    tracing::info!(
        outcome = ?report.outcome,
        rows_read = report.rows_read,
        acknowledged = report.records.acknowledged,
        pending = report.records.pending,
        row_errors = report.row_errors.total,
        "sync finished"
    );

    print_summary(&report, &destination, dry_run);
    if let Some(run) = &run_dir {
        say!(
            "run {}: `kinesync runs show {} --config {}` shows its calls",
            run.id,
            run.id,
            config_path.display()
        );
    }
    if let Some(path) = report_path {
        let json = serde_json::to_string_pretty(&report).expect("reports serialize");
        std::fs::write(path, json).map_err(|source| Error::Io {
            what: "write the report",
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(match report.outcome {
        // A dry run's errors are what it is for: they fail it as they would fail the run.
        Outcome::DryRun if report.row_errors.total > 0 => ExitCode::from(2),
        Outcome::Complete | Outcome::Baseline | Outcome::DryRun => ExitCode::SUCCESS,
        Outcome::Partial => ExitCode::from(2),
        Outcome::Failed { .. } | Outcome::RemovalsHeld { .. } => ExitCode::from(1),
        // The shell's convention: 128 and the signal's number (SIGINT 2, SIGTERM 15).
        Outcome::Interrupted => ExitCode::from(match signal.load(Ordering::SeqCst) {
            0 => 130,
            code => code,
        }),
    })
}

/// What a run did, for a person: the summary, its row errors (the first ones listed), and a
/// simulated stream's records per shard.
fn print_summary(
    report: &kinesync::engine::RunReport,
    destination: &kinesync::destination::Destination,
    dry_run: bool,
) {
    say!("{}", report.summary());
    for error in &report.row_errors.first {
        say!(
            "  row error {} ({}): {}",
            error.primary_key,
            error.kind,
            error.message
        );
    }
    if report.row_errors.total > report.row_errors.first.len() as u64 {
        say!(
            "  ... and {} more row errors (by kind: {:?})",
            report.row_errors.total - report.row_errors.first.len() as u64,
            report.row_errors.by_kind
        );
    }
    if !dry_run
        && let Some(simulated) = &destination.simulated
        && let Some(counts) = simulated.shard_counts(&destination.stream)
    {
        say!(
            "simulated stream {} ({} shards):",
            destination.stream,
            counts.len()
        );
        for (shard, count) in counts {
            say!("  {shard}  {count} records");
        }
    }
}

/// `kinesync runs [show ID]`.
pub(crate) fn runs(
    config: Option<&Path>,
    show: Option<RunsCommand>,
) -> Result<ExitCode, crate::Failure> {
    let config_path = config.ok_or(crate::Failure::Usage(
        "`kinesync runs` needs --config FILE: the runs are kept beside it",
    ))?;
    let config = Config::from_file(config_path)?;
    let runs = Runs::new(config.runs_dir());
    match show {
        None => {
            let entries = runs.list()?;
            if entries.is_empty() {
                say!("no runs yet in {}", runs.dir().display());
            }
            for entry in &entries {
                say!("{}", describe_entry(entry));
            }
        }
        Some(RunsCommand::Show { id }) => say_part!("{}", show_run(&runs.find(&id)?)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Log lines go to stderr; `RUST_LOG` picks what is shown (default: `info`, or `warn` on a
/// terminal, where the progress bar says the rest).
fn init_tracing(terminal: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if terminal { "warn" } else { "info" }));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .try_init()
        .ok();
}

/// Shows a run's progress while it goes: a bar on a terminal, a log line every few seconds
/// otherwise (a scheduler's log).
struct ProgressDisplay {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    fn start(progress: Arc<Progress>, terminal: bool) -> Self {
        let (stop, stopped) = channel::<()>();
        let interval = if terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        let thread = std::thread::Builder::new()
            .name("kinesync-progress".into())
            .spawn(move || {
                let bar = terminal.then(|| {
                    let bar = indicatif::ProgressBar::new_spinner();
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                            .expect("the template is valid"),
                    );
                    bar
                });
                let started = Instant::now();
                let mut rate = AckRate::default();
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let now = progress.snapshot();
                    let acked_per_second = rate.update(now.acknowledged, started.elapsed());
                    let line = describe(now, started.elapsed(), acked_per_second);
                    match &bar {
                        Some(bar) => {
                            bar.set_message(line);
                            bar.tick();
                        }
                        None => tracing::info!("{line}"),
                    }
                }
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
            })
            .ok();
        Self { stop, thread }
    }

    fn finish(mut self) {
        self.stop.send(()).ok();
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// Records acknowledged per second over the last few seconds.
#[derive(Default)]
struct AckRate {
    /// (seconds since the start, records acknowledged), oldest first, the last 5 s.
    seen: std::collections::VecDeque<(f64, u64)>,
}

impl AckRate {
    fn update(&mut self, acknowledged: u64, elapsed: Duration) -> f64 {
        let now = elapsed.as_secs_f64();
        self.seen.push_back((now, acknowledged));
        while self.seen.len() > 2 && self.seen.front().is_some_and(|(t, _)| now - t > 5.0) {
            self.seen.pop_front();
        }
        match (self.seen.front(), self.seen.back()) {
            (Some((t0, a0)), Some((t1, a1))) if t1 > t0 => (a1 - a0) as f64 / (t1 - t0),
            _ => 0.0,
        }
    }
}

fn describe(now: ProgressSnapshot, elapsed: Duration, acked_per_second: f64) -> String {
    let rate = now.rows_read as f64 / elapsed.as_secs_f64().max(0.001);
    let mut line = format!(
        "rows read {} · records {} · acknowledged {} · throttled {} · retries {} · calls {} · {:.0} rows/s",
        now.rows_read, now.to_send, now.acknowledged, now.throttled, now.retries, now.calls, rate
    );
    if now.capacity_per_second > 0 {
        line.push_str(&format!(
            " · sending {acked_per_second:.0}/s of the stream's {}/s",
            now.capacity_per_second
        ));
        if now.paced_per_second < now.capacity_per_second {
            line.push_str(&format!(
                " (paced to {}/s by throttles)",
                now.paced_per_second
            ));
        }
        if now.busiest_shard_permille > 0 {
            line.push_str(&format!(
                " · busiest shard {:.0}%",
                now.busiest_shard_permille as f64 / 10.0
            ));
        }
        let left = now.to_send.saturating_sub(now.acknowledged);
        if acked_per_second > 0.0 && left > 0 {
            line.push_str(&format!(
                " · {} left of what is read, ≈{:.0} s",
                left,
                left as f64 / acked_per_second
            ));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The progress line says how fast records go against what the stream takes, when
    /// throttles slowed a shard, how skewed the keys are, and how long what is read still takes.
    #[test]
    fn the_progress_line_shows_the_rate_against_capacity() {
        let now = ProgressSnapshot {
            rows_read: 10_000,
            to_send: 10_000,
            acknowledged: 6_000,
            capacity_per_second: 4_000,
            paced_per_second: 3_500,
            busiest_shard_permille: 400,
            ..ProgressSnapshot::default()
        };
        let line = describe(now, Duration::from_secs(2), 3_900.0);
        assert!(
            line.contains("sending 3900/s of the stream's 4000/s")
                && line.contains("(paced to 3500/s by throttles)")
                && line.contains("busiest shard 40%")
                && line.contains("4000 left of what is read, ≈1 s"),
            "{line}"
        );
        // Unpaced (a stream without limits): no capacity to compare with.
        let unpaced = ProgressSnapshot {
            capacity_per_second: 0,
            ..now
        };
        assert!(!describe(unpaced, Duration::from_secs(2), 3_900.0).contains("of the stream's"));
    }

    #[test]
    fn the_rate_is_over_the_last_seconds() {
        let mut rate = AckRate::default();
        assert_eq!(rate.update(0, Duration::from_secs(0)), 0.0);
        assert_eq!(rate.update(1_000, Duration::from_secs(1)), 1_000.0);
        rate.update(2_000, Duration::from_secs(2));
        // Ten seconds later, only the last five count.
        for s in 3..=12 {
            rate.update(2_000 + (s - 2) * 500, Duration::from_secs(s));
        }
        assert_eq!(rate.update(7_500, Duration::from_secs(13)), 500.0);
    }
}
