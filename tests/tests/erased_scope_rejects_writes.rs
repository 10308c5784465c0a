//! G6, no resurrection: writes to an erased subject or class fail with
//! `Error::Erased` (put, put_with, delete, batches, registration), before
//! and after reopening, until the subject is explicitly re-registered;
//! after re-registration the old data stays gone (also in ordered classes,
//! where a new record reuses the old record's stored key) and new writes
//! work. Writer threads hammering puts while another thread shreds: no put
//! that starts after `shred` returned succeeds, the scope's keys are all
//! destroyed on disk (no lagging writer created a fresh one), and after
//! reopening none of the subject's data is readable.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{KEY_DESTROYED, key_states};
use shredkv::{Batch, Classes, Db, Error, PutOptions, SubjectState};
use shredkv_tests::{CLASSES, INVOICES, MESSAGES, PROFILE, Store, for_each_backend};

fn assert_erased<T: std::fmt::Debug>(result: shredkv::Result<T>, class: Option<&str>, what: &str) {
    match result {
        Err(Error::Erased { class: got, .. }) => {
            assert_eq!(got.as_deref(), class, "{what}: erased scope");
        }
        other => panic!("{what}: expected Error::Erased, got {other:?}"),
    }
}

/// Every write path to `subject`'s `class` fails as erased.
fn assert_writes_rejected(db: &Db, subject: &str, class: &str, scope: Option<&str>) {
    let what = format!("{} {subject}/{class}", db.backend());
    assert_erased(
        db.put(subject, class, b"k", b"v"),
        scope,
        &format!("{what} put"),
    );
    let later = db.now() + shredkv::jiff::SignedDuration::from_hours(1);
    if class == MESSAGES {
        assert_erased(
            db.put_with(subject, class, b"k", b"v", PutOptions::expires_at(later)),
            scope,
            &format!("{what} put_with"),
        );
    }
    assert_erased(
        db.delete(subject, class, b"k"),
        scope,
        &format!("{what} delete"),
    );
    let mut batch = Batch::new();
    batch.put("bystander", MESSAGES, b"batched", b"must not land");
    batch.put(subject, class, b"k", b"v");
    assert_erased(db.apply(batch), scope, &format!("{what} batch"));
    assert_eq!(
        db.get("bystander", MESSAGES, b"batched").expect("get"),
        None,
        "{what}: a batch with an erased scope wrote nothing"
    );
}

#[test]
fn writes_to_erased_scopes_fail_until_re_registration_and_nothing_comes_back() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("bystander").expect("register");
        db.register_account("acct").expect("register");
        db.register_end_user("user", "acct").expect("register");
        for s in ["acct", "user"] {
            for class in CLASSES {
                db.put(s, class, b"old", b"old data").expect("put");
            }
        }

        // One class of the account (and so of its end user).
        db.shred("acct", Classes::Only(&[INVOICES]))
            .expect("shred a class");
        for s in ["acct", "user"] {
            assert_writes_rejected(&db, s, INVOICES, Some(INVOICES));
            db.put(s, MESSAGES, b"new", b"other classes still take writes")
                .expect("put to a class that was not erased");
        }
        // A whole end user.
        db.shred("user", Classes::All).expect("shred the user");
        for class in CLASSES {
            assert_writes_rejected(&db, "user", class, None);
        }
        assert_erased(db.register_end_user("user", "acct"), None, "register again");
        assert_erased(db.register_account("user"), None, "register as an account");
        drop(db);

        let db = store.open();
        assert_writes_rejected(&db, "acct", INVOICES, Some(INVOICES));
        for class in CLASSES {
            assert_writes_rejected(&db, "user", class, None);
        }
        assert!(
            matches!(
                db.re_register("bystander"),
                Err(Error::SubjectConflict { .. })
            ),
            "nothing of the bystander was erased"
        );

        // Re-registering the account revives writes to its erased class,
        // with new keys: the old record under the same stored key is gone.
        db.re_register("acct").expect("re-register the account");
        assert_eq!(db.get("acct", INVOICES, b"old").expect("get"), None);
        assert!(db.scan("acct", INVOICES).expect("scan").is_empty());
        db.put("acct", INVOICES, b"old", b"new data")
            .expect("put after re-registration");
        db.put("acct", INVOICES, b"fresh", b"fresh data")
            .expect("put after re-registration");
        // Classes that were never erased keep their data.
        assert_eq!(
            db.get("acct", PROFILE, b"old").expect("get").as_deref(),
            Some(&b"old data"[..])
        );
        // The end user stays erased until re-registered itself.
        assert_writes_rejected(&db, "user", MESSAGES, None);
        db.re_register("user").expect("re-register the user");
        for class in CLASSES {
            assert_eq!(db.get("user", class, b"old").expect("get"), None);
            assert!(db.scan("user", class).expect("scan").is_empty(), "{class}");
        }
        db.put("user", MESSAGES, b"new", b"after").expect("put");
        drop(db);

        let db = store.open();
        let invoices: Vec<_> = db
            .scan("acct", INVOICES)
            .expect("scan")
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect();
        assert_eq!(
            invoices,
            vec![
                (b"fresh".to_vec(), b"fresh data".to_vec()),
                (b"old".to_vec(), b"new data".to_vec()),
            ],
            "{}: only the new records, in key order",
            db.backend()
        );
        let export = db.export("acct").expect("export");
        let user = db.subject_tag("user");
        let user_records: usize = export
            .subjects
            .iter()
            .filter(|s| s.tag == user)
            .flat_map(|s| &s.classes)
            .map(|(_, r)| r.len())
            .sum();
        assert_eq!(user_records, 1, "only the user's new record: {export:?}");
        assert_eq!(
            db.subject("user")
                .expect("subject")
                .map(|s| (s.state, s.generation)),
            Some((SubjectState::Active, 2))
        );
    });
}

/// What the writers saw.
#[derive(Default)]
struct Race {
    shred_returned: AtomicBool,
    ok_before: AtomicUsize,
    rejected_after: AtomicUsize,
    resurrected: AtomicUsize,
}

/// `writers` threads put into `subject`'s `class` while the main thread
/// shreds `classes` of it. Returns how many puts succeeded before the shred.
fn race(store: &Store, db: &Db, subject: &str, class: &str, classes: Classes<'_>) -> usize {
    const WRITERS: usize = 3;
    const AFTER: usize = 30;
    let race = Arc::new(Race::default());
    let start = Arc::new(Barrier::new(WRITERS + 1));
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, race, start) = (db.clone(), Arc::clone(&race), Arc::clone(&start));
            let subject = subject.to_string();
            let class = class.to_string();
            thread::spawn(move || {
                start.wait();
                let mut after = 0;
                for i in 0u32.. {
                    // Read before the put starts: if set, the put began after
                    // shred returned and must fail.
                    let began_after = race.shred_returned.load(Ordering::SeqCst);
                    let key = format!("w{w}-{i}");
                    match db.put(&subject, &class, key.as_bytes(), b"lagging write") {
                        Ok(()) if began_after => {
                            race.resurrected.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(()) => {
                            race.ok_before.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(err) => {
                            assert!(err.is_erased(), "writer {w}: {err}");
                            if began_after {
                                race.rejected_after.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    if began_after {
                        after += 1;
                        if after >= AFTER {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    start.wait();
    // Let the writers get going, so the shred lands among them: wait for 50
    // acknowledged puts, or for a writer to stop, which before the shred
    // means it panicked (reported by `join` below). No deadline: the wait
    // ends on an outcome.
    while race.ok_before.load(Ordering::SeqCst) < 50 && !handles.iter().any(|h| h.is_finished()) {
        thread::yield_now();
    }
    let receipt = db.shred(subject, classes).expect("shred");
    race.shred_returned.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("writer thread");
    }
    assert!(receipt.keys_destroyed() > 0, "{receipt:?}");
    assert_eq!(
        race.resurrected.load(Ordering::SeqCst),
        0,
        "{}: puts that began after shred returned succeeded",
        store.backend()
    );
    assert_eq!(race.rejected_after.load(Ordering::SeqCst), WRITERS * AFTER);
    race.ok_before.load(Ordering::SeqCst)
}

#[test]
fn lagging_writers_cannot_resurrect_a_shredded_subject_or_class() {
    for_each_backend(|store| {
        let db = store.open();
        for s in ["whole", "one-class", "bystander"] {
            db.register_account(s).expect("register");
            db.put(s, PROFILE, b"profile", b"kept unless erased")
                .expect("put");
        }
        let whole = race(store, &db, "whole", MESSAGES, Classes::All);
        let one_class = race(
            store,
            &db,
            "one-class",
            MESSAGES,
            Classes::Only(&[MESSAGES]),
        );
        assert!(whole >= 50 && one_class >= 50);
        let tags = [db.subject_tag("whole").0, db.subject_tag("one-class").0];
        drop(db);
        let messages_class = common::class_number(store, MESSAGES);

        // On disk: every key of the erased scopes is a tombstone.
        for (tag, only) in [(tags[0], None), (tags[1], Some(messages_class))] {
            let states = key_states(store, &tag);
            assert!(!states.is_empty());
            for (id, state) in states {
                let in_scope = only.is_none_or(|c| id[16..18] == c);
                if in_scope {
                    assert_eq!(
                        state,
                        KEY_DESTROYED,
                        "{}: key {id:02x?} of an erased scope is live on disk",
                        store.backend()
                    );
                }
            }
        }

        let db = store.open();
        assert_erased(db.get("whole", MESSAGES, b"w0-0"), None, "get after reopen");
        assert_erased(db.scan("whole", PROFILE), None, "scan after reopen");
        assert_erased(db.export("whole"), None, "export after reopen");
        assert_erased(
            db.get("one-class", MESSAGES, b"w0-0"),
            Some(MESSAGES),
            "get after reopen",
        );
        assert_eq!(
            db.get("one-class", PROFILE, b"profile")
                .expect("get")
                .as_deref(),
            Some(&b"kept unless erased"[..])
        );
        let export = db.export("one-class").expect("export");
        assert_eq!(export.record_count(), 1, "{export:?}");
        assert!(
            db.get("bystander", PROFILE, b"profile")
                .expect("get")
                .is_some()
        );
    });
}
