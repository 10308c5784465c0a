//! Class handles: `Db::class` resolves a class once (a typo fails there,
//! typed), and every method that takes a class takes the handle or the name
//! with the same effect; a handle of another store is refused, even for a
//! class of the same name.

use shredkv::{Batch, Error, ScanOptions};
use shredkv_tests::{INVOICES, MESSAGES, Store, for_each_backend};

#[test]
fn a_handle_works_wherever_a_name_does() {
    for_each_backend(|store| {
        let db = store.open();
        let messages = db.class(MESSAGES).expect("resolve");
        let invoices = db.class(INVOICES).expect("resolve");
        assert_ne!(messages, invoices);
        assert_eq!(db.class_name_of(messages).expect("name"), MESSAGES);
        assert!(matches!(
            db.class("message_contnet"),
            Err(Error::UnknownClass { class }) if class == "message_contnet"
        ));

        db.register_account("acct").expect("register");
        db.put("acct", messages, b"by-handle", b"1").expect("put");
        db.put("acct", MESSAGES, b"by-name", b"2").expect("put");
        let mut batch = Batch::new();
        batch
            .put("acct", invoices, b"i1", b"3")
            .put("acct", invoices, b"i2", b"4");
        db.apply(batch).expect("apply");
        assert_eq!(
            db.get("acct", MESSAGES, b"by-handle")
                .expect("get")
                .as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            db.get("acct", messages, b"by-name")
                .expect("get")
                .as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(db.scan("acct", invoices).expect("scan").len(), 2);
        assert_eq!(
            db.scan_page("acct", invoices, &ScanOptions::all().reversed(), None, 1)
                .expect("page")
                .records[0]
                .key,
            b"i2"
        );
        assert_eq!(db.records("acct", messages, ScanOptions::all()).count(), 2);
        assert!(db.delete("acct", messages, b"by-name").expect("delete"));
        assert_eq!(db.get("acct", MESSAGES, b"by-name").expect("get"), None);
    });
}

#[test]
fn a_handle_of_another_store_is_refused() {
    for_each_backend(|store| {
        let other = Store::new(store.backend());
        let theirs = other.open().class(MESSAGES).expect("resolve");
        let db = store.open();
        db.register_account("acct").expect("register");
        for result in [
            db.put("acct", theirs, b"k", b"v").map(drop),
            db.get("acct", theirs, b"k").map(drop),
            db.scan("acct", theirs).map(drop),
        ] {
            assert!(
                matches!(
                    result,
                    Err(Error::InvalidArgument {
                        what: "class handle",
                        ..
                    })
                ),
                "{result:?}"
            );
        }
        // The same store reopened: its handles stay good.
        let ours = db.class(MESSAGES).expect("resolve");
        drop(db);
        let db = store.open();
        db.put("acct", ours, b"k", b"v")
            .expect("a handle of this store");
    });
}
