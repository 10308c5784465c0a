//! Subject ids follow one set of rules on every entry point (issue 13): an
//! empty or blank id, white space at either end, a control character and an
//! id over `MAX_SUBJECT_ID_LEN` bytes are refused with
//! `Error::InvalidArgument` naming the rule (never the id), and nothing is
//! written; canonically equal spellings (Unicode NFC and NFD) are one
//! subject, so an erasure requested under either spelling reaches the
//! records written under the other.

use shredkv::{Batch, Classes, Db, ErasureReason, Error, MAX_SUBJECT_ID_LEN};
use shredkv_tests::{MESSAGES, for_each_backend};

fn refused(result: Result<impl std::fmt::Debug, Error>, id: &str, rule: &str) {
    match result {
        Err(Error::InvalidArgument { what, detail }) => {
            assert_eq!(what, "subject id");
            assert!(detail.contains(rule), "{id:?}: {detail}");
            if id.trim().len() > 2 {
                assert!(!detail.contains(id.trim()), "the error repeats the id");
            }
        }
        other => panic!("{id:?}: expected a refusal ({rule}), got {other:?}"),
    }
}

const BAD: [(&str, &str); 6] = [
    ("", "empty"),
    ("  \t ", "only white space"),
    (" alice-id", "white space"),
    ("alice-id\n", "white space"),
    ("ali\0ce-id", "control character"),
    ("ali\u{1b}ce-id", "control character"),
];

fn every_entry_point(db: &Db, id: &str, rule: &str) {
    refused(db.register_account(id), id, rule);
    refused(db.register_end_user(id, "acct"), id, rule);
    refused(db.register_end_user("someone", id), id, rule);
    refused(db.put(id, MESSAGES, b"k", b"v"), id, rule);
    refused(db.get(id, MESSAGES, b"k"), id, rule);
    refused(db.delete(id, MESSAGES, b"k"), id, rule);
    refused(db.scan(id, MESSAGES), id, rule);
    refused(db.export(id), id, rule);
    refused(db.shred(id, Classes::All), id, rule);
    refused(
        db.request_deletion(id, ErasureReason::DeletionRequest),
        id,
        rule,
    );
    refused(db.restrict(id), id, rule);
    refused(db.place_hold(id, None, "case"), id, rule);
    refused(db.certificate(id), id, rule);
    refused(db.subject(id), id, rule);
    let mut batch = Batch::new();
    batch.put(id, MESSAGES, b"k", b"v");
    refused(db.apply(batch), id, rule);
}

#[test]
fn bad_ids_are_refused_everywhere_and_write_nothing() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        let audit_before = db.verify_audit().expect("chain").entries;
        let long = "x".repeat(MAX_SUBJECT_ID_LEN + 1);
        let huge = "y".repeat(1 << 20);
        let mut bad: Vec<(&str, &str)> = BAD.to_vec();
        bad.push((&long, "at most 512"));
        bad.push((&huge, "at most 512"));
        for (id, rule) in bad {
            every_entry_point(&db, id, rule);
        }
        assert_eq!(db.subjects().expect("subjects").len(), 1, "only acct");
        assert_eq!(db.verify_audit().expect("chain").entries, audit_before);
        // At the limit: accepted.
        let longest = "z".repeat(MAX_SUBJECT_ID_LEN);
        db.register_account(&longest).expect("512 bytes is allowed");
    });
}

#[test]
fn nfc_and_nfd_spellings_are_one_subject() {
    for_each_backend(|store| {
        let composed = "zo\u{eb}@example.com"; // ë as one code point
        let decomposed = "zoe\u{308}@example.com"; // e + combining diaeresis
        let db = store.open();
        db.register_account(decomposed).expect("register");
        assert_eq!(db.subject_tag(composed), db.subject_tag(decomposed));
        db.put(composed, MESSAGES, b"k", b"v").expect("put");
        assert_eq!(
            db.get(decomposed, MESSAGES, b"k").expect("get").as_deref(),
            Some(&b"v"[..])
        );
        db.shred(decomposed, Classes::All).expect("shred");
        assert!(
            db.get(composed, MESSAGES, b"k").is_err(),
            "erased under either spelling"
        );
        // Case is not folded: another subject.
        assert_ne!(
            db.subject_tag("Zo\u{eb}@example.com"),
            db.subject_tag(composed)
        );
    });
}
