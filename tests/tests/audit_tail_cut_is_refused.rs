//! The audit log's tail is anchored (issue 12): the key provider keeps the
//! position and hash of the store's last durable audit entry, outside the
//! store's files. With the store closed, the backend's `audit` tree is
//! edited directly, as whoever holds the files could:
//!
//! - its last `k` entries removed, for every `k` (the tail cut): refused at
//!   open as rolled back, naming how many durable entries are missing;
//! - its last entry replaced by another entry's bytes, or by a copy of
//!   itself with one byte changed (the tail rewritten): refused, naming the
//!   entry that is not the one anchored;
//! - one entry before the tail removed (the anchored head still matches):
//!   the store opens, and `verify_audit` reports the break.
//!
//! After every trial the original tree is put back and the store opens
//! with the shred standing: a refusal changes nothing.

mod common;

use common::{Raw, raw_read, raw_remove, raw_write};
use shredkv::{Classes, Error, SubjectState};
use shredkv_tests::{INVOICES, MESSAGES, Store, close, for_each_backend};

/// A store with a history: subjects, records, holds placed and released
/// (audited events), a shred; reopened once so the anchor is level with the
/// last entry.
fn history(store: &Store) {
    let db = store.open();
    for subject in ["alice", "bob", "carol", "dan", "erin", "frank"] {
        db.register_account(subject).expect("register");
        db.put(subject, MESSAGES, b"m", subject.as_bytes())
            .expect("put");
        db.put(subject, INVOICES, b"i", b"42 EUR").expect("put");
        db.place_hold(subject, None, "case 7").expect("hold");
        db.release_hold(subject, None).expect("release");
    }
    db.shred("alice", Classes::All).expect("shred");
    close(db);
    close(store.open());
}

/// Puts the audit tree back as `original` was (the trial's edits undone).
fn put_back(store: &Store, original: &Raw) {
    let now = raw_read(store, "audit");
    let extra: Vec<Vec<u8>> = now
        .keys()
        .filter(|k| !original.contains_key(*k))
        .cloned()
        .collect();
    raw_remove(store, "audit", &extra);
    raw_write(store, "audit", original);
}

/// Opening must fail as a rollback whose message contains `names`.
fn assert_refused(store: &Store, names: &str, trial: &str) {
    match shredkv::Db::open(store.config()) {
        Err(err @ Error::StoreRolledBack { .. }) => {
            assert!(err.is_integrity_failure(), "{trial}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(names) && text.contains("restore"),
                "{trial}: the refusal names `{names}` and the way out: {text}"
            );
        }
        Err(err) => panic!("{trial}: expected StoreRolledBack, got {err}"),
        Ok(_) => panic!("{trial}: a store whose audit tail was edited opened"),
    }
}

fn assert_shred_stands(store: &Store, trial: &str) {
    let db = store.open();
    let alice = db.subject("alice").expect("read").expect("known");
    assert_eq!(alice.state, SubjectState::Erased, "{trial}");
    assert!(
        db.get("alice", MESSAGES, b"m")
            .is_err_and(|e| e.is_erased()),
        "{trial}: the shred stands"
    );
    assert_eq!(
        db.get("bob", MESSAGES, b"m").expect("bob reads"),
        Some(b"bob".to_vec()),
        "{trial}"
    );
    drop(db);
}

#[test]
fn an_audit_tail_cut_or_rewritten_is_refused() {
    for_each_backend(|store| {
        history(store);
        let original = raw_read(store, "audit");
        let keys: Vec<Vec<u8>> = original.keys().cloned().collect();
        assert!(keys.len() >= 10, "a history of {} entries", keys.len());
        let (mut cut, mut rewritten) = (0, 0);

        // The tail cut: the last k entries, for every k.
        for k in 1..keys.len() {
            let trial = format!(
                "{}: last {k} of {} entries removed",
                store.backend(),
                keys.len()
            );
            raw_remove(store, "audit", &keys[keys.len() - k..]);
            assert_refused(
                store,
                &format!("{k} durable audit entries are missing"),
                &trial,
            );
            put_back(store, &original);
            cut += 1;
        }

        // The tail rewritten: the last entry replaced by every other entry's
        // bytes, then by itself with each byte changed in turn.
        let last = keys.last().expect("entries").clone();
        let last_value = original.get(&last).expect("last").clone();
        let mut forgeries: Vec<Vec<u8>> = keys[..keys.len() - 1]
            .iter()
            .filter_map(|k| original.get(k).cloned())
            .collect();
        for i in 0..last_value.len() {
            let mut forged = last_value.clone();
            forged[i] ^= 0x01;
            forgeries.push(forged);
        }
        for (n, forged) in forgeries.into_iter().enumerate() {
            let trial = format!("{}: last entry rewritten (forgery {n})", store.backend());
            raw_write(store, "audit", &Raw::from([(last.clone(), forged)]));
            assert_refused(store, "is not the one anchored", &trial);
            put_back(store, &original);
            rewritten += 1;
        }

        // An entry before the tail removed: the anchored head still
        // matches, so the store opens, and the chain check reports it.
        let middle = keys[keys.len() / 2].clone();
        raw_remove(store, "audit", std::slice::from_ref(&middle));
        {
            let db = store.open();
            let report = db.verify_audit().expect("verify");
            assert!(
                !report.breaks.is_empty(),
                "{}: a removed entry before the tail is reported",
                store.backend()
            );
        }
        put_back(store, &original);

        assert_shred_stands(store, &format!("{}: after every trial", store.backend()));
        eprintln!(
            "{}: {} audit entries; {cut} tail cuts and {rewritten} tail rewrites refused, \
             1 removal before the tail reported, 0 opened",
            store.backend(),
            keys.len()
        );
    });
}
