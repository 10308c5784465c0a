//! Bad input gives typed errors that name what is wrong, never a panic and
//! never wrong data: a missing, corrupt, truncated or world-readable key
//! file (named in the message); another store's key file; a truncated or
//! garbage redb file and a garbage sled directory (the backend and path
//! named); unknown subjects and classes; record keys over 4096 bytes (on
//! writes, reads and deletes); and a
//! policy that differs from the store's (`Error::PolicyChanged` unless
//! `Config::apply_policy_change(true)`). After each damaged open the store
//! is restored and still opens with its data intact, so a refused open
//! never altered anything.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shredkv::{Backend, Batch, Classes, Db, Error, Policy};
use shredkv_crypto::ProviderError;
use shredkv_tests::{
    CLASSES, INVOICES, MESSAGES, PROFILE, Store, TEST_POLICY, for_each_backend, test_policy,
};

fn fill(store: &Store) {
    let db = store.open();
    db.register_account("acct").expect("register");
    for class in CLASSES {
        db.put("acct", class, b"r", class.as_bytes()).expect("put");
    }
    drop(db);
}

fn assert_intact(store: &Store) {
    let db = store.open();
    for class in CLASSES {
        assert_eq!(
            db.get("acct", class, b"r").expect("get").as_deref(),
            Some(class.as_bytes()),
            "{} {class}",
            store.backend()
        );
    }
}

fn open_err(store: &Store, what: &str) -> Error {
    Db::open(store.config()).expect_err(&format!("{} {what}: open must fail", store.backend()))
}

fn set_mode(path: &Path, mode: u32) {
    let mut permissions = fs::metadata(path).expect("metadata").permissions();
    permissions.set_mode(mode);
    fs::set_permissions(path, permissions).expect("chmod");
}

#[test]
fn damaged_or_exposed_key_files_are_named_in_typed_errors() {
    for_each_backend(|store| {
        fill(store);
        let key_file = store.key_file();
        let original = fs::read(&key_file).expect("read the key file");
        let shown = key_file.display().to_string();

        // World-readable.
        set_mode(&key_file, 0o644);
        let err = open_err(store, "world-readable key file");
        assert!(
            matches!(
                err,
                Error::KeyProvider(ProviderError::InsecurePermissions { mode: 0o644, .. })
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&shown) && text.contains("chmod 600"),
            "{text}"
        );
        set_mode(&key_file, 0o600);
        assert_intact(store);

        // Corrupt in several ways: wrong magic, a flipped header byte, a
        // flipped slot byte, truncated, empty.
        let mut wrong_magic = original.clone();
        wrong_magic[0] ^= 0xFF;
        let mut header_flip = original.clone();
        header_flip[12] ^= 0x01;
        let mut slot_flip = original.clone();
        slot_flip[32 + 20] ^= 0x01;
        for (what, bytes) in [
            ("wrong magic", wrong_magic),
            ("flipped header byte", header_flip),
            ("flipped slot byte", slot_flip),
            ("truncated", original[..40].to_vec()),
            ("empty", Vec::new()),
        ] {
            fs::write(&key_file, &bytes).expect("damage the key file");
            let err = open_err(store, what);
            assert!(
                matches!(err, Error::KeyProvider(ProviderError::Corrupt { .. })),
                "{what}: {err:?}"
            );
            assert!(err.to_string().contains(&shown), "{what}: {err}");
            fs::write(&key_file, &original).expect("restore the key file");
            assert_intact(store);
        }
    });
}

#[test]
fn a_missing_or_foreign_key_file_is_refused_without_harm() {
    for_each_backend(|store| {
        fill(store);
        let key_file = store.key_file();
        let original = fs::read(&key_file).expect("read the key file");

        fs::remove_file(&key_file).expect("remove the key file");
        let err = open_err(store, "missing key file");
        assert!(
            matches!(&err, Error::KeyFileMissing { key_file: named, .. } if *named == key_file),
            "{err:?}"
        );
        assert!(err.to_string().contains("is missing"), "{err}");
        assert!(
            !key_file.exists(),
            "a missing key file must not be recreated"
        );
        fs::write(&key_file, &original).expect("restore the key file");
        owner_only(&key_file);
        assert_intact(store);

        // Another store's key file: it has an epoch 1 too, with another key.
        let other = Store::new(store.backend());
        fill(&other);
        fs::copy(other.key_file(), &key_file).expect("swap in a foreign key file");
        let err = open_err(store, "foreign key file");
        assert!(matches!(err, Error::KeysDoNotMatch { .. }), "{err:?}");
        fs::write(&key_file, &original).expect("restore the key file");
        assert_intact(store);
        assert_intact(&other);
    });
}

/// Restores owner-only permissions (a file written anew gets the umask's).
fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// Damages the backend's files of a filled store in one way.
type Damage = fn(&Path);

fn truncate_to(path: &Path, len: u64) {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncation");
    file.set_len(len).expect("truncate");
}

fn garbage_over(path: &Path) {
    let len = fs::metadata(path).expect("metadata").len().max(64);
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ 0x5A).collect();
    fs::write(path, bytes).expect("write garbage");
}

#[test]
fn damaged_backend_files_give_typed_storage_errors() {
    let redb: [(&str, Damage); 5] = [
        ("truncated to half", |p| {
            truncate_to(p, fs::metadata(p).expect("metadata").len() / 2)
        }),
        ("truncated to one page", |p| truncate_to(p, 4096)),
        ("truncated to 100 bytes", |p| truncate_to(p, 100)),
        ("overwritten with garbage", garbage_over),
        ("replaced by a directory", |p| {
            fs::remove_file(p).expect("remove");
            fs::create_dir(p).expect("mkdir");
        }),
    ];
    let sled: [(&str, Damage); 2] = [
        ("every file overwritten with garbage", |p| {
            for entry in fs::read_dir(p).expect("read the sled dir") {
                let path = entry.expect("entry").path();
                if path.is_file() {
                    garbage_over(&path);
                }
            }
        }),
        ("replaced by a file", |p| {
            fs::remove_dir_all(p).expect("remove");
            fs::write(p, b"not a directory").expect("write");
        }),
    ];
    for (backend, cases) in [(Backend::Redb, &redb[..]), (Backend::Sled, &sled[..])] {
        for (what, damage) in cases {
            let store = Store::new(backend);
            fill(&store);
            damage(&store.backend_path());
            let err = open_err(&store, what);
            let Error::Storage(storage) = &err else {
                panic!("{backend} {what}: expected Error::Storage, got {err:?}");
            };
            assert_eq!(storage.backend(), backend, "{what}");
            let text = err.to_string();
            assert!(
                text.contains(&store.backend_path().display().to_string())
                    && text.contains(backend.name()),
                "{backend} {what}: the message names the backend and its files: {text}"
            );
        }
    }
}

/// sled's `conf` holds only the parameters the backend always uses, so a
/// damaged one (a kill while sled wrote it, or garbage) is written again
/// and the store opens with its data; before, such a store never opened.
#[test]
fn a_damaged_sled_conf_is_rewritten_and_loses_nothing() {
    let store = Store::new(Backend::Sled);
    fill(&store);
    let conf = store.backend_path().join("conf");
    fs::write(&conf, b"not a sled configuration").expect("write");
    assert_intact(&store);
    assert!(
        fs::read(&conf)
            .expect("read")
            .starts_with(b"segment_size: "),
        "sled wrote its conf again"
    );
}

#[test]
fn unknown_subjects_classes_and_oversized_keys_are_typed_errors() {
    for_each_backend(|store| {
        let db = store.open();
        db.register_account("acct").expect("register");
        let ghost = db.subject_tag("ghost");
        let unknown_subject = |result: Result<(), Error>, what: &str| match result {
            Err(Error::UnknownSubject { subject }) => {
                assert_eq!(subject, ghost, "{what}");
            }
            other => panic!("{what}: expected UnknownSubject, got {other:?}"),
        };
        unknown_subject(db.put("ghost", MESSAGES, b"k", b"v"), "put");
        unknown_subject(db.get("ghost", MESSAGES, b"k").map(drop), "get");
        unknown_subject(db.delete("ghost", MESSAGES, b"k").map(drop), "delete");
        unknown_subject(db.scan("ghost", MESSAGES).map(drop), "scan");
        unknown_subject(db.export("ghost").map(drop), "export");
        unknown_subject(db.shred("ghost", Classes::All).map(drop), "shred");
        unknown_subject(db.restrict("ghost"), "restrict");
        unknown_subject(db.re_register("ghost"), "re_register");
        unknown_subject(
            db.register_end_user("user", "ghost").map(drop),
            "end user of a ghost",
        );
        let text = db
            .get("ghost", MESSAGES, b"k")
            .expect_err("ghost")
            .to_string();
        assert!(
            text.contains(&ghost.to_hex()) && !text.contains("ghost"),
            "{text}"
        );

        let unknown_class = |result: Result<(), Error>, what: &str| match result {
            Err(Error::UnknownClass { class }) => assert_eq!(class, "no_such_class", "{what}"),
            other => panic!("{what}: expected UnknownClass, got {other:?}"),
        };
        unknown_class(db.put("acct", "no_such_class", b"k", b"v"), "put");
        unknown_class(db.get("acct", "no_such_class", b"k").map(drop), "get");
        unknown_class(db.delete("acct", "no_such_class", b"k").map(drop), "delete");
        unknown_class(db.scan("acct", "no_such_class").map(drop), "scan");
        unknown_class(
            db.shred("acct", Classes::Only(&[MESSAGES, "no_such_class"]))
                .map(drop),
            "shred",
        );
        // The failed shred erased nothing, not even the valid class.
        db.put("acct", MESSAGES, b"k", b"v")
            .expect("messages not erased");
        let text = db
            .scan("acct", "no_such_class")
            .expect_err("class")
            .to_string();
        assert!(text.contains("no_such_class"), "{text}");

        // Record keys: 4096 bytes is the limit, in every key mode.
        for class in [MESSAGES, INVOICES, PROFILE] {
            let at_limit = vec![b'k'; 4096];
            db.put("acct", class, &at_limit, b"v")
                .expect("a 4096-byte key");
            assert_eq!(
                db.get("acct", class, &at_limit).expect("get").as_deref(),
                Some(&b"v"[..])
            );
            let over = vec![b'k'; 4097];
            let err = db.put("acct", class, &over, b"v").expect_err("4097 bytes");
            assert!(
                matches!(
                    err,
                    Error::InvalidArgument {
                        what: "record key",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("4096"), "{err}");
            let mut batch = Batch::new();
            batch.put("acct", class, b"small", b"v");
            batch.put("acct", class, &vec![b'k'; 1 << 20], b"v");
            let err = db.apply(batch).expect_err("a batch with an oversized key");
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
            assert_eq!(db.get("acct", class, b"small").expect("get"), None);
            // A key no write could store is refused on reads too, not a miss.
            assert!(matches!(
                db.get("acct", class, &over),
                Err(Error::InvalidArgument {
                    what: "record key",
                    ..
                })
            ));
            assert!(matches!(
                db.delete("acct", class, &over),
                Err(Error::InvalidArgument {
                    what: "record key",
                    ..
                })
            ));
        }
    });
}

/// [`TEST_POLICY`] with `account_profile` kept 90 days instead of 60.
fn changed_policy() -> Policy {
    let text = TEST_POLICY.replace("retain = \"60 days\"", "retain = \"90 days\"");
    assert_ne!(text, TEST_POLICY);
    Policy::from_toml_str(&text, "changed test policy").expect("the changed policy parses")
}

#[test]
fn a_changed_policy_is_refused_unless_applied_explicitly() {
    for_each_backend(|store| {
        fill(store);
        let err = Db::open(store.config().policy(changed_policy()))
            .expect_err("a changed policy must be refused");
        assert!(matches!(err, Error::PolicyChanged { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&store.path().display().to_string()),
            "{err}"
        );
        // The default policy is another policy too.
        let err = Db::open(
            shredkv::Config::new(store.path())
                .backend(store.backend())
                .allow_key_file_in_store(true),
        )
        .expect_err("the default policy differs from the test policy");
        assert!(matches!(err, Error::PolicyChanged { .. }), "{err:?}");
        // Refusing changed nothing.
        assert_intact(store);

        let db = Db::open(
            store
                .config()
                .policy(changed_policy())
                .apply_policy_change(true),
        )
        .expect("an explicitly applied policy change");
        assert_eq!(db.policy().digest(), changed_policy().digest());
        assert_eq!(
            db.get("acct", PROFILE, b"r").expect("get").as_deref(),
            Some(PROFILE.as_bytes())
        );
        drop(db);
        // Applied once, the new policy is the store's: it opens without the
        // flag, and the old one is now the changed one.
        drop(
            Db::open(store.config().policy(changed_policy()))
                .expect("the applied policy is the store's"),
        );
        let err = Db::open(store.config().policy(test_policy()))
            .expect_err("the old policy is now a change");
        assert!(matches!(err, Error::PolicyChanged { .. }), "{err:?}");
    });
}

/// With the key file gone, `Db::open` fails with a typed error naming the
/// missing key file, and creates nothing. (Regression: it once created a
/// new, empty key file in its place and failed with an unknown-epoch error
/// that named no file.)
#[test]
fn a_missing_key_file_is_named_and_not_recreated() {
    for_each_backend(|store| {
        fill(store);
        fs::remove_file(store.key_file()).expect("remove the key file");
        let err = open_err(store, "missing key file");
        let created = store.key_file().exists();
        assert!(
            err.to_string()
                .contains(&store.key_file().display().to_string())
                && !created,
            "{}: `{err}`; a new key file was created: {created}",
            store.backend()
        );
    });
}

/// Another store's key file (it has a live epoch 1 too) makes `Db::open`
/// fail with an error saying the key file does not belong to the store,
/// naming it. (Regression: it once failed with `Error::Tampered` at the
/// store secret, blaming the store's data and naming no key file.)
#[test]
fn a_foreign_key_file_is_reported_as_such() {
    for_each_backend(|store| {
        fill(store);
        let other = Store::new(store.backend());
        fill(&other);
        fs::copy(other.key_file(), store.key_file()).expect("swap in a foreign key file");
        let err = open_err(store, "foreign key file");
        assert!(
            !matches!(err, Error::Tampered { .. })
                && err
                    .to_string()
                    .contains(&store.key_file().display().to_string()),
            "{}: `{err}`",
            store.backend()
        );
    });
}

/// When the backend's files are emptied or replaced by garbage that the
/// backend reads as an empty database (redb: a 0-byte `store.redb`; sled:
/// garbage over, or an empty, `sled/db`), `Db::open` fails with a typed
/// error: the key file exists, so the store existed. (Regression: it once
/// initialized a brand-new store under the existing key file, every subject
/// and record silently gone.)
#[test]
fn an_emptied_backend_is_not_silently_a_new_store() {
    let cases: [(Backend, &str, Damage); 3] = [
        (Backend::Redb, "store.redb emptied", |p| truncate_to(p, 0)),
        (Backend::Sled, "sled/db overwritten with garbage", |p| {
            garbage_over(&p.join("db"))
        }),
        (Backend::Sled, "sled/db emptied", |p| {
            truncate_to(&p.join("db"), 0)
        }),
    ];
    let mut silently_new = Vec::new();
    for (backend, what, damage) in cases {
        let store = Store::new(backend);
        fill(&store);
        damage(&store.backend_path());
        if let Ok(db) = Db::open(store.config()) {
            silently_new.push(format!(
                "{backend} {what}: opened with {} subjects; get gives {:?}",
                db.subjects().expect("subjects").len(),
                db.get("acct", MESSAGES, b"r").map_err(|e| e.to_string())
            ));
        }
    }
    assert!(silently_new.is_empty(), "{silently_new:#?}");
}

/// `apply_policy_change(true)` refuses a policy that switches an existing
/// class between `blinded` and `ordered` keys: a class's key mode is part
/// of its on-disk format. (Regression: it once accepted it; the stored
/// records kept their old layout, so `get` found nothing and `scan`
/// returned blinded tags and internal payloads as data.)
#[test]
fn a_policy_change_cannot_switch_a_class_key_mode() {
    for_each_backend(|store| {
        fill(store);
        let text = TEST_POLICY.replacen("keys = \"blinded\"", "keys = \"ordered\"", 1);
        let policy = Policy::from_toml_str(&text, "key mode switched").expect("parses");
        match Db::open(store.config().policy(policy).apply_policy_change(true)) {
            Err(err) => assert!(
                matches!(err, Error::Policy(_) | Error::PolicyViolation { .. }),
                "{err:?}"
            ),
            Ok(db) => panic!(
                "{}: key mode switched; get {:?}, scan {:?}",
                store.backend(),
                db.get("acct", MESSAGES, b"r"),
                db.scan("acct", MESSAGES)
            ),
        }
    });
}

/// Opening a store this process already has open fails (after the short
/// wait that lets a closing `Db` go) with an error that says so and says to
/// share the `Db`, not one that blames another process; once the first
/// `Db` is dropped the store opens at once.
#[test]
fn a_second_open_in_this_process_names_the_cause() {
    for_each_backend(|store| {
        let first = store.open();
        let err = open_err(store, "second open");
        assert!(err.is_locked(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("this process already has the store open"),
            "{text}"
        );
        assert!(text.contains("share that Db"), "{text}");
        assert!(!text.contains("another process"), "{text}");
        drop(first);
        drop(store.open());
    });
}
