//! The redb backend: one table per [`Tree`] in `dir/store.redb`.
//!
//! Every write is one redb write transaction, so batches are atomic across
//! trees and across a crash. `Buffered` commits skip the fsync
//! (`redb::Durability::None`); `Durable` commits and `flush` fsync, which in
//! redb also makes every earlier non-durable commit durable. Concurrent
//! writers share transactions through [`GroupCommit`]: redb runs one write
//! transaction at a time, and its commit, not the inserts, is the cost.
//!
//! Opening repairs the one unopenable state the crash test found: a SIGKILL
//! while redb creates the file leaves it sized, maybe with a header, but
//! without the magic number (written last), and redb refuses such a file on
//! every later open. It never held a commit, so it is removed and created
//! again (see `is_unfinished_creation`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, TableDefinition};

use super::group_commit::GroupCommit;
use super::{
    Backend, Durability, Op, Order, Space, Storage, StorageError, StorageErrorKind, Tree,
    WriteBatch, range_is_empty,
};

/// The database file inside a store directory.
pub(super) const FILE_NAME: &str = "store.redb";

/// How long `open` waits for the file lock before reporting it held. A
/// killed process's lock can stay taken for a moment while it exits.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The table holding `tree`.
fn table(tree: Tree) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(tree.name())
}

/// A store on redb.
pub(crate) struct RedbStorage {
    db: redb::Database,
    /// The database file.
    path: PathBuf,
    /// Writers waiting to share the next write transaction.
    group: GroupCommit,
}

impl RedbStorage {
    /// Opens or creates the store in `dir/store.redb`, creating `dir` if
    /// missing, and creates any missing table.
    pub(crate) fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with(dir, LOCK_WAIT)
    }

    /// [`RedbStorage::open`], waiting at most `lock_wait` for the file lock.
    fn open_with(dir: &Path, lock_wait: Duration) -> Result<Self, StorageError> {
        let path = dir.join(FILE_NAME);
        fs::create_dir_all(dir).map_err(|e| redb_error("open", &path, e))?;
        let db = open_db(&path, lock_wait)?;
        // All tables in one transaction, so no read ever meets a missing one.
        let txn = db.begin_write().map_err(|e| redb_error("open", &path, e))?;
        for tree in Tree::ALL {
            txn.open_table(table(tree))
                .map_err(|e| redb_error("open", &path, e))?;
        }
        txn.commit().map_err(|e| redb_error("open", &path, e))?;
        let group = GroupCommit::new(Backend::Redb, path.clone());
        Ok(Self { db, path, group })
    }

    /// Builds the error for a redb failure while doing `action`.
    fn fail<E: Into<redb::Error>>(&self, action: &'static str) -> impl Fn(E) -> StorageError + '_ {
        move |e| redb_error(action, &self.path, e)
    }

    /// Applies `batches` in order in one write transaction, fsynced if
    /// `durable`. `fail_at` is a test hook: fail before the op with that
    /// index (counted across the batches), after the earlier ops were made.
    fn commit(
        &self,
        batches: &[&WriteBatch],
        durable: bool,
        fail_at: Option<usize>,
    ) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(self.fail("write"))?;
        txn.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })
        .map_err(self.fail("write"))?;
        {
            // An error return drops `txn` uncommitted, which aborts it.
            let mut tables = BTreeMap::new();
            // Ops are counted across the batches, for `fail_at`.
            let mut counted = 0;
            for batch in batches {
                let runs = neighbour_runs(batch);
                let mut next_run = runs.iter().peekable();
                let mut i = 0;
                while let Some(op) = batch.ops.get(i) {
                    if fail_at == Some(counted + i) {
                        return Err(StorageError {
                            backend: Backend::Redb,
                            action: "write",
                            path: self.path.clone(),
                            kind: StorageErrorKind::Other,
                            source: "the write transaction failed (injected fault)".into(),
                        });
                    }
                    let (Op::Put { tree, .. } | Op::Remove { tree, .. }) = op;
                    let table = match tables.entry(*tree) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => {
                            e.insert(txn.open_table(table(*tree)).map_err(self.fail("write"))?)
                        }
                    };
                    while next_run.next_if(|run| run.start < i).is_some() {}
                    // A run the injected fault would cut goes op by op.
                    let whole_run = next_run.next_if(|run| run.start == i).filter(|run| {
                        fail_at.is_none_or(|f| !(counted + i + 1..counted + run.end).contains(&f))
                    });
                    match (op, whole_run) {
                        (Op::Remove { .. }, Some(run)) => {
                            remove_run(table, &batch.ops[run.clone()])
                                .map_err(self.fail("write"))?;
                            i = run.end;
                            continue;
                        }
                        (Op::Put { key, value, .. }, _) => {
                            table
                                .insert(key.as_slice(), value.as_slice())
                                .map_err(self.fail("write"))?;
                        }
                        (Op::Remove { key, .. }, None) => {
                            table.remove(key.as_slice()).map_err(self.fail("write"))?;
                        }
                    }
                    i += 1;
                }
                counted += batch.ops.len();
            }
        }
        txn.commit().map_err(self.fail("write"))
    }
}

/// The runs of `batch` that still hold what [`WriteBatch::remove_neighbours`]
/// made: removals in one tree, keys strictly ascending, apart from the run
/// before. Any other (its ops moved since) is left out, and its ops are
/// done one by one.
fn neighbour_runs(batch: &WriteBatch) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for run in &batch.neighbour_runs {
        let Some(ops) = batch.ops.get(run.clone()) else {
            continue;
        };
        let mut keys = ops.iter().map(|op| match op {
            Op::Remove { tree, key } => Some((*tree, key.as_slice())),
            Op::Put { .. } => None,
        });
        let Some(Some((tree, first))) = keys.next() else {
            continue;
        };
        let mut last = first;
        let ascending = keys.all(|next| match next {
            Some((t, key)) if t == tree && key > last => {
                last = key;
                true
            }
            _ => false,
        });
        if ascending && runs.last().is_none_or(|before| before.end <= run.start) {
            runs.push(run.clone());
        }
    }
    runs
}

/// Removes the keys of `ops` (a checked run: removals in `table`'s tree,
/// keys strictly ascending) in one pass over their range: each entry met
/// in it is kept unless it is the next key of the run.
fn remove_run(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    ops: &[Op],
) -> Result<(), redb::StorageError> {
    let keys: Vec<&[u8]> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Remove { key, .. } => Some(key.as_slice()),
            Op::Put { .. } => None,
        })
        .collect();
    let (Some(first), Some(last)) = (keys.first().copied(), keys.last().copied()) else {
        return Ok(());
    };
    let mut next = 0;
    table.retain_in::<&[u8], _>(first..=last, |key, _| {
        while keys.get(next).is_some_and(|k| *k < key) {
            next += 1;
        }
        keys.get(next) != Some(&key)
    })
}

impl Storage for RedbStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(self.fail("read"))?;
        let table = txn.open_table(table(tree)).map_err(self.fail("read"))?;
        let value = table.get(key).map_err(self.fail("read"))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn get_many(&self, tree: Tree, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let txn = self.db.begin_read().map_err(self.fail("read"))?;
        let table = txn.open_table(table(tree)).map_err(self.fail("read"))?;
        keys.iter()
            .map(|key| {
                let value = table.get(*key).map_err(self.fail("read"))?;
                Ok(value.map(|v| v.value().to_vec()))
            })
            .collect()
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
        // One read transaction: the scan sees one committed state throughout.
        let txn = self.db.begin_read().map_err(self.fail("scan"))?;
        let table = txn.open_table(table(tree)).map_err(self.fail("scan"))?;
        let range = table
            .range::<&[u8]>((start, end))
            .map_err(self.fail("scan"))?;
        let mut step = |entry: Result<_, redb::StorageError>| {
            let (k, v): (redb::AccessGuard<'_, &[u8]>, redb::AccessGuard<'_, &[u8]>) =
                entry.map_err(self.fail("scan"))?;
            Ok::<_, StorageError>(visit(k.value(), v.value()))
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
        if batch.is_empty() && durability == Durability::Buffered {
            return Ok(());
        }
        let durable = durability == Durability::Durable;
        self.group.submit(batch, durable, &|batches, durable| {
            self.commit(batches, durable, None)
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        // A durable commit persists every earlier non-durable one with it.
        self.group
            .submit(&WriteBatch::new(), true, &|batches, durable| {
                self.commit(batches, durable, None)
            })
            .map_err(|e| StorageError {
                action: "flush",
                ..e
            })
    }

    fn space(&self) -> Result<Space, StorageError> {
        let size = fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| redb_error("read", &self.path, e))?;
        Ok(Space::local(size, &self.path))
    }

    fn backend(&self) -> Backend {
        Backend::Redb
    }
}

/// Opens or creates the database file, waiting up to `lock_wait` for its
/// lock. Every open verifies the file's checksums (about 0.2 s for 140 MB
/// here), so a damaged file is reported as corrupt instead of trusted: a
/// plain redb open may panic on one, and was seen here returning wrong values.
fn open_db(path: &Path, lock_wait: Duration) -> Result<redb::Database, StorageError> {
    let deadline = Instant::now() + lock_wait;
    let mut pause = Duration::from_millis(10);
    let mut repaired = false;
    loop {
        match redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(path)
        {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StorageError {
                        backend: Backend::Redb,
                        action: "open",
                        path: path.to_path_buf(),
                        kind: StorageErrorKind::Locked,
                        source: format!(
                            "another process holds the store (its lock stayed taken for {lock_wait:?})"
                        )
                        .into(),
                    });
                }
                thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            // A kill while redb was creating the file leaves it sized and
            // maybe with a header, but without the magic number, which redb
            // writes last; redb then refuses the file forever ("not a redb
            // database"). Such a file never held a commit, so it is removed
            // and created anew, once.
            Err(_) if !repaired && is_unfinished_creation(path)? => {
                repaired = true;
                fs::remove_file(path).map_err(|e| redb_error("open", path, redb::Error::Io(e)))?;
            }
            Err(e) => return Err(redb_error("open", path, e)),
        }
    }
}

/// Bytes at the start of a redb file that hold its magic number.
const MAGIC_LEN: u64 = 9;
/// redb's file header lies within the first page; a creation that stopped
/// before the magic number was written wrote nothing after it.
const HEADER_PAGE: u64 = 4096;

/// Whether the file at `path` is a redb file whose creation never finished:
/// no magic number, and nothing but zeros after the header page (every
/// commit writes pages there, so such a file holds no data).
fn is_unfinished_creation(path: &Path) -> Result<bool, StorageError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| redb_error("open", path, redb::Error::Io(e));
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(e)),
    };
    let mut magic = Vec::new();
    (&mut file)
        .take(MAGIC_LEN)
        .read_to_end(&mut magic)
        .map_err(io)?;
    if magic.is_empty() || magic.iter().any(|b| *b != 0) {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(HEADER_PAGE)).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(true);
        }
        if buf.get(..n).unwrap_or_default().iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// A redb (or I/O) failure while doing `action` on the file at `path`.
fn redb_error(action: &'static str, path: &Path, e: impl Into<redb::Error>) -> StorageError {
    let e: redb::Error = e.into();
    let kind = match &e {
        redb::Error::Io(io) => StorageErrorKind::of_io(io),
        redb::Error::PreviousIo => StorageErrorKind::Io,
        redb::Error::Corrupted(_) | redb::Error::RepairAborted => StorageErrorKind::Corrupt,
        redb::Error::DatabaseAlreadyOpen => StorageErrorKind::Locked,
        _ => StorageErrorKind::Other,
    };
    StorageError {
        backend: Backend::Redb,
        action,
        path: path.to_path_buf(),
        kind,
        source: Box::new(e),
    }
}

#[cfg(test)]
/// Checks specific to redb (the shared ones are in `conformance`).
mod tests {
    use super::*;

    /// redb reporting a full disk is a full store, not a mere I/O error.
    #[test]
    fn a_full_disk_is_reported_as_full() {
        let full = redb_error(
            "write",
            Path::new("store"),
            redb::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull)),
        );
        assert!(full.is_full(), "{full}");
        let other = redb_error(
            "write",
            Path::new("store"),
            redb::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        );
        assert!(!other.is_full(), "{other}");
    }

    /// A temporary directory, removed when dropped.
    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    /// A fault at any op of a batch holding a run of neighbouring removals
    /// (before it, at its first op, inside it, after it) leaves nothing
    /// behind; without it the run's keys go and the key between them stays.
    #[test]
    fn a_fault_in_or_around_a_run_of_removals_applies_nothing() {
        let dir = tempdir();
        let store = RedbStorage::open(dir.path()).expect("open");
        let mut before = WriteBatch::new();
        for key in [b"due-1", b"due-2", b"due-3", b"due-4"] {
            before.put(Tree::Deadlines, key.as_slice(), b"due");
        }
        store
            .apply(&before, Durability::Durable)
            .expect("apply succeeds");
        let mut batch = WriteBatch::new();
        batch.put(Tree::Vault, b"key", b"tombstone");
        batch.remove_neighbours(Tree::Deadlines, [b"due-1", b"due-2", b"due-4"]);
        batch.put(Tree::Audit, b"entry", b"keys destroyed");
        assert_eq!(
            batch.neighbour_runs,
            vec![std::ops::Range { start: 1, end: 4 }]
        );
        for fail_at in 0..batch.ops.len() {
            store
                .commit(&[&batch], false, Some(fail_at))
                .expect_err("the injected fault fails the batch");
            let left = collect_keys(&store, Tree::Deadlines);
            assert_eq!(left.len(), 4, "fault at op {fail_at}: {left:?}");
            assert_eq!(store.get(Tree::Vault, b"key").expect("get"), None);
        }
        store
            .apply(&batch, Durability::Buffered)
            .expect("without the fault it applies");
        assert_eq!(collect_keys(&store, Tree::Deadlines), [b"due-3".to_vec()]);
        assert!(store.get(Tree::Audit, b"entry").expect("get").is_some());
    }

    /// Every key of `tree`, in order.
    fn collect_keys(store: &RedbStorage, tree: Tree) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        store
            .scan(
                tree,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, _| {
                    keys.push(k.to_vec());
                    ControlFlow::Continue(())
                },
            )
            .expect("scan");
        keys
    }

    /// A batch that fails half-way leaves nothing behind, before and after
    /// a reopen.
    #[test]
    fn failed_multi_tree_batch_applies_nothing() {
        let dir = tempdir();
        let store = RedbStorage::open(dir.path()).expect("open");
        let mut before = WriteBatch::new();
        before.put(Tree::Data, b"record", b"old");
        before.put(Tree::Vault, b"key", b"active");
        store
            .apply(&before, Durability::Durable)
            .expect("apply succeeds");

        let mut batch = WriteBatch::new();
        batch.put(Tree::Data, b"record", b"new");
        batch.put(Tree::Vault, b"key", b"destroyed");
        batch.remove(Tree::Data, b"record");
        batch.put(Tree::Ledger, b"subject", b"erased");
        for fail_at in 1..4 {
            let err = store
                .commit(&[&batch], false, Some(fail_at))
                .expect_err("the injected fault fails the batch");
            assert_eq!(err.kind, StorageErrorKind::Other);
            assert_eq!(
                store.get(Tree::Data, b"record").expect("get"),
                Some(b"old".to_vec())
            );
            assert_eq!(
                store.get(Tree::Vault, b"key").expect("get"),
                Some(b"active".to_vec())
            );
            assert_eq!(store.get(Tree::Ledger, b"subject").expect("get"), None);
        }
        store.flush().expect("flush");
        drop(store);
        let store = RedbStorage::open(dir.path()).expect("reopen");
        assert_eq!(
            store.get(Tree::Vault, b"key").expect("get"),
            Some(b"active".to_vec())
        );
        store
            .apply(&batch, Durability::Buffered)
            .expect("without the fault it applies");
        assert_eq!(store.get(Tree::Data, b"record").expect("get"), None);
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
        let store = RedbStorage::open(dir.path()).expect("open");
        let started = Instant::now();
        let err = RedbStorage::open_with(dir.path(), Duration::from_millis(100))
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
        RedbStorage::open(dir.path()).expect("opens once released");
    }

    /// The header redb 4.6 writes before its magic number, as a SIGKILL
    /// during the crash test's first open left it (73,728 bytes; every byte
    /// not listed is zero).
    const UNFINISHED_HEADER: &[(usize, u8)] = &[
        (9, 0x04),
        (13, 0x10),
        (22, 0x10),
        (28, 0x11),
        (64, 0x03),
        (176, 0x1a),
        (177, 0x6a),
        (178, 0xb5),
        (179, 0xef),
        (180, 0x61),
        (181, 0xd1),
        (182, 0x80),
        (183, 0x8d),
        (184, 0x07),
        (185, 0x2c),
        (186, 0x03),
        (187, 0x93),
        (188, 0x86),
        (189, 0xfb),
        (190, 0xbc),
        (191, 0x3f),
        (192, 0x03),
        (304, 0x1a),
        (305, 0x6a),
        (306, 0xb5),
        (307, 0xef),
        (308, 0x61),
        (309, 0xd1),
        (310, 0x80),
        (311, 0x8d),
        (312, 0x07),
        (313, 0x2c),
        (314, 0x03),
        (315, 0x93),
        (316, 0x86),
        (317, 0xfb),
        (318, 0xbc),
        (319, 0x3f),
    ];

    /// A kill while redb creates its file leaves one it refuses forever;
    /// opening removes it and creates the store (it never held a commit).
    /// Found by the crash test (`engine/tests/crash_recovery.rs`).
    #[test]
    fn an_unfinished_creation_is_redone() {
        for header in [&[][..], UNFINISHED_HEADER] {
            let dir = tempdir();
            let mut bytes = vec![0u8; 73_728];
            for (at, byte) in header {
                bytes[*at] = *byte;
            }
            fs::write(dir.path().join(FILE_NAME), &bytes).expect("write the file");
            let store = RedbStorage::open(dir.path()).expect("the unfinished file is redone");
            let mut batch = WriteBatch::new();
            batch.put(Tree::Data, b"k", b"v");
            store.apply(&batch, Durability::Durable).expect("apply");
            drop(store);
            let store = RedbStorage::open(dir.path()).expect("reopen");
            assert_eq!(
                store.get(Tree::Data, b"k").expect("get"),
                Some(b"v".to_vec())
            );
        }
    }

    /// A committed store whose magic number was damaged is refused, never
    /// removed: pages after the header hold data.
    #[test]
    fn a_damaged_magic_number_on_a_committed_store_is_refused() {
        let dir = tempdir();
        {
            let store = RedbStorage::open(dir.path()).expect("open");
            let mut batch = WriteBatch::new();
            batch.put(Tree::Data, b"k", b"v");
            store.apply(&batch, Durability::Durable).expect("apply");
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).expect("read");
        bytes[..9].fill(0);
        fs::write(&path, &bytes).expect("damage the magic number");
        assert!(RedbStorage::open(dir.path()).is_err());
        assert_eq!(fs::read(&path).expect("still there").len(), bytes.len());
    }

    /// A file that is not a redb database is refused with an error.
    #[test]
    fn foreign_file_is_refused() {
        let dir = tempdir();
        let garbage: Vec<u8> = (0..16384u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        fs::write(dir.path().join(FILE_NAME), garbage).expect("write the file");
        let err = RedbStorage::open(dir.path())
            .err()
            .expect("garbage does not open");
        assert_eq!(err.action, "open");
        assert_ne!(err.kind, StorageErrorKind::Locked, "{err}");
    }

    /// Damage anywhere in a store file gives an error or a repaired store,
    /// never a panic, and never wrong data.
    #[test]
    fn damaged_file_never_panics() {
        let dir = tempdir();
        {
            let store = RedbStorage::open(dir.path()).expect("open");
            let mut batch = WriteBatch::new();
            for i in 0..200u32 {
                batch.put(Tree::Data, i.to_be_bytes(), vec![7; 100]);
            }
            store.apply(&batch, Durability::Durable).expect("apply");
        }
        let path = dir.path().join(FILE_NAME);
        let pristine = fs::read(&path).expect("read the file");
        let mut outcomes = BTreeMap::new();
        for at in (0..pristine.len()).step_by(997) {
            let mut damaged = pristine.clone();
            if let Some(byte) = damaged.get_mut(at) {
                *byte ^= 0x5a;
            }
            fs::write(&path, &damaged).expect("damage the file");
            let outcome = match RedbStorage::open(dir.path()) {
                Ok(store) => {
                    for i in 0..200u32 {
                        match store.get(Tree::Data, &i.to_be_bytes()) {
                            Ok(value) => assert_eq!(value, Some(vec![7; 100]), "offset {at}"),
                            Err(e) => assert_ne!(e.kind, StorageErrorKind::Locked),
                        }
                    }
                    "opened".to_owned()
                }
                Err(e) => format!("{:?}", e.kind),
            };
            *outcomes.entry(outcome).or_insert(0) += 1;
        }
        eprintln!("outcomes: {outcomes:?}");
    }
}
