//! Writes the reference benchmark rows as NDJSON: `cargo run -p kinesync-testkit --example
//! gen_rows -- N OUT.ndjson` (the same rows as the shared benchmark's `gen_rows.py`).

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(n), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: gen_rows N OUT.ndjson");
        std::process::exit(2);
    };
    let n: usize = n.parse().unwrap_or_else(|_| {
        eprintln!("N must be a whole number, got {n:?}");
        std::process::exit(2);
    });
    let mut w = BufWriter::new(std::fs::File::create(out)?);
    for line in kinesync_testkit::bench_rows(n) {
        writeln!(w, "{line}")?;
    }
    w.flush()
}
