//! G6 across backups: a backup directory is not a store. Opened as one with
//! the live key file, it would serve every subject erased since the backup
//! was taken, without the replay of the erasure log that a restore does. It
//! is refused with a typed error that names the way out (a restore), and
//! the store that restore makes opens normally and serves nothing erased.

use std::path::Path;
use std::sync::Arc;

use shredkv::{Classes, Config, Db, ErasureSource, Error};
use shredkv_tests::{PROFILE, Store, close, for_each_backend, test_policy};

/// The scenario's configuration for another directory than the store's.
fn config_at(store: &Store, dir: &Path) -> Config {
    Config::new(dir)
        .allow_key_file_in_store(true)
        .backend(store.backend())
        .policy(test_policy())
        .clock(Arc::new(store.clock().clone()))
        .flush_every(None)
        .maintenance_every(None)
}

#[test]
fn backup_directory_is_not_served_as_a_store() {
    for_each_backend(|store| {
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let backup = elsewhere.path().join("backup");
        let live = store.open();
        for subject in ["gone", "kept"] {
            live.register_account(subject).expect("register");
            live.put(subject, PROFILE, b"p", subject.as_bytes())
                .expect("put");
        }
        let taken = live.backup(&backup).expect("backup").taken_at;
        live.shred("gone", Classes::All)
            .expect("shred after the backup");

        // With the live key file, and without any key file: refused, saying
        // what the directory is, when it was taken and how to restore it.
        for config in [
            config_at(store, &backup).key_file(store.key_file()),
            config_at(store, &backup),
        ] {
            match Db::open(config) {
                Err(Error::IsBackup { path, taken_at }) => {
                    assert_eq!(path, backup);
                    assert_eq!(taken_at, taken);
                }
                Err(other) => panic!("a backup opened as a store failed otherwise: {other}"),
                Ok(db) => panic!(
                    "a backup opened as a store; it serves the erased subject: {:?}",
                    db.get("gone", PROFILE, b"p")
                ),
            }
        }
        let err = Db::open(config_at(store, &backup).key_file(store.key_file()))
            .map(|_| ())
            .expect_err("still refused");
        let message = err.to_string();
        assert!(message.contains("is a backup"), "{message}");
        assert!(message.contains("restore"), "{message}");

        // The way out: a restore replays the erasure and clears the mark.
        let restored_dir = elsewhere.path().join("restored");
        let (restored, _) = Db::restore(
            &backup,
            config_at(store, &restored_dir).key_file(store.key_file()),
            ErasureSource::Live(&live),
        )
        .expect("restore");
        let err = restored
            .get("gone", PROFILE, b"p")
            .expect_err("erased since the backup");
        assert!(err.is_erased(), "{err}");
        close(restored);
        close(live);
        let reopened = Db::open(config_at(store, &restored_dir).key_file(store.key_file()))
            .expect("a completed restore opens as a store");
        assert_eq!(
            reopened.get("kept", PROFILE, b"p").expect("get").as_deref(),
            Some(&b"kept"[..])
        );
        let err = reopened
            .get("gone", PROFILE, b"p")
            .expect_err("still erased after reopening");
        assert!(err.is_erased(), "{err}");
    });
}
