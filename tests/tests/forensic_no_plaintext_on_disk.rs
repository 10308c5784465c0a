//! G4, no personal data in plaintext on disk: after writing records whose
//! subject ids, record keys and values carry distinctive markers, every byte
//! of every file under the store directory (backend files, key file, any
//! sidecar) is searched for the markers as raw bytes, hex (both cases) and
//! UTF-16 (both byte orders). Subject ids and values never appear; record
//! keys of blinded classes never appear; record keys of an `ordered` class
//! do appear, by design, and the test asserts that too (it is also the
//! proof that the search finds what is there). The same holds after
//! overwrites, deletes, shreds and reopening (a legal hold's reason is
//! searched for too: it is sealed at rest); and, under the default
//! policy, in a backup, an exported erasure log and a restored copy, and in
//! the store after compaction, re-keys, epoch rotation and destruction.

use std::fs;
use std::path::{Path, PathBuf};

use shredkv::{Classes, Db};
use shredkv_tests::{INVOICES, MESSAGES, PROFILE, Store, close, for_each_backend};

const SUBJECT: &str = "MARKER-SUBJECT-";
const KEY: &str = "MARKER-KEY-";
const VALUE: &str = "MARKER-VALUE-";
/// A legal hold's free-text reason: sealed at rest like a value.
const REASON: &str = "MARKER-REASON-";
/// Record keys of the ordered class: stored in the clear by design.
const ORDERED_KEY: &str = "MARKER-ORDERED-KEY-";

/// One way a marker could be written to disk.
struct Needle {
    marker: &'static str,
    encoding: &'static str,
    bytes: Vec<u8>,
}

fn needles(marker: &'static str) -> Vec<Needle> {
    let raw = marker.as_bytes().to_vec();
    let hex_lower: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let hex_upper = hex_lower.to_uppercase();
    let utf16le = marker.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let utf16be = marker.encode_utf16().flat_map(u16::to_be_bytes).collect();
    vec![
        Needle {
            marker,
            encoding: "raw",
            bytes: raw,
        },
        Needle {
            marker,
            encoding: "hex",
            bytes: hex_lower.into_bytes(),
        },
        Needle {
            marker,
            encoding: "HEX",
            bytes: hex_upper.into_bytes(),
        },
        Needle {
            marker,
            encoding: "utf-16le",
            bytes: utf16le,
        },
        Needle {
            marker,
            encoding: "utf-16be",
            bytes: utf16be,
        },
    ]
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read a store directory") {
            let entry = entry.expect("read a directory entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Hits of `marker` (in any encoding) in the files under `dir`, as
/// "file: encoding ×count" lines.
fn hits(dir: &Path, marker: &'static str) -> Vec<String> {
    let needles = needles(marker);
    let mut out = Vec::new();
    for file in files_under(dir) {
        let bytes = fs::read(&file).expect("read a store file");
        for needle in &needles {
            let n = count(&bytes, &needle.bytes);
            if n > 0 {
                out.push(format!(
                    "{}: {} `{}` x{n}",
                    file.display(),
                    needle.encoding,
                    needle.marker
                ));
            }
        }
    }
    out
}

/// Asserts no subject id, blinded record key or value is on disk, and
/// returns how many places hold an ordered record key.
fn assert_no_plaintext(store: &Store, phase: &str) -> usize {
    let files = files_under(store.path());
    assert!(
        files
            .iter()
            .any(|f| fs::metadata(f).is_ok_and(|m| m.len() > 0)),
        "{phase}: the store wrote no files"
    );
    for marker in [SUBJECT, KEY, VALUE, REASON] {
        let found = hits(store.path(), marker);
        assert!(
            found.is_empty(),
            "{} {phase}: personal data in plaintext on disk:\n{}",
            store.backend(),
            found.join("\n")
        );
    }
    hits(store.path(), ORDERED_KEY).len()
}

fn subject(n: usize) -> String {
    format!("{SUBJECT}{n}-alice@example.com")
}

fn key(n: usize, i: usize) -> Vec<u8> {
    format!("{KEY}{n}-{i}").into_bytes()
}

fn ordered_key(n: usize, i: usize) -> Vec<u8> {
    format!("{ORDERED_KEY}{n}-{i}").into_bytes()
}

fn value(n: usize, i: usize, round: usize) -> Vec<u8> {
    format!("{VALUE}{n}-{i}-{round} call me on +1 555 0100").into_bytes()
}

/// A value larger than sled's inline limit and a redb page, so blobs and
/// overflow pages are searched too.
fn large_value(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < 96 * 1024 {
        out.extend_from_slice(format!("{VALUE}{n}-large;").as_bytes());
    }
    out
}

fn write_round(db: &Db, subjects: usize, round: usize) {
    for n in 0..subjects {
        let s = subject(n);
        for i in 0..4 {
            db.put(&s, MESSAGES, &key(n, i), &value(n, i, round))
                .expect("put message");
            db.put(&s, PROFILE, &key(n, i), &value(n, i, round))
                .expect("put profile");
            db.put(&s, INVOICES, &ordered_key(n, i), &value(n, i, round))
                .expect("put invoice");
        }
    }
}

#[test]
fn the_search_finds_every_encoding() {
    let dir = tempfile::tempdir().expect("dir");
    for (i, needle) in needles(VALUE).into_iter().enumerate() {
        let mut bytes = vec![0xA5; 100];
        bytes.extend_from_slice(&needle.bytes);
        bytes.extend_from_slice(&[0x5A; 100]);
        let nested = dir.path().join(format!("nested-{i}"));
        fs::create_dir_all(&nested).expect("mkdir");
        fs::write(nested.join("file"), &bytes).expect("write");
    }
    assert_eq!(
        hits(dir.path(), VALUE).len(),
        5,
        "{:?}",
        hits(dir.path(), VALUE)
    );
    assert!(hits(dir.path(), SUBJECT).is_empty());
}

#[test]
fn no_subject_id_record_key_or_value_in_plaintext_on_disk() {
    for_each_backend(|store| {
        let subjects = 6;
        let db = store.open();
        db.register_account(&subject(0)).expect("register");
        for n in 1..subjects {
            db.register_end_user(&subject(n), &subject(0))
                .expect("register end user");
        }
        write_round(&db, subjects, 0);
        db.put(&subject(1), MESSAGES, &key(1, 99), &large_value(1))
            .expect("put a large value");
        // Overwrites and deletes leave old ciphertext behind: still sealed.
        write_round(&db, subjects, 1);
        assert!(
            db.delete(&subject(2), MESSAGES, &key(2, 0))
                .expect("delete")
        );
        assert!(
            db.delete(&subject(2), INVOICES, &ordered_key(2, 0))
                .expect("delete")
        );
        db.place_hold(&subject(3), Some(INVOICES), &format!("{REASON}case 12"))
            .expect("hold");
        assert_eq!(
            db.holds().expect("holds")[0].reason,
            format!("{REASON}case 12"),
            "the reason reads back"
        );
        db.restrict(&subject(4)).expect("restrict");
        close(db);

        let ordered = assert_no_plaintext(store, "after writes");
        assert!(
            ordered > 0,
            "{}: ordered record keys are stored in the clear by design, and the search must find them",
            store.backend()
        );

        // Erase some of it, then look again (shred writes ledger, audit
        // and vault tombstones: none may carry an id).
        let db = store.open();
        db.shred(&subject(5), Classes::All).expect("shred user");
        db.shred(&subject(1), Classes::Only(&[MESSAGES]))
            .expect("shred one class");
        db.shred(&subject(0), Classes::All).expect("shred account");
        close(db);
        assert_no_plaintext(store, "after shred");

        // Reopening and reading what is left writes nothing in the clear.
        let db = store.open();
        assert!(
            db.get(&subject(3), INVOICES, &ordered_key(3, 1))
                .expect("held invoice")
                .is_some()
        );
        drop(db);
        assert_no_plaintext(store, "after reopen");
    });
}

/// Asserts that no subject id, record key or value marker is in any file
/// under `dir` (under the default policy every class blinds its keys).
fn assert_nothing_under(dir: &Path, backend: shredkv::Backend, phase: &str) {
    assert!(
        files_under(dir)
            .iter()
            .any(|f| fs::metadata(f).is_ok_and(|m| m.len() > 0)),
        "{phase}: nothing written under {}",
        dir.display()
    );
    for marker in [SUBJECT, KEY, VALUE] {
        let found = hits(dir, marker);
        assert!(
            found.is_empty(),
            "{backend} {phase}: personal data in plaintext on disk:\n{}",
            found.join("\n")
        );
    }
}

/// The same search under the default policy (every class, customer
/// expiries, account closure and marketing opt-out), over everything the
/// engine writes besides the store: a backup, an exported erasure log and a
/// restored copy; and over the store after what maintenance rewrites:
/// compaction (expiry, class deadlines, re-keys of overwritten and deleted
/// records), epoch rotation and epoch destruction.
#[test]
fn no_plaintext_in_backups_erasure_logs_restores_or_after_maintenance_under_the_default_policy() {
    use std::sync::Arc;

    use shredkv::jiff::SignedDuration;
    use shredkv::{Config, ErasureSource, PutOptions, RestoreOptions};

    const DAY: SignedDuration = SignedDuration::from_hours(24);
    for_each_backend(|store| {
        let backend = store.backend();
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let config = |dir: &Path| {
            Config::new(dir)
                .backend(backend)
                .clock(Arc::new(store.clock().clone()))
                .flush_every(None)
                .maintenance_every(None)
                .key_file(store.key_file())
                // The store's key file sits in its directory (the test
                // harness's layout); restores go elsewhere.
                .allow_key_file_in_store(true)
        };
        let db = Db::open(config(store.path())).expect("open with the default policy");
        let classes: Vec<String> = db
            .policy()
            .classes()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        assert!(
            classes.len() >= 9,
            "the default policy's classes: {classes:?}"
        );
        db.register_account(&subject(0)).expect("register");
        for n in 1..4 {
            db.register_end_user(&subject(n), &subject(0))
                .expect("register end user");
        }
        db.register_account(&subject(4)).expect("register");
        for round in 0..2 {
            for n in 0..5 {
                for class in &classes {
                    for i in 0..2 {
                        db.put(&subject(n), class, &key(n, i), &value(n, i, round))
                            .expect("put");
                    }
                }
                // Customer expiries, some past within the run.
                for class in ["usage_records", "message_content"] {
                    let expiry = db.now() + DAY * i32::try_from(n + 1).expect("small");
                    db.put_with(
                        &subject(n),
                        class,
                        &key(n, 7),
                        &value(n, 7, round),
                        PutOptions::expires_at(expiry),
                    )
                    .expect("put with an expiry");
                }
            }
        }
        db.put(&subject(1), "message_content", &key(1, 99), &large_value(1))
            .expect("a large value");
        assert!(
            db.delete(&subject(2), "usage_records", &key(2, 0))
                .expect("delete")
        );
        db.opt_out_of_marketing(&subject(4)).expect("opt out");
        let first_backup = elsewhere.path().join("backup-day-0");
        db.backup(&first_backup).expect("backup");
        assert_nothing_under(&first_backup, backend, "in a backup");

        db.shred(&subject(3), Classes::All)
            .expect("shred an end user");
        db.close_account(&subject(0)).expect("close an account");
        let log = elsewhere.path().join("erasures.log");
        db.export_erasure_log(&log).expect("export the erasure log");
        assert_nothing_under(elsewhere.path(), backend, "with an exported erasure log");

        // Forty days of daily compaction: expiries, the opt-out deadline,
        // re-keys of overwritten and deleted records, rotations and epoch
        // destructions; a backup on the way, restored at the end.
        let recent_backup = elsewhere.path().join("backup-day-35");
        for day in 1..=40 {
            store.clock().advance(DAY);
            db.compact().expect("compact");
            if day == 35 {
                db.backup(&recent_backup).expect("backup");
            }
        }
        db.rotate_epoch().expect("rotate");
        // The maintenance this searches after did happen.
        let events: Vec<shredkv::AuditEvent> = db
            .audit_entries(1, usize::MAX)
            .expect("audit")
            .into_iter()
            .map(|e| e.event)
            .collect();
        for event in [
            shredkv::AuditEvent::Rekeyed,
            shredkv::AuditEvent::EpochCreated,
            shredkv::AuditEvent::EpochDestroyed,
            shredkv::AuditEvent::KeysDestroyed,
            shredkv::AuditEvent::CiphertextRemoved,
        ] {
            assert!(
                events.contains(&event),
                "{backend}: no {event:?} in the run"
            );
        }
        let (restored, _) = Db::restore_with(
            &recent_backup,
            config(&elsewhere.path().join("restored")),
            ErasureSource::Live(&db),
            RestoreOptions::default().accept_lost_records(true),
        )
        .expect("restore the recent backup");
        restored.flush().expect("flush");
        drop(restored);
        close(db);
        assert_nothing_under(
            store.path(),
            backend,
            "after compaction, re-keys and rotation",
        );
        assert_nothing_under(
            elsewhere.path(),
            backend,
            "in backups, the erasure log and the restored copy",
        );
    });
}
