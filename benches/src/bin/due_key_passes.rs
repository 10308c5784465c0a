//! Compaction passes that destroy due keys, timed one by one, for comparing
//! two builds of the engine on a machine whose speed drifts.
//!
//! Loads a store shaped like the retention bench's scaling group (N accounts,
//! each with one record expiring on each of D days: one expiry-bucket key per
//! account and day; purge windows of 366 days, so no epoch rotates), then
//! runs one compaction pass per day and prints, per pass, the keys destroyed,
//! the records removed (a weekly sweep), the wall time and the thread's CPU
//! time per destroyed key.
//!
//! Run alone, the passes follow each other. With `--token-in` and
//! `--token-out` (two FIFOs), a pass starts only once a byte arrives on the
//! first and hands one on through the second after it: two processes, one
//! per build, then take turns pass by pass, so each pass of one build has a
//! pass of the other's beside it in time, under the same load.
//! `benches/alternate.sh` runs two builds so, each first once (the second
//! process of a pair runs 2–3 % faster), and prints the ratio.
//!
//! ```text
//! cargo run --release -p shredkv-benches --bin due_key_passes -- [ACCOUNTS] [DAYS]
//! benches/alternate.sh BUILD_A BUILD_B [ACCOUNTS] [DAYS]
//! ```
//!
//! CPU time is read from `/proc/thread-self/schedstat` (Linux).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use shredkv_benches::Result;
use shredkv_benches::expiring::{due_at, store_with_expiring_keys};

/// This thread's CPU time so far, in seconds.
fn thread_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("reading /proc/thread-self/schedstat (Linux only): {e}"))?;
    let nanos: f64 = stat
        .split_whitespace()
        .next()
        .ok_or("an empty /proc/thread-self/schedstat")?
        .parse()?;
    Ok(nanos / 1e9)
}

/// A FIFO opened for reading and writing, so opening it never waits for
/// the other process.
fn fifo(path: &str) -> Result<File> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(path))
        .map_err(|e| format!("opening the FIFO {path}: {e}"))?)
}

fn main() -> Result<()> {
    let mut numbers = Vec::new();
    let (mut token_in, mut token_out) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--token-in" => token_in = Some(fifo(&args.next().ok_or("--token-in FIFO")?)?),
            "--token-out" => token_out = Some(fifo(&args.next().ok_or("--token-out FIFO")?)?),
            n => numbers.push(
                n.parse::<usize>()
                    .map_err(|e| format!("{n}: not a number of accounts or days ({e})"))?,
            ),
        }
    }
    let accounts = numbers.first().copied().unwrap_or(8_000);
    let days = numbers.get(1).copied().unwrap_or(16);

    let (_dir, db, clock) = store_with_expiring_keys(accounts, days)?;

    for d in 0..days {
        clock.set(due_at(d)?);
        if let Some(token) = token_in.as_mut() {
            token.read_exact(&mut [0u8; 1])?;
        }
        let (wall, cpu) = (Instant::now(), thread_cpu()?);
        let report = db.compact()?;
        let (wall, cpu) = (wall.elapsed().as_secs_f64(), thread_cpu()? - cpu);
        if let Some(token) = token_out.as_mut() {
            token.write_all(&[1])?;
        }
        let keys = report.keys_destroyed.max(1) as f64;
        println!(
            "day {d}: {} keys destroyed, {} records removed, {:.1} ms, {:.2} us cpu a key",
            report.keys_destroyed,
            report.records_removed,
            wall * 1e3,
            cpu * 1e6 / keys
        );
    }
    Ok(())
}
