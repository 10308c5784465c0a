//! G1, logical erasure is immediate and durable: once `shred` returns, no
//! `get`, `get_record`, `scan` or `export` returns the erased data, and
//! closing and reopening the store (on sled and on redb) does not bring it
//! back. Shredding some classes keeps the others; erasing an account erases
//! its end users and nobody else.

use shredkv::{Classes, Db, Error, SubjectState};
use shredkv_tests::{CLASSES, INVOICES, MESSAGES, PROFILE, close, for_each_backend};

/// Writes two records per class for `subject`, values naming subject and class.
fn fill(db: &Db, subject: &str) {
    for class in CLASSES {
        for key in ["r1", "r2"] {
            db.put(subject, class, key.as_bytes(), &value(subject, class, key))
                .expect("put");
        }
    }
}

fn value(subject: &str, class: &str, key: &str) -> Vec<u8> {
    format!("{subject}/{class}/{key}").into_bytes()
}

/// Asserts that every read path reports `subject`'s `class` as erased.
fn assert_class_erased(db: &Db, subject: &str, class: &str) {
    let what = format!("{subject}/{class} on {}", db.backend());
    for key in ["r1", "r2", "never-written"] {
        let err = db
            .get(subject, class, key.as_bytes())
            .expect_err(&format!("get of erased {what}"));
        assert!(err.is_erased(), "{what}: get gave {err}");
        let err = db
            .get_record(subject, class, key.as_bytes())
            .expect_err(&format!("get_record of erased {what}"));
        assert!(err.is_erased(), "{what}: get_record gave {err}");
    }
    let err = db
        .scan(subject, class)
        .expect_err(&format!("scan of erased {what}"));
    assert!(err.is_erased(), "{what}: scan gave {err}");
    let mut visited = 0;
    let err = db
        .scan_with(subject, class, &mut |_| {
            visited += 1;
            std::ops::ControlFlow::Continue(())
        })
        .expect_err(&format!("scan_with of erased {what}"));
    assert!(err.is_erased(), "{what}: scan_with gave {err}");
    assert_eq!(visited, 0, "{what}: scan_with visited erased records");
}

/// Asserts that `subject`'s `class` still holds exactly what [`fill`] wrote.
fn assert_class_intact(db: &Db, subject: &str, class: &str) {
    let what = format!("{subject}/{class} on {}", db.backend());
    for key in ["r1", "r2"] {
        assert_eq!(
            db.get(subject, class, key.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: get failed: {e}")),
            Some(value(subject, class, key)),
            "{what}/{key}"
        );
    }
    let mut got: Vec<_> = db
        .scan(subject, class)
        .unwrap_or_else(|e| panic!("{what}: scan failed: {e}"))
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect();
    got.sort();
    let want: Vec<_> = ["r1", "r2"]
        .iter()
        .map(|k| (k.as_bytes().to_vec(), value(subject, class, k)))
        .collect();
    assert_eq!(got, want, "{what}: scan");
}

fn assert_subject_erased(db: &Db, subject: &str) {
    for class in CLASSES {
        assert_class_erased(db, subject, class);
    }
    let err = db.export(subject).expect_err("export of an erased subject");
    assert!(matches!(err, Error::Erased { class: None, .. }), "{err}");
    assert_eq!(
        db.subject(subject).expect("subject").map(|s| s.state),
        Some(SubjectState::Erased),
        "{subject} on {}",
        db.backend()
    );
}

#[test]
fn shredded_account_and_its_end_users_stay_erased_after_reopen() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.register_end_user("user-1", "acct").expect("register");
        db.register_end_user("user-2", "acct").expect("register");
        db.register_account("bystander").expect("register");
        db.register_end_user("bystander-user", "bystander")
            .expect("register");
        for s in ["acct", "user-1", "user-2", "bystander", "bystander-user"] {
            fill(&db, s);
        }
        // Buffered writes, not flushed: shred must make itself durable.
        let receipt = db.shred("acct", Classes::All).expect("shred");
        let mut erased: Vec<_> = receipt.erased.iter().map(|e| e.subject).collect();
        erased.sort();
        let mut want: Vec<_> = ["acct", "user-1", "user-2"]
            .iter()
            .map(|s| db.subject_tag(s))
            .collect();
        want.sort();
        assert_eq!(erased, want, "the receipt names the account and its users");
        assert!(receipt.retained.is_empty());
        // Per subject: a data key per class, a blinding key per blinded class.
        assert!(
            receipt.erased.iter().all(|e| e.keys_destroyed == 5),
            "{receipt:?}"
        );
        assert_eq!(receipt.subject, db.subject_tag("acct"));

        for s in ["acct", "user-1", "user-2"] {
            assert_subject_erased(&db, s);
        }
        let export = db.export("bystander").expect("export");
        assert_eq!(export.record_count(), 12, "bystander and its user intact");
        drop(db);

        let db = store.open();
        for s in ["acct", "user-1", "user-2"] {
            assert_subject_erased(&db, s);
        }
        for s in ["bystander", "bystander-user"] {
            for class in CLASSES {
                assert_class_intact(&db, s, class);
            }
        }
        assert_eq!(db.export("bystander").expect("export").record_count(), 12);
        // Erasing again erases nothing more, also after reopen: the answer
        // is the erasure's own receipt (a retry after a lost answer).
        let head = db.verify_audit().expect("verify").head;
        let again = db.shred("acct", Classes::All).expect("shred again");
        assert_eq!(again, receipt);
        assert_eq!(
            db.verify_audit().expect("verify").head,
            head,
            "nothing written"
        );
        close(db);

        // And once more, after a clean close.
        let db = store.open();
        for s in ["acct", "user-1", "user-2"] {
            assert_subject_erased(&db, s);
        }
    });
}

#[test]
fn shredding_some_classes_keeps_the_others_across_reopen() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.register_end_user("user", "acct").expect("register");
        fill(&db, "acct");
        fill(&db, "user");
        let receipt = db
            .shred("acct", Classes::Only(&[MESSAGES, INVOICES]))
            .expect("shred");
        // Per class, for the account and for its end user.
        assert_eq!(receipt.erased.len(), 4, "{receipt:?}");
        assert!(
            receipt
                .erased
                .iter()
                .all(|e| matches!(e.class.as_deref(), Some(MESSAGES | INVOICES))),
            "{receipt:?}"
        );

        let check = |db: &Db| {
            for s in ["acct", "user"] {
                assert_class_erased(db, s, MESSAGES);
                assert_class_erased(db, s, INVOICES);
                assert_class_intact(db, s, PROFILE);
                assert_eq!(
                    db.subject(s).expect("subject").map(|i| i.state),
                    Some(SubjectState::Active),
                    "a class erasure leaves the subject active"
                );
            }
            let export = db.export("acct").expect("export");
            assert_eq!(export.subjects.len(), 2);
            for subject in &export.subjects {
                let classes: Vec<_> = subject.classes.iter().map(|(c, _)| c.as_str()).collect();
                assert_eq!(classes, vec![PROFILE], "export of {}", subject.tag);
            }
            assert_eq!(export.record_count(), 4);
        };
        check(&db);
        drop(db);
        let db = store.open();
        check(&db);

        // Then the rest: everything is gone, and the subject is erased.
        let receipt = db.shred("acct", Classes::All).expect("shred the rest");
        assert_eq!(receipt.erased.len(), 2, "{receipt:?}");
        drop(db);
        let db = store.open();
        assert_subject_erased(&db, "acct");
        assert_subject_erased(&db, "user");
    });
}

#[test]
fn shredding_an_end_user_leaves_its_account_and_siblings() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.register_end_user("leaver", "acct").expect("register");
        db.register_end_user("stayer", "acct").expect("register");
        for s in ["acct", "leaver", "stayer"] {
            fill(&db, s);
        }
        let receipt = db.shred("leaver", Classes::All).expect("shred");
        assert_eq!(receipt.erased.len(), 1);
        assert_eq!(receipt.erased[0].subject, db.subject_tag("leaver"));
        drop(db);

        let db = store.open();
        assert_subject_erased(&db, "leaver");
        for s in ["acct", "stayer"] {
            for class in CLASSES {
                assert_class_intact(&db, s, class);
            }
        }
        // The account's export no longer includes the erased user's data.
        let export = db.export("acct").expect("export");
        assert!(
            export
                .subjects
                .iter()
                .all(|s| s.tag != db.subject_tag("leaver")),
            "{export:?}"
        );
        assert_eq!(export.record_count(), 12);
    });
}

/// After an erasure and a re-registration, `delete` must not report an
/// erased record as existing: that would tell the caller what was erased.
///
/// In an ordered class the old envelope still lies under the same stored
/// key until compaction; `delete` checks that its key is live before
/// reporting it as existing. (Regression: it once counted any stored bytes
/// as "existed", so `get` and `scan` said absent while `delete` returned
/// `Ok(true)`.)
#[test]
fn delete_reports_erased_records_as_absent() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.put("acct", INVOICES, b"2026-001", b"total 10")
            .expect("put");
        db.shred("acct", Classes::Only(&[INVOICES])).expect("shred");
        drop(db);
        let db = store.open();
        db.re_register("acct").expect("re-register");
        assert_eq!(db.get("acct", INVOICES, b"2026-001").expect("get"), None);
        assert!(db.scan("acct", INVOICES).expect("scan").is_empty());
        assert!(
            !db.delete("acct", INVOICES, b"2026-001").expect("delete"),
            "{}: delete reported an erased record as existing",
            db.backend()
        );
    });
}
