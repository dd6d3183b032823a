//! Writes the reference benchmark rows as NDJSON: `cargo run -p kinesync-testkit --example
//! gen_rows -- N OUT.ndjson [GENERATION]` (the same rows as the shared benchmark's
//! `gen_rows.py`; generation G > 0 has the score of every 100th row raised by G, so that a
//! sync after generation G-1 finds 1% of the rows changed).

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(n), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: gen_rows N OUT.ndjson [GENERATION]");
        std::process::exit(2);
    };
    let n: usize = n.parse().unwrap_or_else(|_| {
        eprintln!("N must be a whole number, got {n:?}");
        std::process::exit(2);
    });
    let generation: u64 = match args.next() {
        Some(g) => g.parse().unwrap_or_else(|_| {
            eprintln!("GENERATION must be a whole number, got {g:?}");
            std::process::exit(2);
        }),
        None => 0,
    };
    let mut w = BufWriter::new(std::fs::File::create(out)?);
    for line in kinesync_testkit::bench_rows_changed(n, generation) {
        writeln!(w, "{line}")?;
    }
    w.flush()
}
