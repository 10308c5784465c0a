//! The key file lives apart from the data (issue 12): a key file inside the
//! store directory travels with every copy of the store (a snapshot,
//! `cp -a`, a backup of the volume), and whoever holds the copy holds the
//! keys to everything not yet erased. So `Db::open` refuses it, before
//! creating anything, unless the caller opts in (tests and demos), and says
//! where to put it instead.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use shredkv::{Config, Db, Error};
use shredkv_tests::{MESSAGES, close, test_clock, test_policy};

fn config(store: &Path) -> Config {
    Config::new(store)
        .policy(test_policy())
        .clock(Arc::new(test_clock()))
        .flush_every(None)
        .maintenance_every(None)
}

fn assert_key_file_in_store(result: shredkv::Result<Db>, key_file: &Path, what: &str) {
    match result {
        Err(Error::KeyFileInStore {
            key_file: named, ..
        }) if named == key_file => {}
        Err(other) => panic!("{what}: expected KeyFileInStore, got {other}"),
        Ok(_) => panic!("{what}: a key file inside the store directory was accepted"),
    }
}

#[test]
fn a_key_file_inside_the_store_directory_is_refused_unless_allowed() {
    let root = tempfile::tempdir().expect("dir");
    let store = root.path().join("store");

    // The default place, `store/keys`: refused, and nothing was created.
    let err = Db::open(config(&store)).map(|_| ()).expect_err("refused");
    assert_key_file_in_store(Err(err), &store.join("keys"), "default");
    assert!(
        !store.exists(),
        "a refused open created the store directory"
    );
    let message = Db::open(config(&store))
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    for names in [
        "inside store",
        "copy of the store",
        "key_file",
        "--key-file",
    ] {
        assert!(
            message.contains(names),
            "the message names `{names}`: {message}"
        );
    }

    // An explicit path inside it (a subdirectory, or through `..`).
    let nested = store.join("secrets").join("keys");
    assert_key_file_in_store(
        Db::open(config(&store).key_file(&nested)),
        &nested,
        "a subdirectory",
    );
    let dotted = root
        .path()
        .join("elsewhere")
        .join("..")
        .join("store")
        .join("k");
    fs::create_dir_all(root.path().join("elsewhere")).expect("mkdir");
    fs::create_dir_all(&store).expect("mkdir");
    assert_key_file_in_store(
        Db::open(config(&store).key_file(&dotted)),
        &dotted,
        "through ..",
    );

    // A symbolic link that leads into the store directory.
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&store, &link).expect("symlink");
    let through_link = link.join("keys");
    assert_key_file_in_store(
        Db::open(config(&store).key_file(&through_link)),
        &through_link,
        "through a symbolic link",
    );
    assert_eq!(
        fs::read_dir(&store).expect("list").count(),
        0,
        "refused opens created files in the store directory"
    );

    // Outside: opens. Allowed: opens with the default place too.
    let outside = root.path().join("store.keys");
    let db = Db::open(config(&store).key_file(&outside)).expect("a key file outside opens");
    db.register_account("alice").expect("register");
    db.put("alice", MESSAGES, b"m", b"hello").expect("put");
    close(db);
    let other = root.path().join("demo");
    close(Db::open(config(&other).allow_key_file_in_store(true)).expect("allowed"));
    assert!(other.join("keys").is_file());
}

/// A store made with its key file inside (allowed), opened later without
/// the opt-in: refused; once the key file is moved out and named, it opens
/// with its data.
#[test]
fn an_existing_key_file_inside_is_refused_until_moved_out() {
    let root = tempfile::tempdir().expect("dir");
    let store = root.path().join("store");
    let db = Db::open(config(&store).allow_key_file_in_store(true)).expect("create");
    db.register_account("alice").expect("register");
    db.put("alice", MESSAGES, b"m", b"hello").expect("put");
    close(db);

    assert_key_file_in_store(Db::open(config(&store)), &store.join("keys"), "existing");
    let moved = root.path().join("keys-elsewhere");
    fs::rename(store.join("keys"), &moved).expect("move the key file out");
    let db = Db::open(config(&store).key_file(&moved)).expect("opens with the moved key file");
    assert_eq!(
        db.get("alice", MESSAGES, b"m").expect("read"),
        Some(b"hello".to_vec())
    );
}
