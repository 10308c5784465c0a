//! G4, no personal data in plaintext on disk: after writing records whose
//! subject ids, record keys and values carry distinctive markers, every byte
//! of every file under the store directory (backend files, key file, any
//! sidecar) is searched for the markers as raw bytes, hex (both cases) and
//! UTF-16 (both byte orders). Subject ids and values never appear; record
//! keys of blinded classes never appear; record keys of an `ordered` class
//! do appear, by design, and the test asserts that too (it is also the
//! proof that the search finds what is there). The same holds after
//! overwrites, deletes, shreds and reopening.

use std::fs;
use std::path::{Path, PathBuf};

use shredkv::{Classes, Db};
use shredkv_tests::{INVOICES, MESSAGES, PROFILE, Store, close, for_each_backend};

const SUBJECT: &str = "MARKER-SUBJECT-";
const KEY: &str = "MARKER-KEY-";
const VALUE: &str = "MARKER-VALUE-";
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
    for marker in [SUBJECT, KEY, VALUE] {
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
        db.place_hold(&subject(3), Some(INVOICES), "case 12")
            .expect("hold");
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
