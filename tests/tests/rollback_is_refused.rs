//! A store that went back in time is refused, never served (issue 12): its
//! key provider keeps an anchor (the position of the last durable audit
//! entry) outside the store's files, and `Db::open` compares the two.
//!
//! - the store directory copied back after a shred (a snapshot, `cp -a`);
//! - damage to the end of the backend's files after a shred (sled drops a
//!   damaged log tail silently, and the shred went with it: before the
//!   anchor, 64 of 64 such trials brought the subject back);
//! - a restore takes over the key file: the store it replaced is refused.
//!
//! The key file lives outside the store directory here, as in production:
//! a copy of the directory that carried its key file would carry an older
//! anchor too.
//!
//! `SHREDKV_DAMAGE_TRIALS` (default 64) sets the damage trials per backend.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shredkv::{Backend, Classes, Config, Db, ErasureSource, Error};
use shredkv_crypto::{FileKeyProvider, KeyProvider};
use shredkv_tests::{BACKENDS, Rng, test_clock, test_policy};

struct Layout {
    _root: tempfile::TempDir,
    store: PathBuf,
    keys: PathBuf,
    backend: Backend,
    clock: shredkv::ManualClock,
}

impl Layout {
    fn new(backend: Backend) -> Self {
        let root = tempfile::tempdir().expect("dir");
        Self {
            store: root.path().join("store"),
            keys: root.path().join("keys"),
            _root: root,
            backend,
            clock: test_clock(),
        }
    }

    fn config(&self, dir: &Path) -> Config {
        Config::new(dir)
            .backend(self.backend)
            .key_file(&self.keys)
            .policy(test_policy())
            .clock(Arc::new(self.clock.clone()))
            .flush_every(None)
            .maintenance_every(None)
    }

    fn open(&self) -> Result<Db, Error> {
        Db::open(self.config(&self.store))
    }

    fn sibling(&self, name: &str) -> PathBuf {
        self.store.with_file_name(name)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn replace_dir(dir: &Path, with: &Path) {
    fs::remove_dir_all(dir).expect("remove");
    copy_dir(with, dir);
}

/// A store with one subject's records, closed.
fn written(layout: &Layout) {
    let db = layout.open().expect("create");
    db.register_account("alice").expect("register");
    db.put("alice", "message_content", b"m", b"see you at noon")
        .expect("put");
    db.put("alice", "invoices", b"inv-1", b"42 EUR")
        .expect("put");
    db.flush().expect("flush");
}

fn shred_alice(layout: &Layout) {
    let db = layout.open().expect("open");
    db.shred("alice", Classes::All).expect("shred");
}

fn assert_rolled_back(result: Result<Db, Error>, what: &str) {
    match result {
        Err(err @ Error::StoreRolledBack { .. }) => {
            assert!(err.is_integrity_failure(), "{what}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("behind the anchor") && text.contains("restore"),
                "{what}: the message names the cause and the way out: {text}"
            );
        }
        Err(err) => panic!("{what}: expected StoreRolledBack, got {err}"),
        Ok(_) => panic!("{what}: a rolled-back store was opened"),
    }
}

#[test]
fn a_store_directory_copied_back_after_a_shred_is_refused() {
    for backend in BACKENDS {
        let layout = Layout::new(backend);
        written(&layout);
        let before = layout.sibling("before-shred");
        copy_dir(&layout.store, &before);
        shred_alice(&layout);
        let latest = layout.sibling("latest");
        copy_dir(&layout.store, &latest);

        replace_dir(&layout.store, &before);
        assert_rolled_back(layout.open(), &format!("{backend}: copied back"));
        // Refused twice the same way: the refusal changed nothing.
        assert_rolled_back(layout.open(), &format!("{backend}: again"));

        // The latest files put back open, with the shred standing.
        replace_dir(&layout.store, &latest);
        let db = layout.open().expect("the latest files open");
        assert!(
            db.get("alice", "message_content", b"m")
                .expect_err("erased")
                .is_erased()
        );
    }
}

/// The reproduction: 64 zeroed (even trials) or random (odd
/// trials) bytes near the end of the backend's written data after a shred. Each trial must end in a refusal (the
/// anchor, or the backend's own checks) or a store where the shred stands.
#[test]
fn damage_at_the_end_of_the_files_after_a_shred_never_resurrects() {
    let trials: usize = std::env::var("SHREDKV_DAMAGE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    for backend in BACKENDS {
        let layout = Layout::new(backend);
        written(&layout);
        shred_alice(&layout);
        let shredded = layout.sibling("shredded");
        copy_dir(&layout.store, &shredded);
        let data_file = match backend {
            Backend::Redb => PathBuf::from("store.redb"),
            _ => PathBuf::from("sled").join("db"),
        };
        let bytes = fs::read(shredded.join(&data_file)).expect("read");
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let (mut refused, mut standing) = (0, 0);
        let mut why: std::collections::BTreeMap<String, usize> = Default::default();
        for trial in 0..trials {
            // Spread over the last 4 KiB of written data, then the whole file.
            let span = if trial < 64 { 4096.min(end) } else { end };
            let offset = end - span + (trial * 4099) % span.max(1);
            replace_dir(&layout.store, &shredded);
            let mut damaged = bytes.clone();
            let stop = (offset + 64).min(damaged.len());
            if trial % 2 == 0 {
                damaged[offset..stop].fill(0);
            } else {
                // Random bytes: the damage that made sled panic in its open.
                let mut rng = Rng::new(u64::try_from(trial).unwrap_or(u64::MAX));
                for b in &mut damaged[offset..stop] {
                    *b = rng.next_u64().to_be_bytes()[0];
                }
            }
            fs::write(layout.store.join(&data_file), &damaged).expect("damage");
            match layout.open() {
                Err(err) => {
                    refused += 1;
                    let kind = match &err {
                        Error::StoreRolledBack { .. } => "behind the anchor".to_string(),
                        Error::Storage(e) if e.is_corruption() => "backend: corrupt".to_string(),
                        other => format!("other: {other}"),
                    };
                    *why.entry(kind).or_default() += 1;
                }
                Ok(db) => {
                    let state = db.subject("alice").ok().flatten().map(|s| s.state);
                    let read = db.get("alice", "message_content", b"m");
                    assert!(
                        state == Some(shredkv::SubjectState::Erased)
                            && read.as_ref().is_err_and(Error::is_erased),
                        "{backend}, trial {trial}, 64 damaged bytes at {offset} of {end}: the shred \
                         was undone (state {state:?}, read {read:?})"
                    );
                    standing += 1;
                }
            }
        }
        eprintln!(
            "{backend}: {trials} trials, {refused} refused ({why:?}), {standing} opened with the \
             shred standing, 0 resurrections"
        );
    }
}

/// A restore takes over the key file: from then on the store it came from
/// is refused, and so is any older copy; the restored one opens.
#[test]
fn a_restore_takes_over_and_the_store_it_replaced_is_refused() {
    for backend in BACKENDS {
        let layout = Layout::new(backend);
        written(&layout);
        let backup = layout.sibling("backup");
        {
            let db = layout.open().expect("open");
            db.backup(&backup).expect("backup");
            db.shred("alice", Classes::All).expect("shred");
            let target = layout.sibling("restored");
            let (restored, _) =
                Db::restore(&backup, layout.config(&target), ErasureSource::Live(&db))
                    .expect("restore");
            assert!(
                restored
                    .get("alice", "message_content", b"m")
                    .expect_err("the shred was replayed")
                    .is_erased()
            );
            // The replaced store, still open, cannot write durably any more.
            db.register_account("bob").expect("register");
            let err = db
                .place_hold("bob", None, "case 7")
                .expect_err("taken over");
            assert!(err.to_string().contains("taken over"), "{err}");
        }
        assert_rolled_back(layout.open(), &format!("{backend}: the replaced store"));
        let restored = Db::open(layout.config(&layout.sibling("restored"))).expect("opens");
        assert!(
            restored
                .get("alice", "message_content", b"m")
                .expect_err("erased")
                .is_erased()
        );
        let anchor = FileKeyProvider::open(&layout.keys)
            .expect("key file")
            .anchor()
            .expect("anchor")
            .expect("set");
        assert_eq!(anchor.generation, 1, "one restore");
    }
}
