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
//! With `--one-day-window` every class's purge window is one day instead:
//! the epoch rotates every 6 hours, maintenance runs every 3 hours, and
//! expiry buckets are 8 hours long (docs/design.md, "The deletion
//! timeline"). Each account then has one record expiring in each of 100
//! 8-hour buckets; the first day's three buckets hold the fixed number of due
//! keys, and the timed day is its eight passes (four rotations among them).
//! The next day (three buckets of every account) is the steady state.
//!
//! Issue 14 asks a rotation and a day's maintenance to cost within 2× at 10M
//! keys of what they cost at 100k, and a purge window down to 1 day without
//! the daily cost growing with N.
//!
//! ```text
//! cargo run --release -p shredkv-benches --bin maintenance_scaling                 # 100k and 1M keys
//! cargo run --release -p shredkv-benches --bin maintenance_scaling -- 10000000     # long mode: add 10M
//! cargo run --release -p shredkv-benches --bin maintenance_scaling -- --quick      # 10k and 40k (CI)
//! cargo run --release -p shredkv-benches --bin maintenance_scaling -- --one-day-window [--quick] [N ...]
//! ```
//!
//! Every N runs in a child process of its own (so one store's memory and page
//! cache do not weigh on the next), in a temporary directory.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{Config, Db, ManualClock, Policy};
use shredkv_benches::Result;
use shredkv_benches::expiring::put_expiring;

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

/// With 1-day purge windows: the expiry buckets' width (the longest of 24,
/// 12, 8, 6, 4, 3, 2, 1 h with B + L + P ≤ W, L = 9 h and P = 6 h), and
/// the maintenance cadence the timeline needs (P / 2).
const SHORT_BUCKET: i64 = 8 * 3_600;
const SHORT_CADENCE: i64 = 3 * 3_600;

/// The default policy with every purge window one day long.
fn one_day_policy() -> Result<Policy> {
    let text =
        Policy::DEFAULT_TOML.replace(r#"purge_window = "30 days""#, r#"purge_window = "1 day""#);
    Ok(Policy::from_toml_str(
        &text,
        "default.toml with 1-day purge windows",
    )?)
}

/// Due keys on the first loaded day, at every N.
const DUE_PER_DAY: u64 = 1_000;
/// The same in quick mode, whose smallest store has 100 accounts.
const DUE_PER_DAY_QUICK: u64 = 100;

/// Creates a store in `dir` (under `policy`, or the default one) before the
/// load's start, registers `accounts` accounts and writes, for each of
/// `slots` expiry slots, one record per account expiring at `expiry(slot)`:
/// only `due` accounts' in the first `fixed` slots, so that their due work is
/// the same at every N. Returns the store, its clock at the load's start, the
/// load's seconds and the live keys.
fn load(
    dir: &Path,
    policy: Option<Policy>,
    accounts: u64,
    slots: u64,
    fixed: u64,
    due: u64,
    expiry: impl Fn(u64) -> Result<Timestamp>,
) -> Result<(Db, ManualClock, f64, u64)> {
    if due > accounts {
        return Err(format!("{due} due keys need as many accounts; {accounts} here").into());
    }
    let clock = ManualClock::new(Timestamp::from_second(
        start().as_second() - CREATED_BEFORE_LOAD,
    )?);
    let mut config = Config::new(dir.join("store"))
        .key_file(dir.join("keys"))
        .clock(Arc::new(clock.clone()))
        .flush_every(None)
        .maintenance_every(None);
    if let Some(policy) = policy {
        config = config.policy(policy);
    }
    let db = Db::open(config)?;
    clock.set(start());
    let loading = Instant::now();
    for a in 0..accounts {
        db.register_account(&format!("acct-{a:09}"))?;
    }
    for slot in 0..slots {
        let writers = if slot < fixed { due } else { accounts };
        let names = (0..writers).map(|a| format!("acct-{a:09}"));
        put_expiring(&db, names, &slot.to_be_bytes(), expiry(slot)?)?;
    }
    db.flush()?;
    let load_s = loading.elapsed().as_secs_f64();
    let live = db.stats()?.keys_live;
    Ok((db, clock, load_s, live))
}

/// Loads a store of about `keys` data keys, `due` of them due on the first
/// day, then times a rotation and the day's pass, then the next day's
/// rotation and pass (every account's key due); prints one line: keys, load
/// s, rotation s, re-wrapped, pass s, destroyed, nodes re-keyed by the pass,
/// nodes removed by the pass, next day's s, next day's keys destroyed.
fn measure(dir: &Path, keys: u64, due: u64) -> Result<()> {
    let accounts = keys / DAYS;
    let expiry = |d: u64| Ok(end_of_day(d)? - SignedDuration::from_hours(23));
    let (db, clock, load_s, live) = load(dir, None, accounts, DAYS, 1, due, expiry)?;

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

/// The start of loaded 8-hour bucket `b` (1-day windows): the first loaded
/// day begins at the second midnight after the load, like [`end_of_day`]'s.
fn short_bucket_start(b: u64) -> Result<i64> {
    let midnight = start().as_second() / DAY * DAY;
    Ok(midnight + 2 * DAY + i64::try_from(b)? * SHORT_BUCKET)
}

/// Runs the eight passes of the day starting at `day_start`, every 3 hours
/// from 3 hours in; returns (seconds spent in the passes, epochs created,
/// roots re-wrapped, keys destroyed, nodes removed, nodes re-keyed).
fn short_window_day(db: &Db, clock: &ManualClock, day_start: i64) -> Result<[f64; 6]> {
    let mut totals = [0.0; 6];
    for pass in 1..=DAY / SHORT_CADENCE {
        clock.set(Timestamp::from_second(day_start + pass * SHORT_CADENCE)?);
        let passing = Instant::now();
        let report = db.compact()?;
        totals[0] += passing.elapsed().as_secs_f64();
        if report.remaining > 0 {
            return Err(format!("a pass ran out of its budget: {report:?}").into());
        }
        let counts = [
            report.epochs_created,
            report.keys_rewrapped,
            report.keys_destroyed,
            report.nodes_removed,
            report.nodes_rekeyed,
        ];
        for (total, count) in totals[1..].iter_mut().zip(counts) {
            *total += count as f64;
        }
    }
    Ok(totals)
}

/// [`measure`] with 1-day purge windows: loads about `keys` data keys in 100
/// 8-hour buckets per account, `due` of them in each of the first day's three
/// buckets, then times that day's eight passes and the next day's; prints
/// one line: keys, load s, the day's passes s, epochs created, roots
/// re-wrapped, keys destroyed, nodes removed, nodes re-keyed, next day's s,
/// next day's keys destroyed.
fn measure_one_day_window(dir: &Path, keys: u64, due: u64) -> Result<()> {
    const BUCKETS: u64 = 100;
    const FIRST_DAY: u64 = 3;
    let accounts = keys / BUCKETS;
    let expiry = |b: u64| Ok(Timestamp::from_second(short_bucket_start(b)? + 3_600)?);
    let policy = Some(one_day_policy()?);
    let (db, clock, load_s, live) = load(dir, policy, accounts, BUCKETS, FIRST_DAY, due, expiry)?;
    // Catch up from the load (no maintenance ran for two days): untimed.
    clock.set(Timestamp::from_second(short_bucket_start(0)?)?);
    db.compact()?;

    let day = short_window_day(&db, &clock, short_bucket_start(0)?)?;
    if day[3] != (FIRST_DAY * due) as f64 {
        return Err(format!(
            "the day's passes destroyed {} keys, expected {}",
            day[3],
            FIRST_DAY * due
        )
        .into());
    }
    let next = short_window_day(&db, &clock, short_bucket_start(FIRST_DAY)?)?;
    if next[3] != (FIRST_DAY * accounts) as f64 {
        return Err(format!(
            "the next day destroyed {} keys, expected {}",
            next[3],
            FIRST_DAY * accounts
        )
        .into());
    }
    println!(
        "{live} {load_s:.1} {:.3} {} {} {} {} {} {:.3} {}",
        day[0], day[1], day[2], day[3], day[4], day[5], next[0], next[3]
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, keys, due, dir] = args.as_slice() {
        match flag.as_str() {
            "--child" => return measure(Path::new(dir), keys.parse()?, due.parse()?),
            "--child-one-day-window" => {
                return measure_one_day_window(Path::new(dir), keys.parse()?, due.parse()?);
            }
            _ => {}
        }
    }
    let quick = args.iter().any(|a| a == "--quick");
    let one_day_window = args.iter().any(|a| a == "--one-day-window");
    let (mut sizes, due): (Vec<u64>, u64) = if quick {
        (vec![10_000, 40_000], DUE_PER_DAY_QUICK)
    } else {
        (vec![100_000, 1_000_000], DUE_PER_DAY)
    };
    for arg in args.iter().filter(|a| !a.starts_with("--")) {
        sizes.push(arg.parse().map_err(|_| format!("not a key count: {arg}"))?);
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &keys in &sizes {
        eprintln!("maintenance_scaling: {keys} keys ...");
        let dir = tempfile::tempdir()?;
        let out = Command::new(&exe)
            .args([
                if one_day_window {
                    "--child-one-day-window"
                } else {
                    "--child"
                },
                &keys.to_string(),
                &due.to_string(),
            ])
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
    if one_day_window {
        return print_one_day_window(&rows);
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

/// The table of `--one-day-window` rows (see [`measure_one_day_window`]).
fn print_one_day_window(rows: &[Vec<f64>]) -> Result<()> {
    println!(
        "| data keys | load (s) | day's 8 passes (s) | rotations | roots re-wrapped | keys destroyed | nodes removed | nodes re-keyed | day vs first | next day: keys destroyed | next day (s) | due keys/s | next day vs first |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first = rows.first().cloned().unwrap_or_default();
    let ratio = |v: f64, f: f64| v / f.max(1e-9);
    for row in rows {
        let [
            live,
            load,
            day_s,
            rotations,
            rewrapped,
            destroyed,
            removed,
            rekeyed,
            next_s,
            next_destroyed,
        ] = row.as_slice()
        else {
            return Err(format!("a child printed {row:?}").into());
        };
        println!(
            "| {live:.0} | {load:.1} | {day_s:.3} | {rotations:.0} | {rewrapped:.0} | {destroyed:.0} | {removed:.0} | {rekeyed:.0} | {:.1}× | {next_destroyed:.0} | {next_s:.3} | {:.0} | {:.1}× |",
            ratio(*day_s, first.get(2).copied().unwrap_or(0.0)),
            next_destroyed / next_s.max(1e-9),
            ratio(*next_s, first.get(8).copied().unwrap_or(0.0)),
        );
    }
    Ok(())
}
