//! A legal hold placed while compaction is about to destroy what it covers.
//!
//! The notice promises that a legal hold keeps data "for as long as the
//! hold lasts". Compaction must therefore decide whether a hold covers an
//! item while it holds the scope gate's write lock (which `place_hold`
//! takes too): a hold acknowledged before the destruction commits must
//! stop it. Each test stops compaction at the gate (`PausePoint::GateWrite`,
//! before it asks for the lock), places a hold from the test thread, lets
//! compaction go on, and checks that nothing the hold covers was destroyed
//! and that the item waits for the hold's release, which carries it out.
//!
//! The expectations are taken from the notice and the policy file, not from
//! the engine: an expiry bucket is due at the end of its UTC day, and a
//! re-key debt is due `R = W − L − P` after the overwrite (W = 30 days from
//! `policy/default.toml`, P = 1 day, L = (W − P) / 2), read and computed here.

use std::sync::mpsc;

use shredkv::internal::{FaultControl, PausePoint};
use shredkv::jiff::{SignedDuration, Timestamp};
use shredkv::{Clock, Db, PutOptions};

#[path = "support/pausable.rs"]
mod pausable;
use pausable::PausableStore as Store;

const POLICY: &str = include_str!("../../policy/default.toml");
const CLASS: &str = "message_content";
const DAY: i64 = 86_400;

/// The purge window of `message_content` in the policy file, in seconds.
fn purge_window() -> i64 {
    let policy: toml::Table = POLICY.parse().expect("the policy file is TOML");
    let window = policy
        .get("class")
        .and_then(toml::Value::as_array)
        .and_then(|classes| {
            classes
                .iter()
                .find(|c| c.get("name").and_then(toml::Value::as_str) == Some(CLASS))
        })
        .and_then(|c| c.get("purge_window"))
        .and_then(toml::Value::as_str)
        .expect("a purge window for message_content");
    let days: i64 = window
        .strip_suffix(" days")
        .and_then(|d| d.trim().parse().ok())
        .expect("a window in days");
    days * DAY
}

/// Runs a compaction pass at `at` in another thread, stopping it before it
/// asks for the scope gate's write lock; while it waits there, places a
/// hold over `CLASS` of `subject`. Returns the pass's report.
fn compact_with_a_hold_placed_at_the_gate(
    db: &Db,
    control: &FaultControl,
    subject: &str,
) -> shredkv::CompactionReport {
    let (arrived, arrivals) = mpsc::channel();
    let pause = control.pause_at(PausePoint::GateWrite, move || {
        arrived.send(()).unwrap_or_default();
    });
    let compactor = {
        let db = db.clone();
        std::thread::spawn(move || db.compact())
    };
    arrivals.recv().expect("the pass reaches the gate");
    db.place_hold(subject, Some(CLASS), "case 2026-118")
        .expect("a hold placed while the pass waits");
    pause.resume();
    compactor
        .join()
        .expect("compaction thread")
        .expect("compact")
}

#[test]
fn a_hold_placed_while_expired_keys_are_being_destroyed_keeps_them() {
    let store = Store::new();
    let (db, control) = store.open();
    db.register_account("acct").expect("register");
    let now = store.clock.now();
    let expiry = now + SignedDuration::from_hours(2);
    db.put_with(
        "acct",
        CLASS,
        b"m1",
        b"evidence",
        PutOptions::expires_at(expiry),
    )
    .expect("put");
    let live_before = db.stats().expect("stats").keys_live;

    // The expiry bucket is due at the end of the expiry's UTC day.
    let due = (expiry.as_second() / DAY + 1) * DAY;
    store
        .clock
        .set(Timestamp::from_second(due + 60).expect("a valid time"));
    let report = compact_with_a_hold_placed_at_the_gate(&db, &control, "acct");

    assert_eq!(
        report.keys_destroyed, 0,
        "a hold acknowledged before the destruction committed did not stop it: {report:?}"
    );
    assert_eq!(report.blocked_by_hold, 1, "{report:?}");
    assert_eq!(db.stats().expect("stats").keys_live, live_before);
    // Past its expiry, a held record stays readable for as long as the hold lasts.
    assert_eq!(
        db.get("acct", CLASS, b"m1")
            .expect("get under the hold")
            .as_deref(),
        Some(&b"evidence"[..])
    );

    // Released, the parked destruction is due at once.
    db.release_hold("acct", Some(CLASS)).expect("release");
    let after = db.compact().expect("compact after release");
    assert_eq!(after.keys_destroyed, 1, "{after:?}");
    assert_eq!(db.stats().expect("stats").keys_live, live_before - 1);
}

#[test]
fn a_hold_placed_while_a_bucket_is_being_rekeyed_keeps_its_old_key() {
    let store = Store::new();
    let (db, control) = store.open();
    db.register_account("acct").expect("register");
    db.put("acct", CLASS, b"m1", b"first").expect("put");
    db.put("acct", CLASS, b"m1", b"second").expect("overwrite");
    let overwritten = store.clock.now().as_second();

    // The re-key of the overwritten bucket is due R after the overwrite.
    let window = purge_window();
    let period = DAY.min(window / 4);
    let epoch_lifetime = (window - period) / 2;
    let rekey_due = overwritten + window - epoch_lifetime - period;
    store
        .clock
        .set(Timestamp::from_second(rekey_due + 60).expect("a valid time"));
    let report = compact_with_a_hold_placed_at_the_gate(&db, &control, "acct");

    assert_eq!(
        (report.buckets_rekeyed, report.keys_destroyed),
        (0, 0),
        "a hold acknowledged before the re-key committed did not stop it: {report:?}"
    );
    assert_eq!(report.blocked_by_hold, 1, "{report:?}");
    assert_eq!(
        db.get("acct", CLASS, b"m1").expect("get").as_deref(),
        Some(&b"second"[..])
    );

    db.release_hold("acct", Some(CLASS)).expect("release");
    let after = db.compact().expect("compact after release");
    assert_eq!(
        (after.buckets_rekeyed, after.keys_destroyed),
        (1, 1),
        "{after:?}"
    );
    assert_eq!(
        db.get("acct", CLASS, b"m1").expect("get").as_deref(),
        Some(&b"second"[..])
    );
}
