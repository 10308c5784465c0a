//! Daily maintenance against the number of data keys: a store of N keys
//! (N / 100 accounts, each with one record expiring on each of 100 days, so
//! one expiry-bucket key per account and day), default policy (30-day purge
//! windows, so the epoch rotates every day), redb. For each N it times:
//!
//! - one epoch rotation (`Db::rotate_epoch`): a new epoch key, and every live
//!   data key re-wrapped under it;
//! - one day of maintenance: the clock moves to the end of the first loaded
//!   day and `Db::compact` runs the pass a store runs by itself — that day's
//!   N / 100 keys destroyed, then the daily rotation.
//!
//! Issue 14 asks both to cost within 2× at 10M keys of what they cost at 100k.
//!
//! ```text
//! cargo run --release -p shredkv-benches --bin maintenance_scaling                 # 100k and 1M keys
//! cargo run --release -p shredkv-benches --bin maintenance_scaling -- 10000000     # long mode: add 10M
//! cargo run --release -p shredkv-benches --bin maintenance_scaling -- --quick      # 10k and 40k (CI)
//! ```
//!
//! Every N runs in a child process of its own (so one store's memory and page
//! cache do not weigh on the next), in a temporary directory.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{Batch, Config, Db, ManualClock, PutOptions};
use shredkv_benches::Result;

const CLASS: &str = "message_content";
const DAYS: u64 = 100;
const DAY: i64 = 86_400;

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The end of loaded day `d`: when its expiry-bucket keys are due.
fn end_of_day(d: u64) -> Result<Timestamp> {
    let midnight = start().as_second() / DAY * DAY;
    Ok(Timestamp::from_second(
        midnight + (i64::try_from(d)? + 3) * DAY,
    )?)
}

/// Loads a store of `keys` data keys, then times a rotation and a day's
/// pass; prints one line: keys, load s, rotation s, re-wrapped, day s,
/// destroyed, re-wrapped by the day's pass.
fn measure(dir: &Path, keys: u64) -> Result<()> {
    let accounts = keys / DAYS;
    let clock = ManualClock::new(start());
    let db = Db::open(
        Config::new(dir.join("store"))
            .key_file(dir.join("keys"))
            .clock(Arc::new(clock.clone()))
            .flush_every(None)
            .maintenance_every(None),
    )?;
    let loading = Instant::now();
    for a in 0..accounts {
        db.register_account(&format!("acct-{a:09}"))?;
    }
    let value = [0x5a_u8; 100];
    for d in 0..DAYS {
        let expiry = end_of_day(d)? - SignedDuration::from_hours(23);
        let mut batch = Batch::new();
        for a in 0..accounts {
            batch.put_with(
                &format!("acct-{a:09}"),
                CLASS,
                &d.to_be_bytes(),
                &value,
                PutOptions::expires_at(expiry),
            );
            if batch.len() >= 1_000 {
                db.apply(std::mem::take(&mut batch))?;
            }
        }
        db.apply(batch)?;
    }
    db.flush()?;
    let load_s = loading.elapsed().as_secs_f64();
    let live = db.stats()?.keys_live;

    let rotating = Instant::now();
    let rotation = db.rotate_epoch()?;
    let rotation_s = rotating.elapsed().as_secs_f64();

    clock.set(end_of_day(0)?);
    let passing = Instant::now();
    let pass = db.compact()?;
    let day_s = passing.elapsed().as_secs_f64();
    if pass.keys_destroyed < accounts {
        return Err(format!(
            "the day's pass destroyed {} keys, expected {accounts}",
            pass.keys_destroyed
        )
        .into());
    }
    println!(
        "{live} {load_s:.1} {rotation_s:.2} {} {day_s:.2} {} {}",
        rotation.keys_rewrapped, pass.keys_destroyed, pass.keys_rewrapped
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, keys, dir] = args.as_slice()
        && flag == "--child"
    {
        return measure(Path::new(dir), keys.parse()?);
    }
    let mut sizes: Vec<u64> = if args.iter().any(|a| a == "--quick") {
        vec![10_000, 40_000]
    } else {
        vec![100_000, 1_000_000]
    };
    for arg in args.iter().filter(|a| *a != "--quick") {
        sizes.push(arg.parse().map_err(|_| format!("not a key count: {arg}"))?);
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &keys in &sizes {
        eprintln!("maintenance_scaling: {keys} keys ...");
        let dir = tempfile::tempdir()?;
        let out = Command::new(&exe)
            .args(["--child", &keys.to_string()])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{keys} keys: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        let line = String::from_utf8(out.stdout)?;
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()?;
        rows.push(fields);
    }
    println!(
        "| data keys | load (s) | rotation (s) | keys re-wrapped | day's pass (s) | keys destroyed | re-wrapped in the pass | rotation vs first | day vs first |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first = rows.first().cloned().unwrap_or_default();
    for row in &rows {
        let [
            live,
            load,
            rotation,
            rewrapped,
            day,
            destroyed,
            pass_rewrapped,
        ] = row.as_slice()
        else {
            return Err(format!("a child printed {row:?}").into());
        };
        let ratio = |i: usize, v: f64| first.get(i).map_or(0.0, |f| v / f.max(1e-9));
        println!(
            "| {live:.0} | {load:.1} | {rotation:.2} | {rewrapped:.0} | {day:.2} | {destroyed:.0} | {pass_rewrapped:.0} | {:.1}× | {:.1}× |",
            ratio(2, *rotation),
            ratio(4, *day)
        );
    }
    Ok(())
}
