//! The sled 0.34.7 backend: one sled tree per [`Tree`], in `dir/sled/`.
//!
//! A one-op batch is a plain insert or remove, a batch that touches one tree
//! is applied with `Tree::apply_batch`, one that touches several with a
//! multi-tree transaction; sled recovers either all of it or none after a
//! crash. `Durable` applies flush the log before
//! returning; `Buffered` ones reach disk at the next flush (sled's own runs
//! every 500 ms).
//!
//! Opening repairs the one unopenable state measured under SIGKILL: a kill
//! during sled's open leaves a partial `snap.<lsn>.generating` snapshot that
//! sled then reads and rejects as corrupt on every later open. When an open
//! fails as corrupt, such files are removed and the open retried once. A
//! kill while sled writes its `conf` file (created on the first open, in
//! place, without fsync) leaves it torn, and sled then refuses the store
//! for good; a `conf` whose checksum fails is removed before the open, and
//! sled writes it again (it holds only the parameters this backend always
//! uses: sled's defaults).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionResult, TransactionError, Transactional};

use super::{
    Backend, Durability, Op, Order, Space, Storage, StorageError, StorageErrorKind, Tree,
    WriteBatch, range_is_empty,
};

/// How long `open` waits for the store's file lock before reporting it held.
/// A killed process's lock can stay taken for a moment while it exits.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The sled directory inside a store directory.
pub(super) const SLED_DIR: &str = "sled";

/// A store on sled: the database and its open trees.
pub(crate) struct SledStorage {
    db: sled::Db,
    /// Every [`Tree`] with its sled tree, in [`Tree::ALL`] order.
    trees: Vec<(Tree, sled::Tree)>,
    /// The sled directory, for error messages.
    path: PathBuf,
}

impl SledStorage {
    /// Opens or creates the store in `dir/sled/`, creating `dir` if missing.
    pub(crate) fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with(dir, LOCK_WAIT)
    }

    /// [`SledStorage::open`], waiting at most `lock_wait` for the file lock.
    fn open_with(dir: &Path, lock_wait: Duration) -> Result<Self, StorageError> {
        let path = dir.join(SLED_DIR);
        fs::create_dir_all(&path).map_err(|e| io_error("open", &path, e))?;
        remove_torn_conf(&path)?;
        let db = open_db(&path, lock_wait)?;
        let trees = Tree::ALL
            .iter()
            .map(|&tree| {
                db.open_tree(tree.name())
                    .map(|t| (tree, t))
                    .map_err(|e| sled_error("open", &path, e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { db, trees, path })
    }

    /// The sled tree holding `tree`.
    fn tree(&self, tree: Tree, action: &'static str) -> Result<&sled::Tree, StorageError> {
        self.trees
            .iter()
            .find(|(t, _)| *t == tree)
            .map(|(_, t)| t)
            .ok_or_else(|| StorageError {
                backend: Backend::Sled,
                action,
                path: self.path.clone(),
                kind: StorageErrorKind::Other,
                source: format!("tree `{}` was not opened", tree.name()).into(),
            })
    }

    /// Applies `batch` atomically. `fail_at` is a test hook: abort the
    /// multi-tree transaction before applying the changes of its
    /// `fail_at`-th tree (0-based), after the earlier trees' were staged.
    fn apply_atomic(&self, batch: &WriteBatch, fail_at: Option<usize>) -> Result<(), StorageError> {
        // One change is atomic on its own, and a plain insert or remove is
        // over ten times faster than a one-op `apply_batch` (measured here).
        if fail_at.is_none()
            && let [op] = batch.ops.as_slice()
        {
            let done = match op {
                Op::Put { tree, key, value } => self
                    .tree(*tree, "write")?
                    .insert(key.as_slice(), value.as_slice()),
                Op::Remove { tree, key } => self.tree(*tree, "write")?.remove(key.as_slice()),
            };
            return done
                .map(drop)
                .map_err(|e| sled_error("write", &self.path, e));
        }
        // sled::Batch keeps the last change per key, as the seam requires.
        let mut per_tree: BTreeMap<Tree, sled::Batch> = BTreeMap::new();
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } => {
                    per_tree
                        .entry(*tree)
                        .or_default()
                        .insert(key.as_slice(), value.as_slice());
                }
                Op::Remove { tree, key } => {
                    per_tree.entry(*tree).or_default().remove(key.as_slice())
                }
            }
        }
        if per_tree.len() == 1
            && fail_at.is_none()
            && let Some((tree, changes)) = per_tree.pop_first()
        {
            return self
                .tree(tree, "write")?
                .apply_batch(changes)
                .map_err(|e| sled_error("write", &self.path, e));
        }
        if per_tree.is_empty() {
            return Ok(());
        }
        let mut trees = Vec::with_capacity(per_tree.len());
        let mut changes = Vec::with_capacity(per_tree.len());
        for (tree, change) in per_tree {
            trees.push(self.tree(tree, "write")?.clone());
            changes.push(change);
        }
        let result = trees.as_slice().transaction(
            |views: &Vec<sled::transaction::TransactionalTree>| -> ConflictableTransactionResult<(), ()> {
                for (i, (view, change)) in views.iter().zip(&changes).enumerate() {
                    if fail_at == Some(i) {
                        return sled::transaction::abort(());
                    }
                    view.apply_batch(change)?;
                }
                Ok(())
            },
        );
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(sled_error("write", &self.path, e)),
            Err(TransactionError::Abort(())) => Err(StorageError {
                backend: Backend::Sled,
                action: "write",
                path: self.path.clone(),
                kind: StorageErrorKind::Other,
                source: "the write transaction was aborted (injected fault)".into(),
            }),
        }
    }
}

impl Storage for SledStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.tree(tree, "read")?
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| sled_error("read", &self.path, e))
    }

    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        if range_is_empty(start, end) {
            return Ok(());
        }
        let range = self.tree(tree, "scan")?.range::<&[u8], _>((start, end));
        let mut step = |entry: sled::Result<(sled::IVec, sled::IVec)>| {
            entry
                .map(|(k, v)| visit(&k, &v))
                .map_err(|e| sled_error("scan", &self.path, e))
        };
        match order {
            Order::Ascending => {
                for entry in range {
                    if step(entry)?.is_break() {
                        break;
                    }
                }
            }
            Order::Descending => {
                for entry in range.rev() {
                    if step(entry)?.is_break() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StorageError> {
        self.apply_atomic(batch, None)?;
        match durability {
            Durability::Buffered => Ok(()),
            Durability::Durable => self.flush(),
        }
    }

    fn has_insert_new(&self) -> bool {
        true
    }

    fn insert_new(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<bool, StorageError> {
        let swapped = self
            .tree(tree, "write")?
            .compare_and_swap(key, None::<&[u8]>, Some(value))
            .map_err(|e| sled_error("write", &self.path, e))?;
        if swapped.is_err() {
            return Ok(false);
        }
        if durability == Durability::Durable {
            self.flush()?;
        }
        Ok(true)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|e| sled_error("flush", &self.path, e))
    }

    fn space(&self) -> Result<Space, StorageError> {
        let size = self
            .db
            .size_on_disk()
            .map_err(|e| sled_error("read", &self.path, e))?;
        Ok(Space::local(size, &self.path))
    }

    fn backend(&self) -> Backend {
        Backend::Sled
    }
}

/// Opens the sled database in `path`, waiting up to `lock_wait` for its
/// file lock and removing a partial snapshot that makes it unopenable.
fn open_db(path: &Path, lock_wait: Duration) -> Result<sled::Db, StorageError> {
    let deadline = Instant::now() + lock_wait;
    let mut pause = Duration::from_millis(10);
    let mut repaired = false;
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StorageError {
                        backend: Backend::Sled,
                        action: "open",
                        path: path.to_path_buf(),
                        kind: StorageErrorKind::Locked,
                        source: format!(
                            "another process holds the store (its lock stayed taken for {lock_wait:?}): {e}"
                        )
                        .into(),
                    });
                }
                thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            // sled read the newest snapshot file and found it damaged. We held
            // the lock while it did, so no live process is writing that file:
            // a `.generating` one is the remnant of a killed open, and sled
            // rebuilds its state from the log (and older snapshot) without it.
            Err(e @ sled::Error::Corruption { .. }) if !repaired => {
                repaired = true;
                if remove_partial_snapshots(path)? == 0 {
                    return Err(sled_error("open", path, e));
                }
            }
            Err(e) => return Err(sled_error("open", path, e)),
        }
    }
}

/// Removes sled's `conf` in `path` if it is torn: longer than sled's own
/// "empty" threshold (8 bytes, which sled already rewrites) and failing its
/// CRC32 (little-endian, after the text). Returns whether it did.
fn remove_torn_conf(path: &Path) -> Result<bool, StorageError> {
    let conf = path.join("conf");
    let bytes = match fs::read(&conf) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error("open", &conf, e)),
    };
    let Some((text, crc)) = bytes.split_last_chunk::<4>() else {
        return Ok(false);
    };
    #[allow(
        clippy::little_endian_bytes,
        reason = "sled writes this CRC little-endian"
    )]
    let stored = u32::from_le_bytes(*crc);
    if bytes.len() <= 8 || crc32fast::hash(text) == stored {
        return Ok(false);
    }
    fs::remove_file(&conf).map_err(|e| io_error("open", &conf, e))?;
    Ok(true)
}

/// Removes the `snap.<lsn>.generating` files in `path`: snapshots whose
/// writer stopped before renaming them complete. Returns how many.
fn remove_partial_snapshots(path: &Path) -> Result<usize, StorageError> {
    let mut removed = 0;
    for entry in fs::read_dir(path).map_err(|e| io_error("open", path, e))? {
        let entry = entry.map_err(|e| io_error("open", path, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("snap.") && name.ends_with(".generating") {
            fs::remove_file(entry.path()).map_err(|e| io_error("open", &entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether sled failed to take its file lock (it reports that only as a
/// formatted I/O error).
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// A sled failure while doing `action` at `path`.
fn sled_error(action: &'static str, path: &Path, e: sled::Error) -> StorageError {
    let kind = match &e {
        sled::Error::Io(io) => StorageErrorKind::of_io(io),
        sled::Error::Corruption { .. } => StorageErrorKind::Corrupt,
        _ => StorageErrorKind::Other,
    };
    StorageError {
        backend: Backend::Sled,
        action,
        path: path.to_path_buf(),
        kind,
        source: Box::new(e),
    }
}

/// A file system failure while doing `action` at `path`.
fn io_error(action: &'static str, path: &Path, e: io::Error) -> StorageError {
    StorageError {
        backend: Backend::Sled,
        action,
        path: path.to_path_buf(),
        kind: StorageErrorKind::of_io(&e),
        source: Box::new(e),
    }
}

#[cfg(test)]
/// Checks specific to sled (the shared ones are in `conformance`).
mod tests {
    use super::*;

    /// sled reporting a full disk is a full store, not a mere I/O error.
    #[test]
    fn a_full_disk_is_reported_as_full() {
        let full = sled_error(
            "write",
            Path::new("store"),
            sled::Error::Io(io::Error::from(io::ErrorKind::StorageFull)),
        );
        assert!(full.is_full(), "{full}");
        let other = io_error(
            "write",
            Path::new("store"),
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert!(!other.is_full(), "{other}");
    }

    /// A temporary directory, removed when dropped.
    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    /// Writes `round`'s records: keys 0..100 of `Data` and one `Vault` key.
    fn write_round(store: &SledStorage, round: u8) {
        let mut batch = WriteBatch::new();
        for i in 0..100u32 {
            batch.put(Tree::Data, i.to_be_bytes(), vec![round; 64]);
        }
        batch.put(Tree::Vault, [round], b"key");
        store
            .apply(&batch, Durability::Durable)
            .expect("apply succeeds");
    }

    /// Checks that the writes of rounds `0..rounds` are all there.
    fn assert_rounds(store: &SledStorage, rounds: u8) {
        for round in 0..rounds {
            assert_eq!(
                store.get(Tree::Vault, &[round]).expect("get"),
                Some(b"key".to_vec())
            );
        }
        let last = rounds - 1;
        for i in 0..100u32 {
            let value = store.get(Tree::Data, &i.to_be_bytes()).expect("get");
            assert_eq!(value, Some(vec![last; 64]), "data key {i}");
        }
    }

    /// Copies a directory tree.
    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).expect("create the copy");
        for entry in fs::read_dir(from).expect("read the store") {
            let entry = entry.expect("a directory entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("a file type").is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).expect("copy a file");
            }
        }
    }

    /// The names of the `snap.*` files in `dir`, sorted.
    fn snapshot_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read the store")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("snap."))
            .collect();
        names.sort();
        names
    }

    /// Reproduces the measured failure: a SIGKILL while sled opens a store
    /// leaves a partial `snap.<lsn>.generating`, after which sled refuses
    /// every open as corrupt. `SledStorage::open` recovers it, data intact.
    #[test]
    fn partial_snapshot_from_killed_open_is_recovered() {
        // Nothing written, a partly written body, all but the last CRC byte.
        for keep in [Keep::Nothing, Keep::Half, Keep::AllButOne] {
            let dir = tempdir();
            let sled_dir = dir.path().join(SLED_DIR);
            // Two rounds with a close between: the reopen writes a snapshot,
            // and the second round's writes are newer than it, so the next
            // open writes a new one (as the killed open was doing).
            for round in 0..2 {
                let store = SledStorage::open(dir.path()).expect("open");
                write_round(&store, round);
            }
            let before = snapshot_files(&sled_dir);
            assert_eq!(before.len(), 1, "one complete snapshot: {before:?}");

            // The snapshot the next open writes, made by opening a copy:
            // the killed open was writing exactly this file.
            let scratch = tempdir();
            copy_dir(&sled_dir, scratch.path());
            drop(sled::open(scratch.path()).expect("the copy opens"));
            let complete = snapshot_files(scratch.path())
                .pop()
                .expect("opening wrote a snapshot");
            assert!(complete > before[0], "the new snapshot is newer");
            let bytes = fs::read(scratch.path().join(&complete)).expect("read the snapshot");
            let len = match keep {
                Keep::Nothing => 0,
                Keep::Half => bytes.len() / 2,
                Keep::AllButOne => bytes.len() - 1,
            };
            let partial = sled_dir.join(format!("{complete}.generating"));
            fs::write(&partial, bytes.get(..len).expect("a prefix"))
                .expect("plant the partial snapshot");

            // Plain sled cannot open the store any more...
            match sled::open(&sled_dir) {
                Err(sled::Error::Corruption { at: None, .. }) => {}
                Err(other) => panic!("{keep:?}: expected corruption, got {other:?}"),
                Ok(_) => panic!("{keep:?}: sled opened a store with a partial snapshot"),
            }
            // ...and the backend recovers it, with every write intact.
            let store = SledStorage::open(dir.path()).expect("the backend recovers the store");
            assert!(!partial.exists(), "the partial snapshot was removed");
            assert_rounds(&store, 2);
            write_round(&store, 2);
            drop(store);
            let store = SledStorage::open(dir.path()).expect("reopens");
            assert_rounds(&store, 3);
        }
    }

    /// How much of the snapshot the killed open had written.
    #[derive(Debug, Clone, Copy)]
    enum Keep {
        /// The file was created, nothing written.
        Nothing,
        /// Half the snapshot body was written.
        Half,
        /// Everything but the last byte of the trailing CRC was written.
        AllButOne,
    }

    /// A damaged snapshot that is not a partial one is reported as corrupt,
    /// not deleted.
    #[test]
    fn damaged_complete_snapshot_is_reported_corrupt() {
        let dir = tempdir();
        let sled_dir = dir.path().join(SLED_DIR);
        for round in 0..2 {
            let store = SledStorage::open(dir.path()).expect("open");
            write_round(&store, round);
        }
        let snapshot = sled_dir.join(snapshot_files(&sled_dir).pop().expect("a snapshot"));
        let mut bytes = fs::read(&snapshot).expect("read the snapshot");
        let last = bytes.last_mut().expect("a non-empty snapshot");
        *last ^= 0xff;
        fs::write(&snapshot, &bytes).expect("damage the snapshot");
        let err = SledStorage::open(dir.path())
            .err()
            .expect("a damaged snapshot is not opened");
        assert_eq!(err.kind, StorageErrorKind::Corrupt, "{err}");
        assert_eq!(err.action, "open");
        assert!(snapshot.exists(), "a complete snapshot is never removed");
    }

    /// A kill while sled writes `conf` leaves any prefix of it: every
    /// prefix, and a flipped byte, still opens with the data intact (before
    /// the repair, prefixes past 8 bytes made the store unopenable).
    #[test]
    fn a_torn_conf_file_is_rewritten_and_the_store_opens() {
        let dir = tempdir();
        let conf = dir.path().join(SLED_DIR).join("conf");
        {
            let store = SledStorage::open(dir.path()).expect("open");
            write_round(&store, 7);
            store.flush().expect("flush");
        }
        let whole = fs::read(&conf).expect("read conf");
        let mut damaged: Vec<Vec<u8>> = (0..whole.len()).map(|n| whole[..n].to_vec()).collect();
        let mut flipped = whole.clone();
        flipped[3] ^= 0x20;
        damaged.push(flipped);
        for bytes in damaged {
            fs::write(&conf, &bytes).expect("tear conf");
            let store = SledStorage::open(dir.path())
                .unwrap_or_else(|e| panic!("conf of {} bytes: {e}", bytes.len()));
            assert_eq!(
                store.get(Tree::Vault, &[7]).expect("get"),
                Some(b"key".to_vec()),
                "conf of {} bytes",
                bytes.len()
            );
            drop(store);
            assert_eq!(
                fs::read(&conf).expect("read conf"),
                whole,
                "rewritten whole"
            );
        }
    }

    /// A multi-tree batch that fails after one tree's changes were staged
    /// leaves nothing behind, before and after a reopen.
    #[test]
    fn failed_multi_tree_batch_applies_nothing() {
        let dir = tempdir();
        let store = SledStorage::open(dir.path()).expect("open");
        let mut before = WriteBatch::new();
        before.put(Tree::Data, b"record", b"old");
        before.put(Tree::Vault, b"key", b"active");
        store
            .apply(&before, Durability::Durable)
            .expect("apply succeeds");

        let mut batch = WriteBatch::new();
        batch.put(Tree::Data, b"record", b"new");
        batch.put(Tree::Data, b"record 2", b"new");
        batch.put(Tree::Vault, b"key", b"destroyed");
        batch.remove(Tree::Data, b"nothing");
        batch.put(Tree::Ledger, b"subject", b"erased");
        for fail_at in 1..3 {
            let err = store
                .apply_atomic(&batch, Some(fail_at))
                .expect_err("the injected fault fails the batch");
            assert_eq!(err.kind, StorageErrorKind::Other);
            assert_eq!(
                store.get(Tree::Data, b"record").expect("get"),
                Some(b"old".to_vec())
            );
            assert_eq!(store.get(Tree::Data, b"record 2").expect("get"), None);
            assert_eq!(
                store.get(Tree::Vault, b"key").expect("get"),
                Some(b"active".to_vec())
            );
            assert_eq!(store.get(Tree::Ledger, b"subject").expect("get"), None);
        }
        store.flush().expect("flush");
        drop(store);
        let store = SledStorage::open(dir.path()).expect("reopen");
        assert_eq!(
            store.get(Tree::Data, b"record").expect("get"),
            Some(b"old".to_vec())
        );
        assert_eq!(
            store.get(Tree::Vault, b"key").expect("get"),
            Some(b"active".to_vec())
        );
        store
            .apply(&batch, Durability::Buffered)
            .expect("without the fault it applies");
        assert_eq!(
            store.get(Tree::Data, b"record 2").expect("get"),
            Some(b"new".to_vec())
        );
        assert_eq!(
            store.get(Tree::Vault, b"key").expect("get"),
            Some(b"destroyed".to_vec())
        );
        assert_eq!(
            store.get(Tree::Ledger, b"subject").expect("get"),
            Some(b"erased".to_vec())
        );
    }

    /// A store held open is reported as locked after a bounded wait.
    #[test]
    fn held_store_is_reported_locked() {
        let dir = tempdir();
        let store = SledStorage::open(dir.path()).expect("open");
        let started = Instant::now();
        let err = SledStorage::open_with(dir.path(), Duration::from_millis(100))
            .err()
            .expect("a held store does not open twice");
        assert_eq!(err.kind, StorageErrorKind::Locked, "{err}");
        assert!(
            err.to_string().contains("another process holds the store"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(100), "it waited");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the wait is bounded"
        );
        drop(store);
        SledStorage::open(dir.path()).expect("opens once released");
    }
}
