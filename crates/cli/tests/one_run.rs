//! One sync at a time per state: a run that finds its state held by another is refused at
//! once, told which run holds it; a lock left by a killed run is taken over.

mod common;

use common::{example, sync};
use kinesync::state::{SqliteStore, StateStore};

#[test]
fn a_second_run_on_a_held_state_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    let state = dir.path().join("kinesync-state.db");
    // Another run, in this process, holds the state.
    let holder = SqliteStore::open_for_run(&state, "20261130-120000-000").unwrap();

    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is in use by run 20261130-120000-000")
            && text.contains(&format!("(process {})", std::process::id()))
            && text.contains("one sync at a time"),
        "{text}"
    );
    // Refused before it sent or committed anything.
    assert_eq!(holder.key_count().unwrap(), 0);
    drop(holder);

    // Once the holder is done, the next run goes ahead.
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
}

#[test]
fn a_lock_left_by_a_killed_run_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(dir.path());
    // What a run killed with SIGKILL leaves: its note in the lock file, and no lock (the
    // operating system released it with the process).
    std::fs::write(
        dir.path().join("kinesync-state.db.lock"),
        "pid 4194303\nsince 1764504000\nrun 20261130-120000-000\n",
    )
    .unwrap();
    let (output, text) = sync(&config, &[]);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("lock was left by run 20261130-120000-000") && text.contains("taken over"),
        "{text}"
    );
    assert!(text.contains("complete"), "{text}");
}
