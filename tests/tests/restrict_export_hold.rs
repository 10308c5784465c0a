//! Restriction and legal holds, on both backends and across reopening:
//! a restricted subject's records cannot be read or written but can be
//! exported (and erased); lifting the restriction restores access. A legal
//! hold blocks the shred of the held class (or of the whole subject): the
//! receipt lists the held scope as retained with the hold's reason, its
//! data stays readable, and the other classes are erased; holds are listed
//! by `holds()`, survive reopening, and once released the class is erased
//! by the next shred. Placing, releasing, restricting and every blocked
//! erasure leave an audit entry (read from the raw `audit` tree).

mod common;

use common::raw_read;
use shredkv::{Classes, Db, Error};
use shredkv_tests::{CLASSES, INVOICES, MESSAGES, PROFILE, Store, for_each_backend};

/// Audit event codes (engine/src/audit.rs, part of the on-disk format).
const RESTRICTED: u8 = 4;
const RESTRICTION_LIFTED: u8 = 5;
const HOLD_PLACED: u8 = 7;
const HOLD_RELEASED: u8 = 8;
const ERASURE_BLOCKED: u8 = 9;

/// How many raw audit entries of `event` name `tag` (the store is closed).
fn audited(store: &Store, tag: &[u8; 16], event: u8) -> usize {
    raw_read(store, "audit")
        .values()
        .filter(|v| v.get(9) == Some(&event) && v.get(10..26) == Some(&tag[..]))
        .count()
}

fn fill(db: &Db, subject: &str) {
    for class in CLASSES {
        db.put(
            subject,
            class,
            b"r",
            format!("{subject}/{class}").as_bytes(),
        )
        .expect("put");
    }
}

fn readable(db: &Db, subject: &str, class: &str) -> bool {
    match db.get(subject, class, b"r") {
        Ok(Some(v)) => {
            assert_eq!(v, format!("{subject}/{class}").into_bytes());
            true
        }
        Ok(None) => panic!("{subject}/{class}: record missing"),
        Err(e) if e.is_erased() => false,
        Err(e) => panic!("{subject}/{class}: {e}"),
    }
}

fn assert_restricted<T: std::fmt::Debug>(result: shredkv::Result<T>, what: &str) {
    assert!(
        matches!(result, Err(Error::Restricted { .. })),
        "{what}: expected Error::Restricted, got {result:?}"
    );
}

#[test]
fn restriction_blocks_reads_and_writes_but_not_export() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.register_account("other").expect("register");
        fill(&db, "acct");
        fill(&db, "other");
        db.restrict("acct").expect("restrict");
        drop(db);

        let db = store.open();
        let tag = db.subject_tag("acct");
        for class in CLASSES {
            let what = format!("{} {class}", db.backend());
            assert_restricted(db.get("acct", class, b"r"), &what);
            assert_restricted(db.get_record("acct", class, b"r"), &what);
            assert_restricted(db.scan("acct", class), &what);
            assert_restricted(db.put("acct", class, b"new", b"x"), &what);
            assert_restricted(db.delete("acct", class, b"r"), &what);
        }
        let text = db
            .get("acct", MESSAGES, b"r")
            .expect_err("restricted")
            .to_string();
        assert!(text.contains(&tag.to_hex()), "{text}");
        // Export (the subject's right of access) still works, and is complete.
        let export = db.export("acct").expect("export a restricted subject");
        assert_eq!(export.subjects.len(), 1);
        assert_eq!(export.subjects[0].tag, tag);
        let classes: Vec<_> = export.subjects[0]
            .classes
            .iter()
            .map(|(c, r)| (c.as_str(), r.len()))
            .collect();
        assert_eq!(classes, vec![(MESSAGES, 1), (INVOICES, 1), (PROFILE, 1)]);
        // Nothing was written while restricted; others are unaffected.
        assert!(readable(&db, "other", MESSAGES));

        db.lift_restriction("acct").expect("lift");
        drop(db);
        let db = store.open();
        for class in CLASSES {
            assert!(readable(&db, "acct", class));
        }
        db.put("acct", MESSAGES, b"new", b"x")
            .expect("put after lifting");

        // A restricted subject can still be erased.
        db.restrict("acct").expect("restrict again");
        db.shred("acct", Classes::All)
            .expect("shred a restricted subject");
        assert!(
            db.get("acct", MESSAGES, b"r")
                .expect_err("erased")
                .is_erased()
        );
        assert!(db.restrict("acct").expect_err("erased").is_erased());
        drop(db);
        assert_eq!(audited(store, &tag.0, RESTRICTED), 2);
        assert_eq!(audited(store, &tag.0, RESTRICTION_LIFTED), 1);
    });
}

#[test]
fn a_class_hold_blocks_its_shred_until_released() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        fill(&db, "acct");
        let tag = db.subject_tag("acct");
        db.place_hold("acct", Some(INVOICES), "case 17")
            .expect("hold");
        let holds = db.holds().expect("holds");
        assert_eq!(holds.len(), 1);
        assert_eq!(holds[0].subject, tag);
        assert_eq!(holds[0].class.as_deref(), Some(INVOICES));
        assert_eq!(holds[0].reason, "case 17");
        assert_eq!(holds[0].placed_at, db.now());

        let receipt = db.shred("acct", Classes::All).expect("shred");
        assert_eq!(receipt.retained.len(), 1, "{receipt:?}");
        let retained = &receipt.retained[0];
        assert_eq!((retained.subject, retained.class.as_str()), (tag, INVOICES));
        assert_eq!(retained.until, None, "a hold has no end date");
        assert!(retained.reason.contains("case 17"), "{retained:?}");
        let mut erased: Vec<_> = receipt
            .erased
            .iter()
            .map(|e| e.class.clone().expect("per-class erasure under a hold"))
            .collect();
        erased.sort();
        assert_eq!(erased, vec![PROFILE.to_string(), MESSAGES.to_string()]);
        drop(db);

        let db = store.open();
        assert!(readable(&db, "acct", INVOICES), "the held class survives");
        assert!(!readable(&db, "acct", MESSAGES));
        assert!(!readable(&db, "acct", PROFILE));
        let export = db.export("acct").expect("export");
        assert_eq!(export.record_count(), 1);
        assert_eq!(db.holds().expect("holds").len(), 1, "holds survive reopen");
        // Shredding again is blocked again.
        let receipt = db.shred("acct", Classes::Only(&[INVOICES])).expect("shred");
        assert_eq!(receipt.retained.len(), 1);
        assert!(receipt.erased.is_empty());
        assert!(readable(&db, "acct", INVOICES));

        assert!(db.release_hold("acct", Some(INVOICES)).expect("release"));
        assert!(
            !db.release_hold("acct", Some(INVOICES))
                .expect("release again")
        );
        assert!(db.holds().expect("holds").is_empty());
        // The release carried out the shreds it had parked, at once: the
        // account is erased without asking again.
        assert!(!readable(&db, "acct", INVOICES));
        assert_eq!(
            db.subject("acct").expect("subject").expect("known").state,
            shredkv::SubjectState::Erased
        );
        let receipt = db.shred("acct", Classes::All).expect("shred again");
        assert!(
            receipt.retained.is_empty() && receipt.erased.is_empty(),
            "nothing left to erase: {receipt:?}"
        );
        drop(db);

        let db = store.open();
        for class in CLASSES {
            assert!(!readable(&db, "acct", class), "{class} after reopen");
        }
        drop(db);
        assert_eq!(audited(store, &tag.0, HOLD_PLACED), 1);
        assert_eq!(audited(store, &tag.0, HOLD_RELEASED), 1);
        assert_eq!(audited(store, &tag.0, ERASURE_BLOCKED), 2);
    });
}

#[test]
fn a_subject_hold_retains_every_class_and_holds_are_listed() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        db.register_end_user("held-user", "acct").expect("register");
        db.register_end_user("free-user", "acct").expect("register");
        for s in ["acct", "held-user", "free-user"] {
            fill(&db, s);
        }
        db.place_hold("held-user", None, "litigation 2026-4")
            .expect("hold the whole subject");
        db.place_hold("acct", Some(MESSAGES), "audit 9")
            .expect("hold");

        let held = db.subject_tag("held-user");
        let mut holds: Vec<_> = db
            .holds()
            .expect("holds")
            .into_iter()
            .map(|h| (h.subject, h.class, h.reason))
            .collect();
        holds.sort();
        let mut want = vec![
            (held, None, "litigation 2026-4".to_string()),
            (
                db.subject_tag("acct"),
                Some(MESSAGES.to_string()),
                "audit 9".to_string(),
            ),
        ];
        want.sort();
        assert_eq!(holds, want);

        let receipt = db.shred("acct", Classes::All).expect("shred");
        let mut retained: Vec<_> = receipt
            .retained
            .iter()
            .map(|r| (r.subject, r.class.clone()))
            .collect();
        retained.sort();
        let mut want: Vec<_> = CLASSES
            .iter()
            .map(|c| (held, c.to_string()))
            .chain([(db.subject_tag("acct"), MESSAGES.to_string())])
            .collect();
        want.sort();
        assert_eq!(retained, want, "{receipt:?}");
        drop(db);

        let db = store.open();
        for class in CLASSES {
            assert!(readable(&db, "held-user", class), "held user {class}");
            assert!(!readable(&db, "free-user", class), "free user {class}");
        }
        assert!(readable(&db, "acct", MESSAGES));
        assert!(!readable(&db, "acct", PROFILE));

        // Typed errors for bad hold requests.
        assert!(matches!(
            db.place_hold("acct", None, "  "),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            db.place_hold("nobody", None, "x"),
            Err(Error::UnknownSubject { .. })
        ));
        assert!(matches!(
            db.place_hold("acct", Some("no_such_class"), "x"),
            Err(Error::UnknownClass { .. })
        ));
        assert!(
            db.place_hold("free-user", None, "too late")
                .expect_err("erased")
                .is_erased()
        );

        assert!(db.release_hold("held-user", None).expect("release"));
        let receipt = db.shred("held-user", Classes::All).expect("shred");
        assert!(receipt.retained.is_empty(), "{receipt:?}");
        for class in CLASSES {
            assert!(!readable(&db, "held-user", class));
        }
        assert_eq!(db.holds().expect("holds").len(), 1);
    });
}
