//! The control plane is sealed: with the store closed, an attacker who can
//! write the backend's files but holds no key edits, forges and moves the
//! values the engine decides by — holds, deadlines, subject records, the
//! ledger, seal counts, re-key debts, the class numbering, the format byte —
//! recomputing every CRC as a forger would. Each edit is refused where it is
//! read or reported by `verify`: a forged hold neither blocks an erasure
//! silently nor is ignored, a moved subject record or ledger entry gives no
//! access and erases nothing, a lowered seal count is not counted from,
//! renumbered classes refuse the store. Deadlines that fail their MAC are
//! reported and still acted on: damage must never drop an erasure.
//!
//! What a MAC cannot show — a value *removed* — is found by `verify` for the
//! removal that matters most (a live expiry key left without a destruction
//! deadline); other removals are out of reach by design
//! (docs/threat-model.md).

mod common;

use common::{Raw, crc32, raw_read, raw_remove, raw_write};
use shredkv::{Classes, Db, Error, PutOptions};
use shredkv_tests::{INVOICES, MESSAGES, Store, close, for_each_backend};

const MAC_LEN: usize = 16;

/// `key` with every occurrence of the tag `from` replaced by `to`.
fn retag(key: &[u8], from: &[u8; 16], to: &[u8; 16]) -> Vec<u8> {
    let mut out = key.to_vec();
    if let Some(at) = out.windows(16).position(|w| w == from) {
        out[at..at + 16].copy_from_slice(to);
    }
    out
}

/// The single entry of `tree` whose key holds `tag`.
fn entry_of(raw: &Raw, tag: &[u8; 16]) -> (Vec<u8>, Vec<u8>) {
    let found: Vec<_> = raw
        .iter()
        .filter(|(k, _)| k.windows(16).any(|w| w == tag))
        .collect();
    assert!(!found.is_empty(), "no entry holds the tag");
    let (k, v) = found[0];
    (k.clone(), v.clone())
}

/// A control value (`body ‖ CRC ‖ MAC`) with byte `at` of its body changed
/// and its CRC recomputed; the MAC kept, as a forger without the key must.
fn edit_with_crc(stored: &[u8], at: usize, to: u8) -> Vec<u8> {
    let mut value = stored.to_vec();
    let crc_at = value.len() - MAC_LEN - 4;
    value[at] = to;
    let crc = crc32(&value[..crc_at]);
    value[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    value
}

fn tag(db: &Db, subject: &str) -> [u8; 16] {
    db.subject_tag(subject).0
}

/// A store with three accounts: alice (a message expiring in two days and
/// a kept one), bob (one message, under a legal hold), carol (shredded).
/// Returns their tags.
fn populate(store: &Store) -> [[u8; 16]; 3] {
    let db = store.open();
    for s in ["alice", "bob", "carol"] {
        db.register_account(s).expect("register");
    }
    let in_two_days = db.now() + shredkv::jiff::SignedDuration::from_hours(48);
    db.put_with(
        "alice",
        MESSAGES,
        b"expiring",
        b"v",
        PutOptions::expires_at(in_two_days),
    )
    .expect("put");
    db.put("alice", MESSAGES, b"kept", b"v").expect("put");
    db.put("alice", MESSAGES, b"gone", b"v").expect("put");
    // A delete leaves a re-key debt on alice's key.
    db.delete("alice", MESSAGES, b"gone").expect("delete");
    db.put("bob", MESSAGES, b"held", b"v").expect("put");
    db.put("bob", INVOICES, b"inv", b"v").expect("put");
    db.place_hold("bob", None, "case 7").expect("hold");
    db.shred("carol", Classes::All).expect("shred");
    let tags = [tag(&db, "alice"), tag(&db, "bob"), tag(&db, "carol")];
    close(db);
    tags
}

/// The problems `verify` reports in `tree`.
fn problems_in(db: &Db, tree: &str) -> Vec<String> {
    db.verify()
        .expect("verify")
        .problems
        .into_iter()
        .filter(|p| p.location.tree == tree)
        .map(|p| p.detail)
        .collect()
}

fn fails_its_mac(err: &Error) -> bool {
    err.to_string()
        .contains("fails its MAC under the store secret")
}

#[test]
fn an_untouched_store_verifies_clean_and_every_control_value_carries_a_mac() {
    for_each_backend(|store| {
        populate(store);
        for tree in ["subjects", "holds", "ledger", "seals", "deadlines", "debts"] {
            let raw = raw_read(store, tree);
            assert!(!raw.is_empty(), "{tree} holds values");
        }
        let db = store.open();
        assert_eq!(db.verify().expect("verify").problems, Vec::new());
    });
}

#[test]
fn a_forged_hold_is_refused_not_obeyed_and_reported() {
    for_each_backend(|store| {
        let [alice, bob, _] = populate(store);
        let (key, value) = entry_of(&raw_read(store, "holds"), &bob);
        raw_write(
            store,
            "holds",
            &Raw::from([(retag(&key, &bob, &alice), value)]),
        );
        let db = store.open();
        match db.shred("alice", Classes::All) {
            Err(err) if fails_its_mac(&err) => {}
            other => panic!("a forged hold must be refused, got {other:?}"),
        }
        assert_eq!(
            db.get("alice", MESSAGES, b"kept").ok().flatten().as_deref(),
            Some(&b"v"[..]),
            "nothing was erased"
        );
        assert!(!problems_in(&db, "holds").is_empty());
        // The real hold still holds.
        db.shred("bob", Classes::All).expect("a held shred parks");
        assert_eq!(
            db.get("bob", MESSAGES, b"held").expect("get").as_deref(),
            Some(&b"v"[..])
        );
    });
}

/// alice's expiring bucket: its "destroy key" item (kind 1) and the key id.
fn alice_destroy_item(store: &Store, alice: &[u8; 16]) -> (Vec<u8>, Vec<u8>) {
    raw_read(store, "deadlines")
        .into_iter()
        .find(|(k, _)| k.get(8) == Some(&1) && k.get(9..25) == Some(&alice[..]))
        .expect("alice's expiring key has a deadline")
}

#[test]
fn a_forged_deadline_is_reported_and_a_damaged_one_still_destroys() {
    for_each_backend(|store| {
        let [alice, bob, _] = populate(store);
        let (key, value) = alice_destroy_item(store, &alice);
        let expiring_key_id = key[9..].to_vec();
        // bob's open-bucket key (bucket 1), due at the start of time, with a
        // value copied from a real item: forged.
        let bob_key = raw_read(store, "vault")
            .into_keys()
            .find(|k| k.starts_with(&bob) && k.len() == 26 && k[18..22] == [0, 0, 0, 1])
            .expect("bob's open-bucket key");
        let mut forged = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 1];
        forged.extend_from_slice(&bob_key);
        // alice's real item damaged in its MAC.
        let mut damaged = value.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        raw_write(
            store,
            "deadlines",
            &Raw::from([(forged, value), (key, damaged)]),
        );

        let db = store.open();
        let reported = problems_in(&db, "deadlines");
        assert_eq!(
            reported
                .iter()
                .filter(|p| p.contains("fails its MAC"))
                .count(),
            2,
            "the forged and the damaged item are reported: {reported:?}"
        );
        // A schedule entry that fails its MAC is acted on all the same: damage
        // must not drop an erasure (a forged one can only hasten one, and
        // bob's is held).
        store
            .clock()
            .advance(shredkv::jiff::SignedDuration::from_hours(72));
        db.compact().expect("compact");
        close(db);
        let vault = common::vault_by_key_id(store);
        assert_eq!(
            vault.get(&expiring_key_id).and_then(|v| v.get(1)).copied(),
            Some(common::KEY_DESTROYED),
            "alice's expiring key is destroyed on time despite its damaged item"
        );
        let db = store.open();
        assert_eq!(
            db.get("bob", MESSAGES, b"held").expect("get").as_deref(),
            Some(&b"v"[..]),
            "bob's hold still holds"
        );
    });
}

#[test]
fn a_removed_or_moved_destruction_deadline_is_reported() {
    for_each_backend(|store| {
        let [alice, _, _] = populate(store);
        let (key, value) = alice_destroy_item(store, &alice);
        // Moved ten years out: the MAC binds the key, so this is a removal
        // and a forgery.
        let mut later = key.clone();
        let at = u64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
        later[..8].copy_from_slice(&(at + 315_360_000).to_be_bytes());
        raw_remove(store, "deadlines", &[key]);
        raw_write(store, "deadlines", &Raw::from([(later, value)]));
        let db = store.open();
        let reported = problems_in(&db, "deadlines");
        assert_eq!(
            reported
                .iter()
                .filter(|p| p.contains("has no destruction deadline"))
                .count(),
            1,
            "the key whose deadline was removed is reported: {reported:?}"
        );
        assert_eq!(
            reported
                .iter()
                .filter(|p| p.contains("fails its MAC"))
                .count(),
            1,
            "{reported:?}"
        );
    });
}

#[test]
fn an_edited_or_moved_subject_record_gives_no_access() {
    for_each_backend(|store| {
        let [alice, _, carol] = populate(store);
        let subjects = raw_read(store, "subjects");
        let (alice_key, alice_value) = entry_of(&subjects, &alice);
        let (carol_key, _) = entry_of(&subjects, &carol);
        // carol (erased) given alice's (active) record; alice's own record
        // edited in its state byte with a consistent CRC.
        raw_write(
            store,
            "subjects",
            &Raw::from([
                (carol_key, alice_value.clone()),
                (
                    alice_key,
                    edit_with_crc(&alice_value, 1, alice_value[1] ^ 0x03),
                ),
            ]),
        );
        let db = store.open();
        for subject in ["alice", "carol"] {
            match db.get(subject, MESSAGES, b"kept") {
                Err(err) if fails_its_mac(&err) => {}
                other => panic!("{subject}: expected a MAC failure, got {other:?}"),
            }
        }
        assert_eq!(problems_in(&db, "subjects").len(), 2);
    });
}

#[test]
fn a_forged_erasure_in_the_ledger_erases_nothing_and_is_reported() {
    for_each_backend(|store| {
        let [alice, _, carol] = populate(store);
        let (key, value) = entry_of(&raw_read(store, "ledger"), &carol);
        raw_write(
            store,
            "ledger",
            &Raw::from([(retag(&key, &carol, &alice), value)]),
        );
        let db = store.open();
        db.compact().expect("compact");
        match db.get("alice", MESSAGES, b"kept") {
            Ok(Some(v)) => assert_eq!(v, b"v"),
            Err(err) if fails_its_mac(&err) => {}
            other => panic!("alice's record must survive or be refused, got {other:?}"),
        }
        assert!(!problems_in(&db, "ledger").is_empty());
        drop(db);
        raw_remove(store, "ledger", &[retag(&key, &carol, &alice)]);
        let db = store.open();
        assert_eq!(
            db.get("alice", MESSAGES, b"kept").expect("get").as_deref(),
            Some(&b"v"[..]),
            "the forgery erased nothing"
        );
    });
}

#[test]
fn a_lowered_seal_count_is_not_counted_from() {
    for_each_backend(|store| {
        let [alice, _, _] = populate(store);
        let (key, value) = entry_of(&raw_read(store, "seals"), &alice);
        // reserved (u64 at byte 1) set back to zero, CRC consistent.
        let mut edited = value.clone();
        for at in 1..9 {
            edited = edit_with_crc(&edited, at, 0);
        }
        raw_write(store, "seals", &Raw::from([(key, edited)]));
        let db = store.open();
        let written = (0..4u8).find_map(|i| db.put("alice", MESSAGES, &[i], b"v").err());
        let err = written.expect("a write under the edited count fails");
        assert!(fails_its_mac(&err), "{err}");
        assert!(!problems_in(&db, "seals").is_empty());
    });
}

#[test]
fn a_forged_rekey_debt_is_reported() {
    for_each_backend(|store| {
        let [alice, bob, _] = populate(store);
        let (key, value) = entry_of(&raw_read(store, "debts"), &alice);
        raw_write(
            store,
            "debts",
            &Raw::from([(retag(&key, &alice, &bob), value)]),
        );
        let db = store.open();
        assert_eq!(problems_in(&db, "debts").len(), 1);
    });
}

#[test]
fn swapped_class_numbers_or_a_format_set_back_refuse_the_store() {
    for_each_backend(|store| {
        populate(store);
        let meta = raw_read(store, "meta");
        let messages = meta
            .get(&b"class/message_content"[..])
            .expect("numbered")
            .clone();
        let invoices = meta.get(&b"class/invoices"[..]).expect("numbered").clone();
        let mut swapped_messages = invoices.clone();
        swapped_messages.truncate(invoices.len() - MAC_LEN);
        swapped_messages.extend_from_slice(&messages[messages.len() - MAC_LEN..]);
        raw_write(
            store,
            "meta",
            &Raw::from([(b"class/message_content".to_vec(), swapped_messages)]),
        );
        match Db::open(store.config()) {
            Err(err) => {
                let text = err.to_string();
                assert!(
                    fails_its_mac(&err) || text.contains("fails its MAC"),
                    "{text}"
                );
                assert!(text.contains("class/message_content"), "{text}");
            }
            Ok(_) => panic!("a store with swapped class numbers opened"),
        }
        raw_write(
            store,
            "meta",
            &Raw::from([(b"class/message_content".to_vec(), messages)]),
        );
        drop(store.open());

        raw_write(store, "meta", &Raw::from([(b"format".to_vec(), vec![1])]));
        match Db::open(store.config()) {
            Err(Error::Tampered { location }) => {
                assert!(location.key_hex.contains("audit entry 2"), "{location}");
            }
            other => panic!("expected Tampered, got {other:?}"),
        }
    });
}
