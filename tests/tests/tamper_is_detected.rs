//! G5, tampering and corruption are detected and never returned as data:
//! with the store closed, the backend's files are opened directly (the sled
//! tree `data` in `<dir>/sled/`, the redb table `data` in
//! `<dir>/store.redb`) and stored envelopes are moved onto other records of
//! the same subject and of another subject, bytes are flipped (with and
//! without recomputing the CRC), and values truncated. After reopening
//! shredkv, each affected `get` and `scan` fails with an integrity error
//! (`Error::Corrupt` for media damage, `Error::Tampered` when the checksum
//! holds but authentication fails) whose message names the subject's tag
//! and the class, and every other record still reads back intact.
//!
//! Also: envelopes moved across classes; a record rolled back to its older
//! ciphertext after a re-key; edits of the `vault` (a wrapped key altered,
//! an entry moved between key ids, a damaged entry), of `subjects`,
//! `ledger` and `holds` (damaged bytes are integrity errors, a damaged hold
//! is never read as "no hold", and an erased subject made consistent again
//! by a forger gets nothing back).

mod common;

use common::{Raw, class_number, crc32, raw_read, raw_write, scope_entries};
use shredkv::{Db, Error};
use shredkv_tests::{INVOICES, MESSAGES, for_each_backend};

/// Replaces the trailing CRC32 of an envelope (or of any stored value that
/// ends in one: vault entries, subject records) with one matching its body.
fn fix_crc(mut envelope: Vec<u8>) -> Vec<u8> {
    let body = envelope.len() - 4;
    let crc = crc32(&envelope[..body]);
    envelope[body..].copy_from_slice(&crc.to_be_bytes());
    envelope
}

fn flip(mut envelope: Vec<u8>, at: usize) -> Vec<u8> {
    envelope[at] ^= 0x01;
    envelope
}

const RECORDS: [&str; 2] = ["one", "two"];

fn value(subject: &str, class: &str, key: &str) -> Vec<u8> {
    format!("{subject}/{class}/{key}: a value long enough to flip a byte in").into_bytes()
}

fn subject(i: usize) -> String {
    format!("subject-{i}")
}

/// What one subject's records must read as after tampering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Nothing was touched.
    Intact,
    /// One record is damaged: an integrity error of either kind.
    OneIntegrityFailure,
    /// One record's checksum is consistent but its authentication fails.
    OneTampered,
}

/// One way of damaging a scope's first stored envelope (`entries[0]`),
/// given also the scope's second envelope and another subject's envelope.
struct Case {
    name: &'static str,
    expect: Expect,
    damage: fn(&[Vec<u8>; 2], &[u8]) -> Vec<u8>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "untouched control",
            expect: Expect::Intact,
            damage: |own, _| own[0].clone(),
        },
        Case {
            name: "the subject's other record's envelope copied over it",
            expect: Expect::OneTampered,
            damage: |own, _| own[1].clone(),
        },
        Case {
            name: "another subject's envelope copied over it",
            expect: Expect::OneTampered,
            damage: |_, other| other.to_vec(),
        },
        Case {
            name: "version byte flipped",
            expect: Expect::OneIntegrityFailure,
            damage: |own, _| flip(own[0].clone(), 0),
        },
        Case {
            name: "ciphertext byte flipped",
            expect: Expect::OneIntegrityFailure,
            damage: |own, _| flip(own[0].clone(), 30),
        },
        Case {
            name: "checksum byte flipped",
            expect: Expect::OneIntegrityFailure,
            damage: |own, _| flip(own[0].clone(), own[0].len() - 1),
        },
        Case {
            name: "nonce byte flipped, checksum recomputed",
            expect: Expect::OneTampered,
            damage: |own, _| fix_crc(flip(own[0].clone(), 12)),
        },
        Case {
            name: "ciphertext byte flipped, checksum recomputed",
            expect: Expect::OneTampered,
            damage: |own, _| fix_crc(flip(own[0].clone(), 30)),
        },
        Case {
            name: "GCM tag byte flipped, checksum recomputed",
            expect: Expect::OneTampered,
            damage: |own, _| fix_crc(flip(own[0].clone(), own[0].len() - 5)),
        },
        Case {
            name: "truncated",
            expect: Expect::OneIntegrityFailure,
            damage: |own, _| own[0][..own[0].len() / 2].to_vec(),
        },
        Case {
            name: "emptied",
            expect: Expect::OneIntegrityFailure,
            damage: |_, _| Vec::new(),
        },
    ]
}

/// Reads `subject`'s records in `class` and checks them against `expect`.
fn check(db: &Db, subject: &str, class: &str, expect: Expect, case: &str) {
    let what = format!("{} {class} `{case}` ({subject})", db.backend());
    let tag = db.subject_tag(subject).to_hex();
    let mut failures = Vec::new();
    for key in RECORDS {
        match db.get(subject, class, key.as_bytes()) {
            Ok(got) => assert_eq!(
                got,
                Some(value(subject, class, key)),
                "{what}: record `{key}` returned other data"
            ),
            Err(err) => {
                assert!(
                    err.is_integrity_failure(),
                    "{what}: `{key}` failed with a non-integrity error: {err}"
                );
                let text = err.to_string();
                assert!(text.contains(&tag), "{what}: no subject tag in `{text}`");
                assert!(
                    text.contains(&format!("`{class}`")),
                    "{what}: no class in `{text}`"
                );
                failures.push(err);
            }
        }
    }
    let scan = db.scan(subject, class);
    match expect {
        Expect::Intact => {
            assert!(failures.is_empty(), "{what}: {failures:?}");
            assert_eq!(scan.expect("scan").len(), 2, "{what}");
        }
        Expect::OneIntegrityFailure | Expect::OneTampered => {
            assert_eq!(failures.len(), 1, "{what}: {failures:?}");
            if expect == Expect::OneTampered {
                assert!(
                    matches!(failures[0], Error::Tampered { .. }),
                    "{what}: a consistent checksum must report tampering, got {}",
                    failures[0]
                );
            }
            let err = scan.expect_err("a scan over a damaged record fails");
            assert!(err.is_integrity_failure(), "{what}: scan gave {err}");
        }
    }
}

#[test]
fn moved_flipped_and_truncated_values_fail_integrity_and_others_still_read() {
    let cases = cases();
    for_each_backend(|store| {
        let db = store.open();
        let tags: Vec<[u8; 16]> = (0..cases.len())
            .map(|i| {
                db.register_account(&subject(i)).expect("register");
                for class in [MESSAGES, INVOICES] {
                    for key in RECORDS {
                        db.put(
                            &subject(i),
                            class,
                            key.as_bytes(),
                            &value(&subject(i), class, key),
                        )
                        .expect("put");
                    }
                }
                db.subject_tag(&subject(i)).0
            })
            .collect();
        drop(db);

        let data = raw_read(store, "data");
        let mut changes = Raw::new();
        for class in [MESSAGES, INVOICES] {
            let number = class_number(store, class);
            // The envelope moved across subjects comes from the control subject.
            let foreign = scope_entries(&data, &tags[0], number)[0].1.clone();
            for (i, case) in cases.iter().enumerate() {
                let entries = scope_entries(&data, &tags[i], number);
                assert_eq!(entries.len(), 2, "{class}: two records stored per scope");
                let own = [entries[0].1.clone(), entries[1].1.clone()];
                let damaged = (case.damage)(&own, &foreign);
                assert!(
                    case.expect == Expect::Intact || damaged != own[0],
                    "case `{}` changes nothing",
                    case.name
                );
                changes.insert(entries[0].0.clone(), damaged);
            }
        }
        raw_write(store, "data", &changes);
        assert_eq!(raw_read(store, "data").len(), data.len());

        let db = store.open();
        for class in [MESSAGES, INVOICES] {
            for (i, case) in cases.iter().enumerate() {
                check(&db, &subject(i), class, case.expect, case.name);
            }
        }
        // The damage is reported again after another reopen, never repaired
        // into data.
        drop(db);
        let db = store.open();
        for (i, case) in cases.iter().enumerate() {
            check(&db, &subject(i), INVOICES, case.expect, case.name);
        }
    });
}

/// Damage that an attacker makes consistent (the checksum recomputed, or a
/// genuine envelope of another scope) in the envelope's key reference and
/// expiry, which the AEAD binds: it must be reported, not read as "absent".
///
/// `open_record` (engine/src/db/ops.rs) authenticates before it believes
/// the envelope's expiry, and reports a key id without any vault entry (a
/// destroyed key keeps a tombstone, so a missing entry is an inconsistency,
/// not an erasure) as tampering. (Regression: all three cases below once
/// read as `Ok(None)` on both backends.) A header edited to name a key
/// version that *was* destroyed is a separate case, not covered here.
#[test]
fn forged_key_reference_or_expiry_is_detected() {
    let mut outcomes = Vec::new();
    for_each_backend(|store| {
        let db = store.open();
        for s in ["victim-version", "victim-expiry", "victim-moved", "donor"] {
            db.register_account(s).expect("register");
            for class in [MESSAGES, INVOICES] {
                for key in RECORDS {
                    db.put(s, class, key.as_bytes(), &value(s, class, key))
                        .expect("put");
                }
            }
        }
        // Sealed under a bucket (its expiry day) the victim never had a key for.
        let tomorrow = db.now() + shredkv::jiff::SignedDuration::from_hours(24);
        db.put_with(
            "donor",
            MESSAGES,
            b"expiring",
            b"donor data",
            shredkv::PutOptions::expires_at(tomorrow),
        )
        .expect("put with expiry");
        let tags: Vec<[u8; 16]> = ["victim-version", "victim-expiry", "victim-moved", "donor"]
            .iter()
            .map(|s| db.subject_tag(s).0)
            .collect();
        drop(db);

        let data = raw_read(store, "data");
        let mut changes = Raw::new();
        let mut cases = Vec::new();
        for class in [MESSAGES, INVOICES] {
            let number = class_number(store, class);
            let (key, mut e) = scope_entries(&data, &tags[0], number)[0].clone();
            e[6..10].copy_from_slice(&7u32.to_be_bytes());
            changes.insert(key, fix_crc(e));
            cases.push((
                "victim-version",
                class,
                "key version changed, checksum recomputed",
            ));

            let (key, e) = scope_entries(&data, &tags[1], number)[0].clone();
            let mut forged = e[..10].to_vec();
            forged[1] |= 1;
            forged.extend_from_slice(&1i64.to_be_bytes());
            forged.extend_from_slice(&e[10..]);
            changes.insert(key, fix_crc(forged));
            cases.push((
                "victim-expiry",
                class,
                "past expiry inserted, checksum recomputed",
            ));
        }
        let number = class_number(store, MESSAGES);
        let donor = scope_entries(&data, &tags[3], number)
            .into_iter()
            .find(|(_, v)| v[1] & 1 == 1)
            .expect("the donor's expiring envelope");
        let (key, _) = scope_entries(&data, &tags[2], number)[0].clone();
        changes.insert(key, donor.1);
        cases.push((
            "victim-moved",
            MESSAGES,
            "another subject's genuine envelope, from a bucket this scope never had",
        ));
        raw_write(store, "data", &changes);

        let db = store.open();
        for (subject, class, case) in cases {
            let results: Vec<String> = RECORDS
                .iter()
                .map(|k| match db.get(subject, class, k.as_bytes()) {
                    Ok(Some(v)) if v == value(subject, class, k) => "intact".to_string(),
                    Ok(other) => format!("Ok({other:?})"),
                    Err(e) if e.is_integrity_failure() => "integrity error".to_string(),
                    Err(e) => format!("other error: {e}"),
                })
                .collect();
            let detected = results.iter().filter(|r| *r == "integrity error").count() == 1
                && results.iter().filter(|r| *r == "intact").count() == 1;
            outcomes.push((store.backend(), class, case, results, detected));
        }
    });
    let missed: Vec<_> = outcomes.iter().filter(|o| !o.4).collect();
    assert!(
        missed.is_empty(),
        "tampering read as absent data instead of an integrity error:\n{missed:#?}"
    );
}

/// What a read of a record gave, for a tamper report.
fn outcome(db: &Db, subject: &str, class: &str, key: &str) -> String {
    match db.get(subject, class, key.as_bytes()) {
        Ok(Some(v)) if v == value(subject, class, key) => "intact".to_string(),
        Ok(other) => format!(
            "Ok({:?})",
            other.map(|v| String::from_utf8_lossy(&v).into_owned())
        ),
        Err(e) if e.is_integrity_failure() => "integrity error".to_string(),
        Err(e) => format!("other error: {e}"),
    }
}

/// Registers `subjects` and writes [`RECORDS`] into [`MESSAGES`] and
/// [`INVOICES`] for each; returns their tags.
fn fill(db: &Db, subjects: &[&str]) -> Vec<[u8; 16]> {
    subjects
        .iter()
        .map(|s| {
            db.register_account(s).expect("register");
            for class in [MESSAGES, INVOICES] {
                for key in RECORDS {
                    db.put(s, class, key.as_bytes(), &value(s, class, key))
                        .expect("put");
                }
            }
            db.subject_tag(s).0
        })
        .collect()
}

/// An envelope moved to another class of the same subject (the AAD binds
/// the class, and the class names another key) fails authentication, in
/// both directions, and the scope's other record still reads.
#[test]
fn an_envelope_moved_across_classes_fails_authentication() {
    for_each_backend(|store| {
        let db = store.open();
        let tag = fill(&db, &["mover"])[0];
        drop(db);
        let data = raw_read(store, "data");
        let messages = scope_entries(&data, &tag, class_number(store, MESSAGES));
        let invoices = scope_entries(&data, &tag, class_number(store, INVOICES));
        let mut changes = Raw::new();
        changes.insert(invoices[0].0.clone(), messages[1].1.clone());
        changes.insert(messages[0].0.clone(), invoices[1].1.clone());
        raw_write(store, "data", &changes);
        let db = store.open();
        for class in [MESSAGES, INVOICES] {
            check(
                &db,
                "mover",
                class,
                Expect::OneTampered,
                "envelope from the other class",
            );
        }
    });
}

/// A record rolled back to its older ciphertext after compaction re-keyed
/// its bucket (the old ciphertext names the destroyed key version) is not
/// returned as data: it reads as absent or as an integrity error, never as
/// the old value.
///
/// Not covered, because not detected today: a rollback to an older
/// ciphertext sealed under the record's *current* key version (before the
/// re-key) authenticates and returns the old value; the AAD binds store,
/// subject, class, record key and key version, not a record version (see
/// docs/threat-model.md).
#[test]
fn a_record_rolled_back_after_its_rekey_is_not_returned() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("rolled").expect("register");
        db.put("rolled", INVOICES, b"one", b"old value")
            .expect("put");
        let tag = db.subject_tag("rolled");
        drop(db);
        let number = class_number(store, INVOICES);
        let old = scope_entries(&raw_read(store, "data"), &tag.0, number);
        assert_eq!(old.len(), 1);
        let db = store.open();
        db.put("rolled", INVOICES, b"one", b"new value")
            .expect("overwrite");
        // The overwrite owes a re-key of the bucket; run daily compaction
        // until it has happened.
        let mut days = 0;
        while !db
            .audit_entries(1, usize::MAX)
            .expect("audit")
            .iter()
            .any(|e| e.event == shredkv::AuditEvent::Rekeyed && e.subject == Some(tag))
        {
            days += 1;
            assert!(days <= 60, "no re-key within 60 days");
            store
                .clock()
                .advance(shredkv::jiff::SignedDuration::from_hours(24));
            db.compact().expect("compact");
        }
        drop(db);
        raw_write(store, "data", &old.into_iter().collect());
        let db = store.open();
        let got = db.get("rolled", INVOICES, b"one");
        assert!(
            matches!(&got, Ok(None)) || got.as_ref().is_err_and(Error::is_integrity_failure),
            "{}: the rolled-back record read as {got:?}",
            store.backend()
        );
        match db.scan("rolled", INVOICES) {
            Ok(records) => assert!(records.is_empty(), "{records:?}"),
            Err(err) => assert!(err.is_integrity_failure(), "{err}"),
        }
    });
}

/// The vault entry of `tag`'s data key for `class` in the open bucket
/// (key id: tag ‖ class u16 ‖ bucket u32 = 1 ‖ version u32).
fn data_key_entry(vault: &Raw, tag: &[u8; 16], class: [u8; 2]) -> (Vec<u8>, Vec<u8>) {
    let mut prefix = tag.to_vec();
    prefix.extend_from_slice(&class);
    prefix.extend_from_slice(&1u32.to_be_bytes());
    vault
        .iter()
        .find(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .expect("the scope's data key")
}

/// Edits of the vault: a wrapped key altered (checksum recomputed), another
/// subject's vault entry copied over one (the wrap binds the key id), and a
/// byte flipped without fixing the checksum. Every record under the key
/// fails with an integrity error naming the subject; other subjects read.
#[test]
fn vault_edits_are_detected() {
    const SUBJECTS: [&str; 4] = ["wrap-altered", "entry-moved", "entry-damaged", "bystander"];
    for_each_backend(|store| {
        let db = store.open();
        let tags = fill(&db, &SUBJECTS);
        drop(db);
        let number = class_number(store, MESSAGES);
        let vault = raw_read(store, "vault");
        let mut changes = Raw::new();
        // The wrapped key starts at byte 20 of a vault entry (see vault/mod.rs).
        let (key, entry) = data_key_entry(&vault, &tags[0], number);
        changes.insert(key, fix_crc(flip(entry, 40)));
        let (key, _) = data_key_entry(&vault, &tags[1], number);
        changes.insert(key, data_key_entry(&vault, &tags[3], number).1);
        let (key, entry) = data_key_entry(&vault, &tags[2], number);
        changes.insert(key, flip(entry, 40));
        raw_write(store, "vault", &changes);

        let db = store.open();
        for subject in &SUBJECTS[..3] {
            let tag = db.subject_tag(subject).to_hex();
            for key in RECORDS {
                let err = db
                    .get(subject, MESSAGES, key.as_bytes())
                    .expect_err(&format!(
                        "{subject}/{key}: read under an edited vault entry"
                    ));
                assert!(err.is_integrity_failure(), "{subject}/{key}: {err}");
                assert!(err.to_string().contains(&tag), "{subject}/{key}: {err}");
            }
            check(
                &db,
                subject,
                INVOICES,
                Expect::Intact,
                "vault edit elsewhere",
            );
        }
        check(
            &db,
            "bystander",
            MESSAGES,
            Expect::Intact,
            "its entry was copied",
        );
        let report = db.verify().expect("verify");
        assert!(
            !report.is_clean(),
            "verify missed the vault edits: {report:?}"
        );
    });
}

/// Edits of the control-plane trees: damaged bytes in a subject record, a
/// ledger entry and a hold are reported as integrity errors (a damaged hold
/// is never read as "no hold"); and an erased subject whose records a
/// forger makes consistent again (state set back to active, checksum
/// recomputed, ledger entries removed) does not get its data back: its keys
/// are destroyed. (Such consistent edits of the control plane are not
/// detected today: its values carry a CRC, not a MAC.)
#[test]
fn control_tree_edits_are_detected_or_bring_nothing_back() {
    const SUBJECTS: [&str; 4] = [
        "subject-damaged",
        "ledger-damaged",
        "hold-damaged",
        "revived",
    ];
    for_each_backend(|store| {
        let db = store.open();
        let tags = fill(&db, &SUBJECTS);
        db.shred("ledger-damaged", shredkv::Classes::Only(&[MESSAGES]))
            .expect("shred one class");
        db.place_hold("hold-damaged", Some(INVOICES), "case 12")
            .expect("hold");
        db.shred("revived", shredkv::Classes::All).expect("shred");
        drop(db);

        let subjects = raw_read(store, "subjects");
        let record = |tag: &[u8; 16]| {
            let mut key = vec![0u8];
            key.extend_from_slice(tag);
            let value = subjects.get(&key).expect("subject record").clone();
            (key, value)
        };
        let mut changes = Raw::new();
        let (key, value) = record(&tags[0]);
        changes.insert(key, flip(value, 20));
        // State byte 19: 3 (erased) back to 1 (active), checksum recomputed.
        let (key, mut value) = record(&tags[3]);
        assert_eq!(value[19], 3, "the shredded subject is erased");
        value[19] = 1;
        changes.insert(key, fix_crc(value));
        raw_write(store, "subjects", &changes);

        let ledger = raw_read(store, "ledger");
        let mut changes = Raw::new();
        for (key, value) in &ledger {
            if key.starts_with(&tags[1]) {
                changes.insert(key.clone(), flip(value.clone(), 2));
            }
        }
        assert_eq!(changes.len(), 1, "one ledger entry for the erased class");
        raw_write(store, "ledger", &changes);
        remove_entries(store, "ledger", |k| k.starts_with(&tags[3]));

        let holds = raw_read(store, "holds");
        let mut changes = Raw::new();
        for (key, value) in &holds {
            assert!(key.starts_with(&tags[2]), "one hold");
            changes.insert(key.clone(), flip(value.clone(), 3));
        }
        raw_write(store, "holds", &changes);

        let db = store.open();
        for key in RECORDS {
            assert_eq!(
                outcome(&db, "subject-damaged", INVOICES, key),
                "integrity error",
                "a damaged subject record"
            );
            assert_eq!(
                outcome(&db, "ledger-damaged", MESSAGES, key),
                "integrity error",
                "a damaged ledger entry"
            );
            let revived = outcome(&db, "revived", MESSAGES, key);
            assert!(
                revived != "intact" && !revived.starts_with("Ok(Some"),
                "an erased subject's data came back: {revived}"
            );
            let revived = outcome(&db, "revived", INVOICES, key);
            assert!(
                revived != "intact" && !revived.starts_with("Ok(Some"),
                "an erased subject's data came back: {revived}"
            );
        }
        check(
            &db,
            "ledger-damaged",
            INVOICES,
            Expect::Intact,
            "ledger edit of another class",
        );
        let err = db.holds().expect_err("a damaged hold is reported");
        assert!(err.is_integrity_failure(), "{err}");
        let shred = db.shred("hold-damaged", shredkv::Classes::All);
        assert!(
            shred.as_ref().is_err_and(Error::is_integrity_failure),
            "a shred over a damaged hold must not read it as no hold: {shred:?}"
        );
        check(
            &db,
            "hold-damaged",
            INVOICES,
            Expect::Intact,
            "held, hold damaged",
        );
    });
}

/// Removes the entries of a raw tree whose keys match (the store must be
/// closed).
fn remove_entries(store: &shredkv_tests::Store, tree: &str, matches: impl Fn(&[u8]) -> bool) {
    let gone: Vec<Vec<u8>> = raw_read(store, tree)
        .into_keys()
        .filter(|k| matches(k))
        .collect();
    assert!(!gone.is_empty(), "nothing to remove from {tree}");
    common::raw_remove(store, tree, &gone);
}
