//! Daily maintenance against the number of data keys: a store of about N
//! keys (N / 100 accounts, each with one record expiring on each of 100 days,
//! so one expiry-bucket key per account and day), default policy (30-day
//! purge windows, so the epoch rotates every day), redb. The first loaded day
//! holds a fixed number of due keys at every N (1,000; 100 in quick mode), so
//! that what grows with N shows apart from the day's due work. For each N it
//! times, with the clock at the end of that first day:
//!
//! - one epoch rotation (`Db::rotate_epoch`): a new epoch key, the key
//!   tree's root and the store secret re-wrapped under it (store format 4;
//!   before the key tree, every live data key), and the store's first epoch
//!   destroyed. The
//!   store is created 15 days before its load, so that first epoch is past
//!   its lifetime (14.5 days by default) as every day's oldest epoch is in a
//!   store that has run a while: its destruction, which first checks that no
//!   live key is still wrapped under it, is part of every steady-state day;
//! - the day's pass (`Db::compact`) after it: the day's due keys destroyed
//!   and their day's forest of the key tree removed whole, no rotation left
//!   to do;
//! - the day's maintenance: the two together, what a store does by itself
//!   each day;
//! - the next day, the steady state of this shape: every account's record of
//!   that day expires (N / 100 due keys), timed as a rotation and a pass
//!   together. With the key tree's day forests the day's keys die with their
//!   forest, removed whole.
//!
//! Issue 14 asks a rotation and a day's maintenance to cost within 2× at 10M
//! keys of what they cost at 100k.
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
/// How long before its load the store is created: longer than an epoch's
/// lifetime, so the timed rotation also destroys the first epoch.
const CREATED_BEFORE_LOAD: i64 = 15 * DAY;

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

/// Due keys on the first loaded day, at every N.
const DUE_PER_DAY: u64 = 1_000;
/// The same in quick mode, whose smallest store has 100 accounts.
const DUE_PER_DAY_QUICK: u64 = 100;

/// Loads a store of about `keys` data keys, `due` of them due on the first
/// day, then times a rotation and the day's pass, then the next day's
/// rotation and pass (every account's key due); prints one line: keys, load
/// s, rotation s, re-wrapped, pass s, destroyed, nodes re-keyed by the pass,
/// nodes removed by the pass, next day's s, next day's keys destroyed.
fn measure(dir: &Path, keys: u64, due: u64) -> Result<()> {
    let accounts = keys / DAYS;
    if due > accounts {
        return Err(format!("{due} due keys need as many accounts; {accounts} here").into());
    }
    let clock = ManualClock::new(Timestamp::from_second(
        start().as_second() - CREATED_BEFORE_LOAD,
    )?);
    let db = Db::open(
        Config::new(dir.join("store"))
            .key_file(dir.join("keys"))
            .clock(Arc::new(clock.clone()))
            .flush_every(None)
            .maintenance_every(None),
    )?;
    clock.set(start());
    let loading = Instant::now();
    for a in 0..accounts {
        db.register_account(&format!("acct-{a:09}"))?;
    }
    let value = [0x5a_u8; 100];
    for d in 0..DAYS {
        let expiry = end_of_day(d)? - SignedDuration::from_hours(23);
        let mut batch = Batch::new();
        let writers = if d == 0 { due } else { accounts };
        for a in 0..writers {
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

    clock.set(end_of_day(0)?);
    let rotating = Instant::now();
    let rotation = db.rotate_epoch()?;
    let rotation_s = rotating.elapsed().as_secs_f64();
    if rotation.epochs_destroyed != 1 {
        return Err(format!(
            "the rotation destroyed {} epochs, expected the first one",
            rotation.epochs_destroyed
        )
        .into());
    }

    let passing = Instant::now();
    let pass = db.compact()?;
    let pass_s = passing.elapsed().as_secs_f64();
    if pass.keys_destroyed != due {
        return Err(format!(
            "the day's pass destroyed {} keys, expected {due}",
            pass.keys_destroyed
        )
        .into());
    }

    // The steady state: the next day, every account's key of it is due.
    clock.set(end_of_day(1)?);
    let next_day = Instant::now();
    let next_rotation = db.rotate_epoch()?;
    let next_pass = db.compact()?;
    let next_s = next_day.elapsed().as_secs_f64();
    if next_pass.keys_destroyed != accounts || next_rotation.created.is_none() {
        return Err(format!(
            "the next day destroyed {} keys (expected {accounts}), rotation {next_rotation:?}",
            next_pass.keys_destroyed
        )
        .into());
    }
    println!(
        "{live} {load_s:.1} {rotation_s:.2} {} {pass_s:.3} {} {} {} {next_s:.3} {}",
        rotation.keys_rewrapped,
        pass.keys_destroyed,
        pass.nodes_rekeyed,
        pass.nodes_removed,
        next_pass.keys_destroyed
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, keys, due, dir] = args.as_slice()
        && flag == "--child"
    {
        return measure(Path::new(dir), keys.parse()?, due.parse()?);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (mut sizes, due): (Vec<u64>, u64) = if quick {
        (vec![10_000, 40_000], DUE_PER_DAY_QUICK)
    } else {
        (vec![100_000, 1_000_000], DUE_PER_DAY)
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
            .args(["--child", &keys.to_string(), &due.to_string()])
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
        "| data keys | load (s) | rotation (s) | keys re-wrapped | day's pass (s) | keys destroyed | nodes re-keyed in the pass | nodes removed | rotation + pass (s) | rotation vs first | pass vs first | day vs first | next day: keys destroyed | next day: rotation + pass (s) | due keys/s | next day vs first |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first = rows.first().cloned().unwrap_or_default();
    for row in &rows {
        let [
            live,
            load,
            rotation,
            rewrapped,
            pass,
            destroyed,
            nodes_rekeyed,
            nodes_removed,
            next_s,
            next_destroyed,
        ] = row.as_slice()
        else {
            return Err(format!("a child printed {row:?}").into());
        };
        let ratio = |v: f64, f: f64| v / f.max(1e-9);
        let (first_rotation, first_pass, first_next) = (
            first.get(2).copied().unwrap_or(0.0),
            first.get(4).copied().unwrap_or(0.0),
            first.get(8).copied().unwrap_or(0.0),
        );
        println!(
            "| {live:.0} | {load:.1} | {rotation:.2} | {rewrapped:.0} | {pass:.3} | {destroyed:.0} | {nodes_rekeyed:.0} | {nodes_removed:.0} | {:.3} | {:.1}× | {:.1}× | {:.1}× | {next_destroyed:.0} | {next_s:.3} | {:.0} | {:.1}× |",
            rotation + pass,
            ratio(*rotation, first_rotation),
            ratio(*pass, first_pass),
            ratio(rotation + pass, first_rotation + first_pass),
            next_destroyed / next_s.max(1e-9),
            ratio(*next_s, first_next)
        );
    }
    Ok(())
}
