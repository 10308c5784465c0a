//! A day forest's removal against a key creation in its day.
//!
//! Compaction removes a day's forest of the key tree whole once the day
//! holds no live key: it checks the day lane for a live key, then deletes
//! the forest's nodes. A key made in that day between the two would be
//! wrapped under nodes about to be deleted, and its records would read as
//! tampered: data lost without an erasure. The vault's creation lock holds
//! the check and the deletion together (`vault::tree`, "Locks"; the key
//! tree's write lock, held too, also keeps a creation's path walk out), so
//! a creation that arrives in between waits, and then makes a new forest.
//!
//! The loom model `engine_forest_removal_racing_a_key_creation_in_its_day`
//! cannot interleave a creation there (the check and the deletion run
//! inside the storage's locks, which are not loom's). This test forces that
//! interleaving with the fault layer's pause points: the writer stops
//! before the creation lock, having read the clock while the day was open;
//! compaction stops between its check and the deletion; the writer is let
//! go, and the test waits until it returns or blocks on the creation lock,
//! then lets compaction finish. The guarantee is checked on what is left:
//! the writer's key opens.

use std::sync::mpsc;
use std::time::Duration;

use shredkv::internal::{PausePoint, gate_stripe};
use shredkv::jiff::Timestamp;
use shredkv::{Db, PutOptions};

#[path = "support/pausable.rs"]
mod pausable;
use pausable::PausableStore as Store;

const DAY: i64 = 86_400;
/// How long a thread may take to reach a pause point before the test
/// gives up (never reached in a passing run).
const ARRIVAL: Duration = Duration::from_secs(60);

/// What the racing writer reports to the test.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// It stopped because another thread holds the creation lock.
    Blocked,
    /// Its put returned.
    Returned,
}

/// Two account names whose subjects lie on different stripes of the scope
/// gate, so the paused writer's read lock never blocks compaction's write
/// lock on the other subject.
fn names_on_two_stripes(db: &Db) -> (String, String) {
    let first = "acct-older".to_string();
    let stripe = gate_stripe(db, &first);
    let second = (0..4096)
        .map(|i| format!("acct-newer-{i}"))
        .find(|name| gate_stripe(db, name) != stripe)
        .expect("a name on another stripe");
    (first, second)
}

#[test]
fn a_key_made_while_its_day_forest_is_removed_waits_and_gets_a_new_forest() {
    let store = Store::new();
    let (db, control) = store.open();
    let at = |second: i64| Timestamp::from_second(second).expect("a valid time");
    // The store's day (UTC, the default policy's windows of 30 days give
    // day buckets): its keys are due when it ends.
    let day_ends = (db.now().as_second() / DAY + 1) * DAY;
    let (older, newer) = names_on_two_stripes(&db);
    for subject in [&older, &newer] {
        db.register_account(subject).expect("register");
        // A key of a later day: the scope's own keys exist before the race,
        // so the racing put's only creation is its key of the day.
        db.put_with(
            subject,
            "message_content",
            b"later",
            b"kept",
            PutOptions::expires_at(at(day_ends + 10 * DAY)),
        )
        .expect("put");
    }
    let live_before_the_day = db.stats().expect("stats").keys_live;
    // The day's forest holds one key, the older subject's.
    db.put_with(
        &older,
        "message_content",
        b"m",
        b"older",
        PutOptions::expires_at(at(day_ends - 3_600)),
    )
    .expect("put");

    // The writer reads the clock while the day is open and stops before
    // the creation lock.
    store.clock.set(at(day_ends - 2));
    let (arrived, arrivals) = mpsc::channel();
    let at_lock = control.pause_at(PausePoint::CreationLock, move || {
        arrived.send(()).unwrap_or_default();
    });
    let (events, racing) = mpsc::channel();
    let blocked = events.clone();
    let writer = {
        let db = db.clone();
        let newer = newer.clone();
        std::thread::spawn(move || {
            let outcome = db.put_with(
                &newer,
                "message_content",
                b"m",
                b"newer",
                PutOptions::expires_at(at(day_ends - 1)),
            );
            events.send(Event::Returned).unwrap_or_default();
            outcome
        })
    };
    arrivals
        .recv_timeout(ARRIVAL)
        .expect("the writer reaches the creation lock");

    // The day ends; compaction destroys the older key and stops after
    // finding the day without a live key, before deleting its forest.
    store.clock.set(at(day_ends + 1));
    let (removing, removals) = mpsc::channel();
    let at_removal = control.pause_at(PausePoint::ForestRemoval, move || {
        removing.send(()).unwrap_or_default();
    });
    let compactor = {
        let db = db.clone();
        std::thread::spawn(move || db.compact())
    };
    removals
        .recv_timeout(ARRIVAL)
        .expect("compaction reaches the forest's removal");

    // The writer goes on: it must wait for the removal, not make its key
    // under the forest being removed.
    let contended = control.pause_at(PausePoint::CreationLockContended, move || {
        blocked.send(Event::Blocked).unwrap_or_default();
    });
    at_lock.resume();
    // Today's engine blocks the writer at the creation lock at once. A
    // writer that neither returns nor blocks there is held by another lock;
    // the end state is checked all the same.
    let order = racing.recv_timeout(ARRIVAL).ok();
    at_removal.resume();
    contended.resume();
    let first = compactor
        .join()
        .expect("compaction thread")
        .expect("compaction");
    writer
        .join()
        .expect("writer thread")
        .expect("the racing put");
    assert_eq!(first.keys_destroyed, 1, "{first:?}");
    assert_eq!(first.forests_removed, 1, "{first:?}");

    // The new key opens: it lies under a forest of its own, not under the
    // nodes the removal deleted.
    let verified = db.verify().expect("verify");
    assert!(
        verified.is_clean(),
        "the writer, released between the forest's check and its removal, {}: {verified:?}",
        match order {
            Some(Event::Returned) => "made its key before the removal",
            Some(Event::Blocked) => "waited on the creation lock",
            None => "was still running",
        }
    );
    assert_eq!(
        order,
        Some(Event::Blocked),
        "the writer was not held at the creation lock, though the end state is sound: \
         if another lock now keeps a creation out of a forest's removal, say so in \
         vault::tree (\"Locks\") and here"
    );
    assert_eq!(
        db.stats().expect("stats").keys_live,
        live_before_the_day + 1,
        "the writer's key of the day is live"
    );
    // Its day is over: the next pass destroys it and removes its forest.
    let second = db.compact().expect("compact");
    assert_eq!(second.keys_destroyed, 1, "{second:?}");
    assert_eq!(second.forests_removed, 1, "{second:?}");
    let verified = db.verify().expect("verify");
    assert!(verified.is_clean(), "{verified:?}");
    assert_eq!(db.stats().expect("stats").keys_live, live_before_the_day);
    for subject in [&older, &newer] {
        assert_eq!(
            db.get(subject, "message_content", b"later")
                .expect("a later day's key is untouched")
                .as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(db.get(subject, "message_content", b"m").expect("get"), None);
    }
}
