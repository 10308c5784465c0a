//! `Db::re_register_class`: one erased class of a subject takes new data
//! again, under new keys, while the rest of the subject is untouched and
//! nothing erased comes back — not through a read, a scan, a reopen, a
//! certificate's count, a restore from a backup taken before or after, nor
//! a race with writers and shreds. Refused where the class cannot hold data
//! again (closed, opted out, released, parked behind a hold, erased whole).
//!
//! Expectations are the scenario's own bookkeeping (what was written, when,
//! and what was erased after it), never the engine's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shredkv::jiff::SignedDuration;
use shredkv::{Classes, Config, Db, ErasureSource, Error};
use shredkv_tests::{INVOICES, MESSAGES, PROFILE, Rng, close, for_each_backend};

/// An acknowledged put: (its start, its end, its key) in the global order.
type Acked = (u64, u64, Vec<u8>);

const DAY: SignedDuration = SignedDuration::from_hours(24);

fn values(db: &Db, subject: &str, class: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = db
        .scan(subject, class)
        .expect("scan")
        .into_iter()
        .map(|r| r.value)
        .collect();
    out.sort();
    out
}

fn conflict(result: Result<(), Error>, what: &str) -> String {
    match result {
        Err(Error::SubjectConflict { detail, .. }) => detail,
        other => panic!("{what}: expected a subject conflict, got {other:?}"),
    }
}

#[test]
fn one_class_comes_back_with_new_keys_and_nothing_erased_returns() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.put("acct", MESSAGES, b"m1", b"old message")
            .expect("put");
        db.put("acct", MESSAGES, b"m2", b"old message 2")
            .expect("put");
        db.put("acct", PROFILE, b"email", b"a@example.com")
            .expect("put");
        db.shred("acct", Classes::Only(&[MESSAGES])).expect("shred");
        assert!(
            db.put("acct", MESSAGES, b"m3", b"x")
                .expect_err("the class is erased")
                .is_erased()
        );
        assert!(
            conflict(db.re_register_class("acct", PROFILE), "a live class").contains("not erased")
        );

        store.clock().advance(SignedDuration::from_secs(5));
        db.re_register_class("acct", MESSAGES)
            .expect("re-register the class");
        assert!(
            conflict(db.re_register_class("acct", MESSAGES), "twice").contains("not erased"),
            "a re-opened class is not erased any more"
        );
        db.put("acct", MESSAGES, b"m1", b"new message")
            .expect("put after re-opening");
        db.put("acct", MESSAGES, b"m4", b"new message 4")
            .expect("put");
        // The erased versions stay gone; the overwritten key holds the new one.
        assert_eq!(db.get("acct", MESSAGES, b"m2").expect("get"), None);
        assert_eq!(
            db.get("acct", MESSAGES, b"m1").expect("get").as_deref(),
            Some(&b"new message"[..])
        );
        assert_eq!(
            values(&db, "acct", MESSAGES),
            vec![b"new message".to_vec(), b"new message 4".to_vec()]
        );
        assert_eq!(
            db.get("acct", PROFILE, b"email").expect("get").as_deref(),
            Some(&b"a@example.com"[..]),
            "the other class was never touched"
        );
        assert_eq!(db.export("acct").expect("export").record_count(), 3);

        // The certificate still shows the erasure, marked re-opened, and
        // counts the new keys and records as new data, not as residue.
        let cert = db.certificate("acct").expect("certificate");
        assert_eq!(cert.erasures.len(), 1);
        let erasure = &cert.erasures[0];
        assert_eq!(erasure.class.as_deref(), Some(MESSAGES));
        let reopened = erasure.reopened_at.expect("marked re-opened");
        assert!(reopened > erasure.erased_at);
        assert_eq!(cert.keys_live_in_erased_scopes, 0, "{cert:?}");
        assert_eq!(
            cert.dead_records_remaining, 2,
            "the two erased records, not the new ones"
        );

        // Compaction removes the erased records and keeps the new ones.
        store.clock().advance(DAY);
        db.compact().expect("compact");
        let cert = db.certificate("acct").expect("certificate");
        assert_eq!(cert.dead_records_remaining, 0, "{cert:?}");
        assert_eq!(values(&db, "acct", MESSAGES).len(), 2);
        let report = db.verify().expect("verify");
        assert!(report.is_clean(), "{:?}", report.problems);

        // It all stands after a reopen, and the audit log tells it.
        close(db);
        let db = store.open();
        assert_eq!(db.get("acct", MESSAGES, b"m2").expect("get"), None);
        assert_eq!(values(&db, "acct", MESSAGES).len(), 2);
        let tag = db.subject_tag("acct");
        assert!(
            db.audit_entries(1, usize::MAX)
                .expect("audit")
                .iter()
                .any(|e| e.subject == Some(tag)
                    && e.event == shredkv::AuditEvent::ReRegistered
                    && e.detail.contains(MESSAGES)),
            "the re-opening is audited"
        );

        // Erased again: the new data goes too, and the ledger says so.
        store.clock().advance(SignedDuration::from_secs(5));
        let receipt = db
            .shred("acct", Classes::Only(&[MESSAGES]))
            .expect("shred again");
        assert!(receipt.keys_destroyed() > 0, "the new keys are destroyed");
        assert!(
            db.get("acct", MESSAGES, b"m4")
                .expect_err("erased again")
                .is_erased()
        );
        let cert = db.certificate("acct").expect("certificate");
        assert_eq!(cert.erasures.len(), 1);
        assert_eq!(
            cert.erasures[0].reopened_at, None,
            "the latest erasure stands"
        );
        assert_eq!(cert.keys_live_in_erased_scopes, 0);
    });
}

/// After a whole subject is registered again, its certificate still covers
/// the erasure and counts the new keys and records as new data: before, every
/// live key of the subject read as "a key of an erased scope still live" and
/// the certificate stayed pending for ever.
#[test]
fn a_certificate_after_re_registration_counts_only_the_erasures_residue() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.put("acct", MESSAGES, b"m1", b"old").expect("put");
        db.put("acct", PROFILE, b"p1", b"old").expect("put");
        db.shred("acct", Classes::All).expect("shred");
        store.clock().advance(SignedDuration::from_secs(5));
        db.re_register("acct").expect("re-register");
        db.put("acct", MESSAGES, b"m2", b"new").expect("put");
        db.put("acct", PROFILE, b"p2", b"new").expect("put");
        let cert = db.certificate("acct").expect("certificate");
        assert_eq!(cert.erasures.len(), 1, "{cert:?}");
        assert_eq!(cert.keys_live_in_erased_scopes, 0, "{cert:?}");
        assert_eq!(
            cert.dead_records_remaining, 2,
            "the two erased records: {cert:?}"
        );
        store.clock().advance(DAY);
        db.compact().expect("compact");
        let cert = db.certificate("acct").expect("certificate");
        assert_eq!(cert.dead_records_remaining, 0, "{cert:?}");
        assert_eq!(cert.keys_live_in_erased_scopes, 0, "{cert:?}");
        assert_eq!(values(&db, "acct", MESSAGES), vec![b"new".to_vec()]);
    });
}

#[test]
fn refused_where_the_class_cannot_hold_data_again() {
    for_each_backend(|store| {
        let db = store.open();
        assert!(matches!(
            db.re_register_class("ghost", MESSAGES),
            Err(Error::UnknownSubject { .. })
        ));
        db.register_account("acct").expect("register");
        db.register_end_user("user", "acct").expect("register");
        assert!(matches!(
            db.re_register_class("acct", "no_such_class"),
            Err(Error::UnknownClass { .. })
        ));

        // Erased as a whole: the subject comes back, not one class.
        db.register_account("whole").expect("register");
        db.put("whole", MESSAGES, b"k", b"v").expect("put");
        db.shred("whole", Classes::All).expect("shred");
        assert!(
            conflict(db.re_register_class("whole", MESSAGES), "whole")
                .contains("re-register the subject")
        );

        // An erasure parked behind a hold: refused until the release.
        db.register_account("held").expect("register");
        db.put("held", MESSAGES, b"k", b"v").expect("put");
        db.put("held", INVOICES, b"k", b"v").expect("put");
        db.place_hold("held", Some(INVOICES), "case 1")
            .expect("hold");
        db.shred("held", Classes::All)
            .expect("shred, invoices parked");
        assert!(conflict(db.re_register_class("held", MESSAGES), "parked").contains("legal hold"));
        db.release_hold("held", Some(INVOICES)).expect("release");
        assert!(
            conflict(db.re_register_class("held", MESSAGES), "after release")
                .contains("re-register the subject"),
            "the parked erasure finished the subject"
        );

        // An end user of a closed account, and the account.
        db.put("user", MESSAGES, b"k", b"v").expect("put");
        db.shred("user", Classes::Only(&[MESSAGES])).expect("shred");
        db.close_account("acct").expect("close");
        assert!(matches!(
            db.re_register_class("user", MESSAGES),
            Err(Error::Closed { .. })
        ));
        db.shred("acct", Classes::Only(&[MESSAGES])).expect("shred");
        assert!(matches!(
            db.re_register_class("acct", MESSAGES),
            Err(Error::Closed { .. })
        ));

        // An end user whose account is erased.
        db.register_account("gone").expect("register");
        db.register_end_user("orphan", "gone").expect("register");
        db.put("orphan", MESSAGES, b"k", b"v").expect("put");
        db.shred("orphan", Classes::Only(&[MESSAGES]))
            .expect("shred");
        db.shred("gone", Classes::All).expect("shred");
        assert!(db.re_register_class("orphan", MESSAGES).is_err());
    });
}

#[test]
fn an_opted_out_marketing_class_is_not_reopened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = tempfile::tempdir().expect("temp dir");
    let db = Db::open(
        Config::new(dir.path().join("store"))
            .key_file(keys.path().join("keys"))
            .maintenance_every(None),
    )
    .expect("open with the default policy");
    db.register_account("acct").expect("register");
    db.put("acct", "marketing_contacts", b"k", b"v")
        .expect("put");
    db.shred("acct", Classes::Only(&["marketing_contacts"]))
        .expect("shred");
    db.opt_out_of_marketing("acct").expect("opt out");
    let detail = conflict(
        db.re_register_class("acct", "marketing_contacts"),
        "opted out",
    );
    assert!(detail.contains("clock"), "{detail}");
    // Before the opt-out it would have been taken back: the refusal is the
    // opt-out's, not the erasure's.
    db.register_account("other").expect("register");
    db.put("other", "marketing_contacts", b"k", b"v")
        .expect("put");
    db.shred("other", Classes::Only(&["marketing_contacts"]))
        .expect("shred");
    db.re_register_class("other", "marketing_contacts")
        .expect("re-open");
}

/// Restores replay the erasure and the re-opening: from a backup taken
/// before the erasure (the erased records stay erased, the class takes data)
/// and from one taken between the erasure and the re-opening.
#[test]
fn restores_carry_the_erasure_and_the_reopening() {
    for_each_backend(|store| {
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let live = store.open();
        live.register_account("acct").expect("register");
        live.put("acct", MESSAGES, b"m1", b"erased message")
            .expect("put");
        live.put("acct", PROFILE, b"email", b"kept").expect("put");
        let before = elsewhere.path().join("before");
        live.backup(&before).expect("backup");
        store.clock().advance(SignedDuration::from_secs(5));
        live.shred("acct", Classes::Only(&[MESSAGES]))
            .expect("shred");
        let between = elsewhere.path().join("between");
        live.backup(&between).expect("backup");
        store.clock().advance(SignedDuration::from_secs(5));
        live.re_register_class("acct", MESSAGES).expect("re-open");
        live.put("acct", MESSAGES, b"m2", b"new message")
            .expect("put");
        let log = elsewhere.path().join("erasures.log");
        live.export_erasure_log(&log)
            .expect("export the erasure log");

        for (name, backup) in [("before", &before), ("between", &between)] {
            let target = elsewhere.path().join(format!("restored-{name}"));
            let (restored, _) =
                Db::restore(backup, store.config_at(&target), ErasureSource::File(&log))
                    .unwrap_or_else(|e| panic!("restore from {name}: {e}"));
            assert_eq!(
                restored.get("acct", MESSAGES, b"m1").expect("get"),
                None,
                "{name}: the erased record stays erased"
            );
            assert_eq!(
                restored
                    .get("acct", PROFILE, b"email")
                    .expect("get")
                    .as_deref(),
                Some(&b"kept"[..])
            );
            restored
                .put("acct", MESSAGES, b"m3", b"after restore")
                .unwrap_or_else(|e| panic!("{name}: the class is open after the restore: {e}"));
            let cert = restored.certificate("acct").expect("certificate");
            assert!(cert.erasures[0].reopened_at.is_some(), "{name}");
            assert_eq!(cert.keys_live_in_erased_scopes, 0, "{name}");
            let report = restored.verify().expect("verify");
            assert!(report.is_clean(), "{name}: {:?}", report.problems);
        }
    });
}

/// Writers race shreds and re-openings of their class. Judged by each
/// operation's place in one global order of starts and ends: a write that
/// ended before a shred began is erased; a write that began after the last
/// re-opening ended is readable; nothing ever fails but as erased.
#[test]
fn writers_racing_shreds_and_reopenings_lose_nothing_they_were_promised() {
    for_each_backend(|store| {
        let db = Arc::new(store.open());
        db.register_account("acct").expect("register");
        let clock = Arc::new(AtomicU64::new(0));
        let tick = {
            let clock = Arc::clone(&clock);
            move || clock.fetch_add(1, Ordering::SeqCst)
        };
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..2u64 {
            let (db, acked, stop, tick) = (
                Arc::clone(&db),
                Arc::clone(&acked),
                Arc::clone(&stop),
                tick.clone(),
            );
            writers.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("w{w}-{n}").into_bytes();
                    n += 1;
                    let start = tick();
                    match db.put("acct", MESSAGES, &key, &key) {
                        Ok(()) => acked.lock().expect("lock").push((start, tick(), key)),
                        Err(e) if e.is_erased() => {}
                        Err(e) => panic!("a put failed otherwise than erased: {e}"),
                    }
                }
            }));
        }
        // (start, end) of every shred.
        let mut shreds: Vec<(u64, u64)> = Vec::new();
        let mut rng = Rng::new(7);
        for _ in 0..40 {
            std::thread::yield_now();
            let start = tick();
            db.shred("acct", Classes::Only(&[MESSAGES])).expect("shred");
            shreds.push((start, tick()));
            if rng.below(3) == 0 {
                std::thread::yield_now();
            }
            db.re_register_class("acct", MESSAGES).expect("re-open");
        }
        let last_reopened = tick();
        // Let the writers land some writes after the last re-opening (a
        // class that never takes writes again fails here, not by hanging).
        let waiting = std::time::Instant::now();
        while acked
            .lock()
            .expect("lock")
            .iter()
            .filter(|(start, _, _)| *start > last_reopened)
            .count()
            < 20
        {
            assert!(
                waiting.elapsed() < std::time::Duration::from_secs(60),
                "no write was acknowledged after the last re-opening"
            );
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().expect("writer");
        }
        let acked = acked.lock().expect("lock").clone();
        let (mut erased, mut kept) = (0, 0);
        for (start, end, key) in &acked {
            let got = db.get("acct", MESSAGES, key).expect("get");
            if shreds.iter().any(|(s, _)| end < s) {
                assert_eq!(
                    got, None,
                    "a write acknowledged before a shred began survived it"
                );
                erased += 1;
            } else if *start > last_reopened {
                assert_eq!(
                    got.as_deref(),
                    Some(&key[..]),
                    "an acknowledged write was lost"
                );
                kept += 1;
            }
        }
        assert!(erased > 0 && kept >= 20, "erased {erased}, kept {kept}");
        let report = db.verify().expect("verify");
        assert!(report.is_clean(), "{:?}", report.problems);
    });
}
