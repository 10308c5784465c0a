//! `Db::shred_each` erases several subjects in one durable commit, all or
//! nothing: every named subject (and an account's end users) in the chosen
//! classes, holds honoured per scope, one receipt per distinct subject
//! naming only its own scopes; an unknown subject or class erases nothing.

use shredkv::{Classes, Error};
use shredkv_tests::{INVOICES, MESSAGES, PROFILE, for_each_backend};

#[test]
fn several_subjects_erased_at_once_each_with_its_receipt() {
    for_each_backend(|store| {
        let db = store.open();
        for account in ["a1", "a2", "a3", "bystander"] {
            db.register_account(account).expect("register");
            for class in [MESSAGES, INVOICES, PROFILE] {
                db.put(account, class, b"k", b"v").expect("put");
            }
        }
        db.register_end_user("u1", "a1").expect("register");
        db.put("u1", MESSAGES, b"k", b"v").expect("put");
        db.place_hold("a3", Some(INVOICES), "case 9").expect("hold");

        // Nothing erased when one name is unknown.
        assert!(matches!(
            db.shred_each(&["a1", "nobody"], Classes::All),
            Err(Error::UnknownSubject { .. })
        ));
        assert!(matches!(
            db.shred_each(&["a1"], Classes::Only(&["no_such_class"])),
            Err(Error::UnknownClass { .. })
        ));
        assert!(db.get("a1", MESSAGES, b"k").expect("untouched").is_some());

        let receipts = db
            .shred_each(&["a1", "a3", "a1"], Classes::All)
            .expect("shred");
        assert_eq!(receipts.len(), 2, "one receipt per distinct subject");
        let (r1, r3) = (&receipts[0], &receipts[1]);
        assert_eq!(r1.subject, db.subject_tag("a1"));
        assert_eq!(r3.subject, db.subject_tag("a3"));
        assert_eq!(r1.audit_head, r3.audit_head, "one commit");
        let u1 = db.subject_tag("u1");
        assert!(
            r1.erased.iter().any(|e| e.subject == u1),
            "the end user is in its account's receipt"
        );
        assert!(r3.erased.iter().all(|e| e.subject == r3.subject));
        assert_eq!(r3.retained.len(), 1, "the held class is retained");
        assert!(r1.retained.is_empty());

        for (subject, class) in [
            ("a1", MESSAGES),
            ("u1", MESSAGES),
            ("a3", MESSAGES),
            ("a3", PROFILE),
        ] {
            assert!(
                db.get(subject, class, b"k").is_err(),
                "{subject}/{class} erased"
            );
        }
        assert!(db.get("a3", INVOICES, b"k").expect("held").is_some());
        for class in [MESSAGES, INVOICES, PROFILE] {
            assert!(db.get("a2", class, b"k").expect("a2 untouched").is_some());
            assert!(
                db.get("bystander", class, b"k")
                    .expect("untouched")
                    .is_some()
            );
        }
        // Durable: the erasure stands after a reopen.
        drop(db);
        let db = store.open();
        assert!(db.get("a1", INVOICES, b"k").is_err());
        assert!(
            db.shred_each(&[], Classes::All)
                .expect("nothing")
                .is_empty()
        );
    });
}
