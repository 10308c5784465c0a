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

mod common;

use common::{Raw, class_number, raw_read, raw_write, scope_entries};
use shredkv::{Db, Error};
use shredkv_tests::{INVOICES, MESSAGES, for_each_backend};

/// CRC-32 (IEEE), as the envelope's trailer: lets a test forge a
/// consistent checksum the way an attacker would.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Replaces the envelope's trailing CRC with one matching its body.
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
