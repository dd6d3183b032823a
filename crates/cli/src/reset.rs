//! `kinesync reset`: forget what a sync has sent, after asking.
//!
//! The state is cleared in place, under the state's lock (so never beside a running sync),
//! and the next run is a first run: every row of the model is sent as added. Past runs are
//! kept.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use kinesync::Config;
use kinesync::state::{SqliteStore, StateStore};

use crate::Failure;

/// Clears the state of the sync `config_path` configures; asks first unless `yes`.
pub(crate) fn run(config_path: &Path, yes: bool) -> Result<ExitCode, Failure> {
    let config = Config::from_file(config_path)?;
    if let Some(store) = kinesync::model::open_warehouse_state(&config)? {
        return reset_warehouse(&config, store, yes);
    }
    let path = config.state_path();
    if !path.exists() {
        say!(
            "nothing to reset: there is no state at {} (the next run sends every row as added)",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut store =
        SqliteStore::open_for_run(&path, "kinesync reset").map_err(kinesync::Error::from)?;
    let rows = store.key_count().map_err(kinesync::Error::from)?;
    if !confirmed(&config, rows, &path.display().to_string(), yes)? {
        say!("not reset");
        return Ok(ExitCode::from(1));
    }
    store.clear().map_err(kinesync::Error::from)?;
    say!(
        "reset: the state at {} is empty ({rows} rows forgotten); the next run sends every row of the model as added",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Clears the state kept in the warehouse (`[sync] state_schema`).
fn reset_warehouse(
    config: &Config,
    mut store: kinesync::state::PostgresStore,
    yes: bool,
) -> Result<ExitCode, Failure> {
    let rows = store.key_count().map_err(kinesync::Error::from)?;
    let place = store.describe();
    if !confirmed(config, rows, &place, yes)? {
        say!("not reset");
        return Ok(ExitCode::from(1));
    }
    store.clear().map_err(kinesync::Error::from)?;
    say!(
        "reset: the state at {place} is empty ({rows} rows forgotten); the next run sends every row of the model as added"
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether to go on: `yes`, or the person at the terminal said so.
fn confirmed(config: &Config, rows: usize, place: &str, yes: bool) -> Result<bool, Failure> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "kinesync reset asks before it forgets what a sync has sent, and there is no terminal to ask on: pass --yes to reset anyway",
        ));
    }
    let stream = config
        .destination
        .as_ref()
        .map_or("(none configured)", |d| d.stream.as_str());
    say_part!(
        "This forgets the {rows} rows last sent to stream {stream} (state {place}): the next run sends every row of the model as added. Reset? [y/N] "
    );
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok();
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
