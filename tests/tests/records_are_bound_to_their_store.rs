//! G5, a record's envelope is bound to its store: its associated data starts
//! with the store id (`records.rs`: store id ‖ subject tag ‖ class ‖ record
//! part). A store whose recorded id was altered behind shredkv's back (its
//! records passed off as another store's) serves none of them as data: every
//! read fails authentication, naming the subject and class.

mod common;

use common::{Raw, raw_read, raw_write};
use shredkv::Error;
use shredkv_tests::{INVOICES, MESSAGES, close, for_each_backend};

#[test]
fn records_fail_authentication_under_an_altered_store_id() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("bound").expect("register");
        for class in [MESSAGES, INVOICES] {
            db.put("bound", class, b"k", class.as_bytes()).expect("put");
        }
        let tag = db.subject_tag("bound").to_hex();
        close(db);

        let meta = raw_read(store, "meta");
        let mut id = meta.get(&b"store_id"[..]).expect("a store id").clone();
        assert_eq!(id.len(), 16, "the store id is 16 bytes");
        id[0] ^= 0x01;
        let mut changes = Raw::new();
        changes.insert(b"store_id".to_vec(), id);
        raw_write(store, "meta", &changes);

        let db = store.open();
        for class in [MESSAGES, INVOICES] {
            let err = db
                .get("bound", class, b"k")
                .expect_err("a record read under another store id");
            assert!(
                matches!(err, Error::Tampered { .. }),
                "{} {class}: expected an authentication failure, got {err}",
                store.backend()
            );
            let text = err.to_string();
            assert!(text.contains(&tag), "no subject tag in `{text}`");
            assert!(text.contains(&format!("`{class}`")), "no class in `{text}`");
        }
    });
}
