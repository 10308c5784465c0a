//! G1, a shred is cryptographic erasure, not only a refusal to read: once it
//! returns, every vault entry of the erased scopes is a tombstone in the
//! backend's own files (read here behind shredkv's back, the store closed),
//! and the scopes it did not erase keep their live keys. Reads refusing the
//! scope (the ledger) would hide a shred that forgot its tombstones; this
//! looks at the keys themselves.

mod common;

use common::{KEY_ACTIVE, KEY_DESTROYED, class_number, key_states};
use shredkv::{Classes, PutOptions};
use shredkv_tests::{INVOICES, MESSAGES, PROFILE, Store, close, for_each_backend};

/// The states of the vault entries of one scope (subject tag ‖ class).
fn scope_states(store: &Store, tag: &[u8; 16], class: &str) -> Vec<u8> {
    let number = class_number(store, class);
    key_states(store, tag)
        .into_iter()
        .filter(|(id, _)| id.get(16..18) == Some(&number[..]))
        .map(|(_, state)| state)
        .collect()
}

/// Whether a key id (tag ‖ class ‖ bucket ‖ version) names an expiry
/// bucket's key (bucket 2 + day), kept in the vault's day lane.
fn is_expiry_key(id: &[u8]) -> bool {
    id.get(18..22)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .is_some_and(|b| u32::from_be_bytes(b) >= 2)
}

fn fill(store: &Store, subject: &str) -> [u8; 16] {
    let db = store.open();
    db.register_account(subject).expect("register");
    for class in [MESSAGES, INVOICES, PROFILE] {
        for key in [&b"one"[..], b"two"] {
            db.put(subject, class, key, b"a value to erase")
                .expect("put");
        }
    }
    // Records with an expiry: their keys are in the day lane.
    for days in [3, 40] {
        let expiry = shredkv::Clock::now(store.clock())
            + shredkv::jiff::SignedDuration::from_hours(24 * days);
        db.put_with(
            subject,
            MESSAGES,
            format!("expiring-{days}").as_bytes(),
            b"a value to erase",
            PutOptions::expires_at(expiry),
        )
        .expect("put an expiring record");
    }
    let tag = db.subject_tag(subject).0;
    close(db);
    assert_eq!(
        key_states(store, &tag)
            .iter()
            .filter(|(id, _)| is_expiry_key(id))
            .count(),
        2,
        "one expiry key per day"
    );
    tag
}

#[test]
fn a_one_class_shred_leaves_only_tombstones_in_that_scope() {
    for_each_backend(|store| {
        let tag = fill(store, "partly");
        for class in [MESSAGES, INVOICES] {
            let states = scope_states(store, &tag, class);
            assert!(!states.is_empty(), "{class}: no keys before the shred");
            assert!(
                states.iter().all(|s| *s == KEY_ACTIVE),
                "{class}: {states:?}"
            );
        }
        let db = store.open();
        db.shred("partly", Classes::Only(&[MESSAGES]))
            .expect("shred one class");
        close(db);
        let erased = scope_states(store, &tag, MESSAGES);
        assert!(
            !erased.is_empty() && erased.iter().all(|s| *s == KEY_DESTROYED),
            "{}: keys of the shredded class not all destroyed: {erased:?}",
            store.backend()
        );
        for class in [INVOICES, PROFILE] {
            let kept = scope_states(store, &tag, class);
            assert!(
                !kept.is_empty() && kept.iter().all(|s| *s == KEY_ACTIVE),
                "{}: {class} was not shredded: {kept:?}",
                store.backend()
            );
        }
    });
}

#[test]
fn a_whole_subject_shred_leaves_only_tombstones() {
    for_each_backend(|store| {
        let tag = fill(store, "wholly");
        let other = fill(store, "bystander");
        let db = store.open();
        db.shred("wholly", Classes::All).expect("shred");
        close(db);
        let states = key_states(store, &tag);
        assert!(
            states.len() >= 3 && states.iter().all(|(_, s)| *s == KEY_DESTROYED),
            "{}: {states:?}",
            store.backend()
        );
        let kept = key_states(store, &other);
        assert!(
            !kept.is_empty() && kept.iter().all(|(_, s)| *s == KEY_ACTIVE),
            "{}: the other subject lost keys: {kept:?}",
            store.backend()
        );
    });
}
