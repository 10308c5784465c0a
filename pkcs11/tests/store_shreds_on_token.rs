//! A real store on a SoftHSM2 token: written, shredded, reopened; the
//! shredded subject stays unreadable and the others read back.

mod support;

use std::sync::Arc;

use shredkv::{Classes, Config, Db};
use shredkv_crypto::KeyProvider;
use shredkv_pkcs11::Pkcs11KeyProvider;

fn open_store(dir: &std::path::Path) -> Db {
    let provider = Pkcs11KeyProvider::open_or_create(support::config("engine", "store"))
        .unwrap_or_else(|err| panic!("open the provider: {err}"));
    Db::open(Config::new(dir).key_provider(Arc::new(provider)))
        .unwrap_or_else(|err| panic!("open the store: {err}"))
}

#[test]
fn a_store_on_a_token_shreds_and_reopens() {
    support::new_token("engine");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_store(dir.path());
    db.register_account("acct-keep").expect("register");
    db.register_account("acct-gone").expect("register");
    db.register_end_user("user-gone", "acct-gone")
        .expect("register");
    db.put("acct-keep", "account_profile", b"name", b"Ada")
        .expect("put");
    db.put("user-gone", "message_content", b"m1", b"meet at noon")
        .expect("put");
    db.put("acct-gone", "account_profile", b"name", b"Bob")
        .expect("put");
    let receipt = db.shred("acct-gone", Classes::All).expect("shred");
    assert_eq!(receipt.erased.len(), 2, "the account and its end user");
    assert!(
        db.get("user-gone", "message_content", b"m1")
            .expect_err("erased")
            .is_erased()
    );
    drop(db);

    let db = open_store(dir.path());
    for (subject, class, key) in [
        ("user-gone", "message_content", &b"m1"[..]),
        ("acct-gone", "account_profile", b"name"),
    ] {
        let err = db.get(subject, class, key).expect_err("still erased");
        assert!(err.is_erased(), "{subject}: {err}");
    }
    assert_eq!(
        db.get("acct-keep", "account_profile", b"name")
            .expect("get")
            .as_deref(),
        Some(&b"Ada"[..])
    );
    drop(db);
    // The store's epoch keys are on the token, under its store label.
    let provider = Pkcs11KeyProvider::open(support::config("engine", "store")).expect("open");
    assert!(!provider.live_epochs().expect("live").is_empty());
    assert!(
        provider.anchor().expect("anchor").is_some(),
        "the store anchors in the token"
    );
}
