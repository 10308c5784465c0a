//! A wall clock set back does not turn the store's time back: erasures,
//! key creations, expiries and deadlines keep the order they happened in.
//!
//! The store's time is the configured clock floored by the latest time the
//! store handed out, kept in memory and in the store (with each key
//! creation, the flush, the close, and the audit chain). Set back, the
//! clock stands still for the store until it passes that time again. Each
//! scenario sets the manual clock back and checks what the store answers
//! against times the test itself chose; the engine's own deadline code is
//! never asked.
//!
//! Without the floor: an erasure stamped before the creation of the key it
//! destroyed does not count as one, so a class erased and registered again
//! reads as `Tampered`; an expired record reads again; and an expired record
//! whose day key compaction destroyed reads as `Tampered`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use shredkv::jiff::Timestamp;
use shredkv::{Backend, Classes, Config, Db, ErasureSource, PutOptions};
use shredkv_tests::{MESSAGES, START_SECONDS, Store, close, for_each_backend, test_policy};

mod common;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).expect("a valid time")
}

const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;

/// Erases `subject`'s messages, registers the class again, writes one new
/// message, and asserts that the class reads exactly that message, by key
/// and by scan.
fn erase_and_register_again(db: &Db, subject: &str) {
    let what = format!("{subject} on {}", db.backend());
    db.shred(subject, Classes::Only(&[MESSAGES]))
        .expect("shred messages");
    db.re_register_class(subject, MESSAGES)
        .expect("register the class again");
    db.put(subject, MESSAGES, b"new", b"after")
        .expect("write after registering again");
    assert_eq!(
        db.get(subject, MESSAGES, b"new")
            .unwrap_or_else(|e| panic!("{what}: get of the new message: {e}")),
        Some(b"after".to_vec()),
        "{what}"
    );
    assert_eq!(
        db.get(subject, MESSAGES, b"old")
            .unwrap_or_else(|e| panic!("{what}: get of the erased message: {e}")),
        None,
        "{what}: the erased message"
    );
    let scanned = db
        .scan(subject, MESSAGES)
        .unwrap_or_else(|e| panic!("{what}: scan after registering again: {e}"));
    let keys: Vec<_> = scanned.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, vec![b"new".to_vec()], "{what}");
}

/// Registers `acct` and writes its message `short`, expiring at `expires`.
fn write_expiring(db: &Db, expires: i64) {
    db.register_account("acct").expect("register");
    db.put_with(
        "acct",
        MESSAGES,
        b"short",
        b"lived",
        PutOptions::expires_at(at(expires)),
    )
    .expect("put");
}

#[test]
fn an_erasure_after_the_clock_was_set_back_still_erases_the_keys_made_before() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.put("acct", MESSAGES, b"old", b"before").expect("put");
        // The key of the old message was made at START; the erasure's clock
        // reads an hour earlier.
        store.clock().set(at(START_SECONDS - HOUR));
        erase_and_register_again(&db, "acct");
    });
}

#[test]
fn an_erasure_after_a_reopen_with_the_clock_set_back_still_erases() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        store.clock().set(at(START_SECONDS + DAY));
        db.put("acct", MESSAGES, b"old", b"before").expect("put");
        close(db);
        // Back to before the key's creation, and past the registration.
        store.clock().set(at(START_SECONDS + HOUR));
        let db = store.open();
        erase_and_register_again(&db, "acct");
    });
}

#[test]
fn an_expired_record_stays_expired_when_the_clock_is_set_back() {
    for_each_backend(|store| {
        let expires = START_SECONDS + HOUR;
        let db = store.open();
        write_expiring(&db, expires);
        db.put("acct", MESSAGES, b"long", b"lived").expect("put");
        let what = format!("on {}", store.backend());
        assert_eq!(
            db.get("acct", MESSAGES, b"short").expect("get"),
            Some(b"lived".to_vec()),
            "{what}: before its expiry"
        );

        store.clock().set(at(expires + 1));
        assert_eq!(
            db.get("acct", MESSAGES, b"short").expect("get"),
            None,
            "{what}"
        );
        store.clock().set(at(expires - HOUR / 2));
        assert_eq!(
            db.get("acct", MESSAGES, b"short").expect("get"),
            None,
            "{what}: the clock set back before the expiry"
        );
        // And the store's time stands at the last it read.
        assert!(db.now() >= at(expires + 1), "{what}: {}", db.now());

        close(db);
        let db = store.open();
        assert_eq!(
            db.get("acct", MESSAGES, b"short").expect("get"),
            None,
            "{what}: reopened with the clock still set back"
        );
        assert!(
            db.now() >= at(expires + 1),
            "{what}: reopened: {}",
            db.now()
        );
        assert_eq!(
            db.get("acct", MESSAGES, b"long").expect("get"),
            Some(b"lived".to_vec()),
            "{what}: a record without an expiry"
        );
    });
}

#[test]
fn a_record_whose_day_key_is_destroyed_reads_as_expired_when_the_clock_is_set_back() {
    for_each_backend(|store| {
        let expires = START_SECONDS + HOUR;
        let db = store.open();
        write_expiring(&db, expires);
        // Two days on, the expiry's day is over and compaction destroys its
        // key.
        store.clock().set(at(expires + 2 * DAY));
        let report = db.compact().expect("compact");
        assert!(
            report.keys_destroyed >= 1,
            "on {}: the day key was not destroyed: {report:?}",
            store.backend()
        );
        store.clock().set(at(START_SECONDS));
        let what = format!("on {}", store.backend());
        assert_eq!(
            db.get("acct", MESSAGES, b"short")
                .unwrap_or_else(|e| panic!("{what}: {e}")),
            None,
            "{what}"
        );
        let scanned = db
            .scan("acct", MESSAGES)
            .unwrap_or_else(|e| panic!("{what}: scan: {e}"));
        assert!(scanned.is_empty(), "{what}: {scanned:?}");
    });
}

#[test]
fn the_store_time_never_runs_back_and_follows_the_clock_once_past() {
    for_each_backend(|store| {
        let db = store.open();
        let what = format!("on {}", store.backend());
        store.clock().set(at(START_SECONDS + DAY));
        assert_eq!(db.now(), at(START_SECONDS + DAY), "{what}");
        store.clock().set(at(START_SECONDS));
        assert_eq!(db.now(), at(START_SECONDS + DAY), "{what}: set back");
        close(db);
        let db = store.open();
        assert_eq!(db.now(), at(START_SECONDS + DAY), "{what}: reopened");
        store.clock().set(at(START_SECONDS + 2 * DAY));
        assert_eq!(db.now(), at(START_SECONDS + 2 * DAY), "{what}: past again");
    });
}

#[test]
fn a_store_without_a_kept_time_starts_from_its_audit_chain() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        let erased_at = START_SECONDS + DAY;
        store.clock().set(at(erased_at));
        db.shred("acct", Classes::All).expect("shred");
        close(db);
        // As a store written before the floor was kept: no `store_time`.
        common::raw_remove(store, "meta", &[b"store_time".to_vec()]);
        assert!(
            !common::raw_read(store, "meta").contains_key(b"store_time".as_slice()),
            "on {}: the floor is still there",
            store.backend()
        );
        store.clock().set(at(START_SECONDS));
        let db = store.open();
        assert_eq!(
            db.now().as_second(),
            erased_at,
            "on {}: the audited erasure's time",
            store.backend()
        );
    });
}

#[test]
fn a_damaged_kept_time_is_passed_over_and_reported() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        let audited_at = START_SECONDS + DAY;
        store.clock().set(at(audited_at));
        db.place_hold("acct", None, "case 1")
            .expect("hold (audited)");
        store.clock().set(at(audited_at + HOUR));
        assert_eq!(db.now(), at(audited_at + HOUR));
        close(db);
        let mut meta = common::raw_read(store, "meta");
        let kept = meta
            .get_mut(b"store_time".as_slice())
            .unwrap_or_else(|| panic!("on {}: no kept time", store.backend()));
        kept[3] ^= 0x40;
        common::raw_write(store, "meta", &meta);
        store.clock().set(at(START_SECONDS));
        let db = store.open();
        let what = format!("on {}", store.backend());
        assert_eq!(db.now(), at(audited_at), "{what}: the audit chain's time");
        let report = db.verify().expect("verify");
        let key_hex: String = b"store_time".iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.location.tree == "meta" && p.location.key_hex == key_hex),
            "{what}: {:?}",
            report.problems
        );
    });
}

/// Environment of a child that works on a store and exits without
/// closing it, as a crash would.
const CHILD_DIR: &str = "SHREDKV_CLOCK_CHILD_DIR";
const CHILD_BACKEND: &str = "SHREDKV_CLOCK_CHILD_BACKEND";
const CHILD_NOW: &str = "SHREDKV_CLOCK_CHILD_NOW";

/// The configuration of `Store::config`, for the child's directory, with
/// every write durable and the flush thread running every `flush_every`.
fn child_config(
    dir: &std::path::Path,
    backend: Backend,
    now: i64,
    flush_every: Option<Duration>,
) -> Config {
    Config::new(dir)
        .allow_key_file_in_store(true)
        .backend(backend)
        .policy(test_policy())
        .clock(Arc::new(shredkv::ManualClock::new(at(now))))
        .flush_every(flush_every)
        .maintenance_every(None)
        .sync_writes(true)
        .key_file(dir.join("keys"))
}

/// The child's store, backend and time, if this process is a child.
fn child() -> Option<(String, Backend, i64)> {
    let dir = std::env::var(CHILD_DIR).ok()?;
    let backend = match std::env::var(CHILD_BACKEND).ok()?.as_str() {
        "sled" => Backend::Sled,
        _ => Backend::Redb,
    };
    let now = std::env::var(CHILD_NOW)
        .ok()?
        .parse()
        .expect("the child's time");
    Some((dir, backend, now))
}

/// Runs `role` (one of the `child_*` tests) on `store` at `now`, and waits
/// for it to exit.
fn run_child(store: &Store, role: &str, now: i64) {
    let status = Command::new(std::env::current_exe().expect("the test binary"))
        .args([role, "--exact", "--test-threads=1"])
        .env(CHILD_DIR, store.path())
        .env(CHILD_BACKEND, store.backend().name())
        .env(CHILD_NOW, now.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("run the child");
    assert!(status.success(), "the child {role} failed: {status}");
}

/// In the child: write one message (its key is made now), and exit: the
/// write itself must carry the store's time.
#[test]
fn child_writes_a_message_and_exits_without_closing() {
    let Some((dir, backend, now)) = child() else {
        return; // Not a child: nothing to do.
    };
    let db = Db::open(child_config(dir.as_ref(), backend, now, None)).expect("the child opens");
    db.put("acct", MESSAGES, b"old", b"before").expect("put");
    std::process::exit(0);
}

/// In the child: read the time (as a read checking an expiry does), let the
/// flush thread run a few times, and exit.
#[test]
fn child_reads_the_time_and_exits_without_closing() {
    let Some((dir, backend, now)) = child() else {
        return; // Not a child: nothing to do.
    };
    let every = Duration::from_millis(20);
    let db =
        Db::open(child_config(dir.as_ref(), backend, now, Some(every))).expect("the child opens");
    assert_eq!(db.now(), at(now));
    std::thread::sleep(every * 10);
    std::process::exit(0);
}

#[test]
fn a_key_made_just_before_a_crash_carries_the_store_time() {
    for_each_backend(|store: &Store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        close(db);
        run_child(
            store,
            "child_writes_a_message_and_exits_without_closing",
            START_SECONDS + DAY,
        );
        // After the registration (audited), before the key's creation.
        store.clock().set(at(START_SECONDS + HOUR));
        let db = store.open();
        assert_eq!(
            db.get("acct", MESSAGES, b"old").expect("the child's write"),
            Some(b"before".to_vec()),
            "on {}: the child's durable write",
            store.backend()
        );
        erase_and_register_again(&db, "acct");
    });
}

#[test]
fn the_flush_thread_keeps_the_time_reads_saw_across_a_crash() {
    for_each_backend(|store: &Store| {
        close(store.open());
        let read_at = START_SECONDS + DAY;
        run_child(
            store,
            "child_reads_the_time_and_exits_without_closing",
            read_at,
        );
        store.clock().set(at(START_SECONDS));
        let db = store.open();
        assert_eq!(db.now(), at(read_at), "on {}", store.backend());
    });
}

#[test]
fn a_restore_takes_over_the_time_of_the_erasures_it_replays() {
    for_each_backend(|store| {
        let live = store.open();
        for subject in ["acct", "other"] {
            live.register_account(subject).expect("register");
            live.put(subject, MESSAGES, b"m", b"v").expect("put");
        }
        let backup = store.path().join("backup");
        live.backup(&backup).expect("backup");
        let erased_at = START_SECONDS + DAY;
        store.clock().set(at(erased_at));
        live.shred("acct", Classes::All).expect("shred");
        let log = store.path().join("erasures.log");
        live.export_erasure_log(&log)
            .expect("export the erasure log");
        // The restore runs where the clock reads an hour after the backup,
        // a day behind the erasure it replays.
        store.clock().set(at(START_SECONDS + HOUR));
        let sources: [(&str, ErasureSource<'_>); 2] = [
            ("the live store", ErasureSource::Live(&live)),
            ("an exported log", ErasureSource::File(&log)),
        ];
        for (n, (from, source)) in sources.into_iter().enumerate() {
            let target = store.path().join(format!("restored-{n}"));
            let (restored, _) =
                Db::restore(&backup, store.config_at(&target), source).expect("restore");
            let what = format!("on {}, replaying {from}", store.backend());
            assert!(
                restored.now() >= at(erased_at),
                "{what}: the restored store's time {}",
                restored.now()
            );
            assert_eq!(
                restored.get("other", MESSAGES, b"m").expect("get"),
                Some(b"v".to_vec()),
                "{what}"
            );
            assert!(
                matches!(restored.get("acct", MESSAGES, b"m"), Err(e) if e.is_erased()),
                "{what}: the replayed erasure"
            );
        }
    });
}
