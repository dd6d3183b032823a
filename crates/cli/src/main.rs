//! The `kinesync` command.
//!
//! Printing to stdout is this binary's job, so the workspace lint against it is lifted here.
//!
//! Exit codes: 0 when everything worked (every row acknowledged, or became a record for
//! `preview`), 2 when some rows are pending or in error, 1 for a configuration or other fatal
//! error.

#![allow(clippy::print_stdout)]

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kinesync::Config;
use kinesync::payload::Event;
use kinesync::preview::{Preview, PreviewOptions};

/// `println!`, except that a closed stdout (`kinesync runs | head -1`) ends the output quietly
/// instead of panicking: the work is done, and its exit code stands.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _closed_stdout_is_fine = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` (no newline), with [`say!`]'s care for a closed stdout.
macro_rules! say_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _closed_stdout_is_fine = write!(out, $($arg)*).and_then(|()| out.flush());
    }};
}

mod reset;
mod runs_view;
mod sync;

/// mimalloc, not the system allocator: a sync allocates and frees a few small buffers per row
/// across two threads (the model reader and the engine), and glibc's malloc spent a third of a
/// backfill in its own locks and free lists (measured with `perf`; see the README's
/// performance section). Built not to ask for transparent huge pages (`no_thp`): given them
/// (kernels whose THP setting is `madvise`, the usual one, give them when asked), the kernel
/// backs its heap in 2 MiB pages that stay resident when only a few bytes of each are used,
/// which added 20 to 40 MiB to a backfill's peak memory and nothing to its speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stream the rows of a data model into Amazon Kinesis.
#[derive(Debug, Parser)]
#[command(name = "kinesync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one sync: read the model, send what was added, changed or removed since the last
    /// run, and commit what the stream acknowledged. Exits 0 when everything was acknowledged,
    /// 2 when some rows are pending or in error (the next run sends them), 1 on a
    /// configuration or fatal error.
    Sync {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Also write the run report here, as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        flags: sync::SyncFlags,
    },
    /// Forget what a sync has sent: its state (every row's last sent version) is cleared, so
    /// that the next run sends every row of the model as added. Asks first, unless `--yes`.
    /// Past runs are kept. Exits 1 when another run holds the state.
    Reset {
        /// The configuration file (TOML) whose state to clear.
        #[arg(long, short)]
        config: PathBuf,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// List past runs (time, outcome, counts), or show one run's every API call.
    Runs {
        /// The configuration file (TOML) whose runs to list.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        show: Option<RunsCommand>,
    },
    /// Check the destination: resolve credentials, describe the stream, and print its status,
    /// shards and hash ranges, maximum record size, encryption and capacity mode. Exits 1
    /// with what to fix when something is wrong.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the record each row would become, one JSON line per row, without sending
    /// anything: primary key, partition key, explicit hash key, shard and message (or the
    /// row's error).
    Preview {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Rows to preview (.ndjson, .jsonl or .csv); the config's `[source]` when not given.
        #[arg(long)]
        rows: Option<PathBuf>,
        /// Preview at most this many rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Shards of the simulated, evenly split stream.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// The event templates see: added, changed or removed.
        #[arg(long, default_value = "added", value_parser = parse_event)]
        event: Event,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Print one run readably: its report and every call it made (status, records, bytes,
    /// duration, per-record error codes).
    Show {
        /// The run's id (or a unique prefix of it), or `latest`.
        id: String,
    },
}

fn parse_event(s: &str) -> Result<Event, String> {
    s.parse()
        .map_err(|e: kinesync::payload::UnknownEvent| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => check(&config).map_err(Failure::from),
        Command::Sync {
            config,
            report,
            flags,
        } => sync::run(&config, report.as_deref(), flags).map_err(Failure::from),
        Command::Reset { config, yes } => reset::run(&config, yes),
        Command::Runs { config, show } => sync::runs(config.as_deref(), show),
        Command::Preview {
            config,
            rows,
            limit,
            shards,
            event,
        } => preview(
            &config,
            rows.as_deref(),
            limit,
            PreviewOptions::new(shards, event),
        )
        .map_err(Failure::from),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Why a command failed: kinesync's own error, or a command line that cannot work.
#[derive(Debug)]
enum Failure {
    Kinesync(kinesync::Error),
    /// A command line clap accepts but the command cannot run with.
    Usage(&'static str),
}

impl From<kinesync::Error> for Failure {
    fn from(error: kinesync::Error) -> Self {
        Failure::Kinesync(error)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Kinesync(error) => error.fmt(f),
            Failure::Usage(message) => f.write_str(message),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

fn check(config: &std::path::Path) -> Result<ExitCode, kinesync::Error> {
    let config = Config::from_file(config)?;
    let report = runtime().block_on(kinesync::destination::check(&config))?;
    say!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn preview(
    config: &std::path::Path,
    rows: Option<&std::path::Path>,
    limit: Option<usize>,
    options: PreviewOptions,
) -> Result<ExitCode, kinesync::Error> {
    let config = Config::from_file(config)?;
    let (preview, source) = Preview::open(&config, rows, options)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut errors = 0usize;
    for item in source.take(limit.unwrap_or(usize::MAX)) {
        let line = match item {
            Ok(row) => preview.json_line(&row.row),
            Err(e) => {
                // A line that is not a row at all: say so, and go on with the next.
                errors += 1;
                eprintln!("{e}");
                continue;
            }
        };
        errors += usize::from(line.is_error);
        if writeln!(out, "{}", line.text).is_err() {
            // stdout closed (`| head`): stop quietly.
            return Ok(ExitCode::SUCCESS);
        }
    }
    if out.flush().is_err() {
        // stdout closed before the end: nothing more to say.
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if errors > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
