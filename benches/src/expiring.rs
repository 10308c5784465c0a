//! Stores whose accounts each hold one record expiring on each of a number
//! of days (one expiry-bucket key per account and day, plus each account's
//! scope key): the shape of the retention bench and of `due_key_passes`.

use std::sync::Arc;
use std::time::Instant;

use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{Batch, Config, Db, ManualClock, Policy, PutOptions};

use crate::Result;

/// The class every record is written in.
pub const CLASS: &str = "message_content";

const DAY: i64 = 86_400;

/// The store's clock when it is made.
#[must_use]
pub fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("a valid time")
}

/// When the keys of records expiring on loaded day `d` are due: the end of
/// that UTC day (expiry buckets are days).
///
/// # Errors
/// `d` past any representable time.
pub fn due_at(d: usize) -> Result<Timestamp> {
    let d = i64::try_from(d)?;
    Ok(Timestamp::from_second(
        start().as_second() / DAY * DAY + (d + 3) * DAY,
    )?)
}

/// The default policy with every purge window at its longest (366 days), so
/// that epochs may rotate rarely enough to stay out of measured passes (the
/// rotation period is at most a quarter of the shortest window).
///
/// # Errors
/// The policy does not parse.
pub fn long_window_policy() -> Result<Policy> {
    let text = include_str!("../../policy/default.toml").replace(
        r#"purge_window = "30 days""#,
        r#"purge_window = "366 days""#,
    );
    Ok(Policy::from_toml_str(
        &text,
        "default.toml with 366-day purge windows",
    )?)
}

/// Writes one 100-byte record under `key`, expiring at `expiry`, for each
/// of `accounts`, in batches of 1,000.
///
/// # Errors
/// The store's.
pub fn put_expiring(
    db: &Db,
    accounts: impl IntoIterator<Item = String>,
    key: &[u8],
    expiry: Timestamp,
) -> Result<()> {
    let value = [0x5Au8; 100];
    let mut batch = Batch::new();
    for account in accounts {
        batch.put_with(&account, CLASS, key, &value, PutOptions::expires_at(expiry));
        if batch.len() >= 1_000 {
            db.apply(std::mem::take(&mut batch))?;
        }
    }
    db.apply(batch)?;
    Ok(())
}

/// The configuration of a bench's store in `dir` on `clock`: redb, the key
/// file in the store, no background flush or maintenance (the bench runs
/// them).
#[must_use]
pub fn bench_config(dir: &std::path::Path, clock: &ManualClock) -> Config {
    Config::new(dir)
        .allow_key_file_in_store(true)
        .clock(Arc::new(clock.clone()))
        .flush_every(None)
        .maintenance_every(None)
}

/// A new store ([`bench_config`], 366-day purge windows, a rotation every
/// 91 days) in which
/// each of `accounts` accounts has one record expiring on each of `days`
/// days, one hour into the day whose end is [`due_at`] it.
///
/// # Errors
/// The store's.
pub fn store_with_expiring_keys(
    accounts: usize,
    days: usize,
) -> Result<(tempfile::TempDir, Db, ManualClock)> {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(start());
    let db = Db::open(
        bench_config(dir.path(), &clock)
            .policy(long_window_policy()?)
            .epoch_rotation(SignedDuration::from_hours(24 * 91)),
    )?;
    let name = |a: usize| format!("subject-{a}");
    for a in 0..accounts {
        db.register_account(&name(a))?;
    }
    let loading = Instant::now();
    for d in 0..days {
        let expiry = due_at(d)? - SignedDuration::from_hours(23);
        put_expiring(
            &db,
            (0..accounts).map(name),
            &(d as u64).to_be_bytes(),
            expiry,
        )?;
    }
    db.flush()?;
    eprintln!(
        "loaded {} live keys in {:.1?}",
        db.stats()?.keys_live,
        loading.elapsed()
    );
    Ok((dir, db, clock))
}
