//! One conformance suite for every backend of the seam: the same checks run
//! against [`MemoryStorage`] (the reference), sled and redb. Durability
//! checks (reopen, process exit) run on the two persistent backends only.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::memory::MemoryStorage;
use super::redb_backend::RedbStorage;
use super::sled_backend::SledStorage;
use super::{Durability, Op, OpKey, Order, Storage, StorageError, Tree, WriteBatch, scan_prefix};

/// Opens (or reopens) a store in a directory.
type Opener = fn(&Path) -> Result<Box<dyn Storage>, StorageError>;

/// A fresh in-memory store (the directory is unused).
fn open_memory(_: &Path) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(MemoryStorage::new()))
}

/// Opens a sled store in `dir`.
fn open_sled(dir: &Path) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(SledStorage::open(dir)?))
}

/// Opens a redb store in `dir`.
fn open_redb(dir: &Path) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(RedbStorage::open(dir)?))
}

/// A store in this test process's etcd cluster, in the namespace `dir` names.
#[cfg(feature = "etcd")]
fn open_etcd(dir: &Path) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(super::etcd_cluster::Cluster::shared().open(dir)?))
}

/// A store in the TiKV cluster whose PD endpoints `SHREDKV_TIKV_PD` names
/// (comma-separated `host:port`), in a namespace of its own per `dir`.
#[cfg(feature = "tikv")]
fn open_tikv(dir: &Path) -> Result<Box<dyn Storage>, StorageError> {
    let endpoints = std::env::var("SHREDKV_TIKV_PD").expect(
        "the TiKV conformance suite needs a cluster: set SHREDKV_TIKV_PD=host:port[,host:port] \
         to its PD endpoints",
    );
    Ok(Box::new(super::tikv_backend::TikvStorage::connect(
        super::tikv_backend::TikvTarget {
            pd_endpoints: endpoints.split(',').map(str::to_string).collect(),
            namespace: format!("shredkv-conformance{}/", dir.display()).into_bytes(),
        },
    )?))
}

/// A temporary directory, removed when dropped.
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// Opens a store, failing the test if it cannot.
fn open_in(open: Opener, dir: &Path) -> Box<dyn Storage> {
    open(dir).expect("the store opens")
}

/// Applies a one-put batch, buffered.
fn put(store: &dyn Storage, tree: Tree, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(tree, key, value);
    store
        .apply(&batch, Durability::Buffered)
        .expect("apply succeeds");
}

/// Reads a key, failing the test on an error.
fn get(store: &dyn Storage, tree: Tree, key: &[u8]) -> Option<Vec<u8>> {
    store.get(tree, key).expect("get succeeds")
}

/// Every entry of a scan, in the order visited.
fn collect(
    store: &dyn Storage,
    tree: Tree,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    order: Order,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    store
        .scan(tree, start, end, order, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        })
        .expect("scan succeeds");
    out
}

/// Single-key reads and writes, removals, empty values and empty batches.
fn get_put_remove(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    assert_eq!(get(&*store, Tree::Data, b"k"), None);
    put(&*store, Tree::Data, b"k", b"v1");
    assert_eq!(get(&*store, Tree::Data, b"k"), Some(b"v1".to_vec()));
    // Trees are separate key spaces.
    assert_eq!(get(&*store, Tree::Vault, b"k"), None);
    put(&*store, Tree::Data, b"k", b"v2");
    assert_eq!(get(&*store, Tree::Data, b"k"), Some(b"v2".to_vec()));
    put(&*store, Tree::Data, b"empty", b"");
    assert_eq!(get(&*store, Tree::Data, b"empty"), Some(Vec::new()));
    let mut batch = WriteBatch::new();
    batch.remove(Tree::Data, b"k");
    batch.remove(Tree::Data, b"never there");
    store
        .apply(&batch, Durability::Buffered)
        .expect("remove succeeds");
    assert_eq!(get(&*store, Tree::Data, b"k"), None);
    assert_eq!(get(&*store, Tree::Data, b"empty"), Some(Vec::new()));
    // A one-op removal (sled takes a shortcut for one-op batches).
    put(&*store, Tree::Data, b"single", b"v");
    let mut batch = WriteBatch::new();
    batch.remove(Tree::Data, b"single");
    store
        .apply(&batch, Durability::Buffered)
        .expect("remove succeeds");
    assert_eq!(get(&*store, Tree::Data, b"single"), None);
    // Every tree is usable, also in a store that never wrote it.
    for tree in Tree::ALL {
        assert_eq!(get(&*store, tree, b"absent"), None);
        let entries = collect(
            &*store,
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
        );
        let expected = if tree == Tree::Data { 1 } else { 0 };
        assert_eq!(entries.len(), expected, "{tree:?}");
    }
    // An empty batch is a no-op in either durability.
    store
        .apply(&WriteBatch::new(), Durability::Buffered)
        .expect("empty batch");
    store
        .apply(&WriteBatch::new(), Durability::Durable)
        .expect("empty durable batch");
}

/// Whether `key` lies in `(start, end)`.
fn in_range(key: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    let above = match start {
        Bound::Included(s) => key >= s,
        Bound::Excluded(s) => key > s,
        Bound::Unbounded => true,
    };
    let below = match end {
        Bound::Included(e) => key <= e,
        Bound::Excluded(e) => key < e,
        Bound::Unbounded => true,
    };
    above && below
}

/// Scans with every kind of bound (present, absent, equal, inverted) in
/// both orders, against a model.
fn scans_match_model(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    let keys: [&[u8]; 10] = [
        b"",
        &[0],
        &[1],
        &[1, 0],
        &[1, 1],
        &[2],
        &[2, 0xff],
        &[3],
        &[0xff],
        &[0xff, 0xff],
    ];
    let mut model = BTreeMap::new();
    let mut batch = WriteBatch::new();
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value {i}").into_bytes();
        batch.put(Tree::Deadlines, *key, value.clone());
        model.insert(key.to_vec(), value);
    }
    // Another tree's entries must never show up.
    batch.put(Tree::Debts, [1u8, 0], b"other tree");
    store
        .apply(&batch, Durability::Buffered)
        .expect("apply succeeds");

    let points: [&[u8]; 8] = [
        b"",
        &[0],
        &[1],
        &[1, 0],
        &[1, 0, 0],
        &[2, 5],
        &[0xff, 0xff],
        &[0xff, 0xff, 0],
    ];
    let mut bounds: Vec<Bound<&[u8]>> = vec![Bound::Unbounded];
    for p in points {
        bounds.push(Bound::Included(p));
        bounds.push(Bound::Excluded(p));
    }
    let mut nonempty = 0;
    for &start in &bounds {
        for &end in &bounds {
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model
                .iter()
                .filter(|(k, _)| in_range(k, start, end))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            nonempty += usize::from(!expected.is_empty());
            let ascending = collect(&*store, Tree::Deadlines, start, end, Order::Ascending);
            assert_eq!(ascending, expected, "ascending {start:?}..{end:?}");
            let descending = collect(&*store, Tree::Deadlines, start, end, Order::Descending);
            let reversed: Vec<_> = expected.into_iter().rev().collect();
            assert_eq!(descending, reversed, "descending {start:?}..{end:?}");
        }
    }
    assert!(nonempty > 100, "the bounds exercise too few ranges");
}

/// A `Break` stops the scan at once, in both orders.
fn scan_break_stops(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    for i in 0..10u8 {
        put(&*store, Tree::Audit, &[i], &[i]);
    }
    for (order, first_two) in [
        (Order::Ascending, vec![0u8, 1]),
        (Order::Descending, vec![9, 8]),
    ] {
        let mut seen = Vec::new();
        store
            .scan(
                Tree::Audit,
                Bound::Unbounded,
                Bound::Unbounded,
                order,
                &mut |k, _| {
                    seen.extend_from_slice(k);
                    if seen.len() == 2 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .expect("scan succeeds");
        assert_eq!(seen, first_two, "{order:?}");
    }
}

/// Within one batch, the later op on a key wins.
fn later_op_in_batch_wins(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    put(&*store, Tree::Vault, b"existing", b"old");
    let mut batch = WriteBatch::new();
    batch.put(Tree::Vault, b"a", b"first");
    batch.put(Tree::Vault, b"a", b"second");
    batch.put(Tree::Vault, b"b", b"doomed");
    batch.remove(Tree::Vault, b"b");
    batch.remove(Tree::Vault, b"c");
    batch.put(Tree::Vault, b"c", b"revived");
    batch.remove(Tree::Vault, b"existing");
    batch.put(Tree::Vault, b"existing", b"new");
    // The same key in another tree is a different key.
    batch.put(Tree::Ledger, b"a", b"ledger");
    batch.remove(Tree::Ledger, b"b");
    store
        .apply(&batch, Durability::Buffered)
        .expect("apply succeeds");
    assert_eq!(get(&*store, Tree::Vault, b"a"), Some(b"second".to_vec()));
    assert_eq!(get(&*store, Tree::Vault, b"b"), None);
    assert_eq!(get(&*store, Tree::Vault, b"c"), Some(b"revived".to_vec()));
    assert_eq!(
        get(&*store, Tree::Vault, b"existing"),
        Some(b"new".to_vec())
    );
    assert_eq!(get(&*store, Tree::Ledger, b"a"), Some(b"ledger".to_vec()));
}

/// Removals of neighbouring keys ([`WriteBatch::remove_neighbours`]) mean
/// what the same removals one by one mean, in their place in the batch:
/// keys between them that the run does not name stay, absent keys are
/// skipped, later ops win, and a run whose ops moved since is only a
/// stale hint. The oracle applies the ops one by one to a map.
fn removing_neighbours_is_removing_each(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    let key = |k: u16| k.to_be_bytes().to_vec();
    let mut model: BTreeMap<(Tree, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut load = WriteBatch::new();
    for k in (0..400u16).step_by(2) {
        for tree in [Tree::Deadlines, Tree::Vault] {
            load.put(tree, key(k), b"v");
        }
    }
    let apply = |store: &dyn Storage,
                 model: &mut BTreeMap<(Tree, Vec<u8>), Vec<u8>>,
                 batch: &WriteBatch| {
        store
            .apply(batch, Durability::Buffered)
            .expect("apply succeeds");
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } => {
                    model.insert((*tree, key.to_vec()), value.clone());
                }
                Op::Remove { tree, key } => {
                    model.remove(&(*tree, key.to_vec()));
                }
            }
        }
    };
    apply(&*store, &mut model, &load);

    let mut batch = WriteBatch::new();
    batch.put(Tree::Deadlines, key(11), b"put before the run");
    // Even keys 10..=200 but 100, and the odd (absent or just put) 11 and
    // 151: 100 and every odd key but 11 lie between them and stay.
    let run: Vec<u16> = (10..=200u16)
        .filter(|k| (k % 2 == 0 && *k != 100) || *k == 11 || *k == 151)
        .collect();
    batch.remove_neighbours(Tree::Deadlines, run.iter().map(|k| key(*k)));
    batch.put(Tree::Deadlines, key(12), b"revived after the run");
    // Out of order: still both removed.
    batch.remove_neighbours(Tree::Deadlines, [key(300), key(250)]);
    batch.remove_neighbours(Tree::Deadlines, [key(302)]);
    // The same keys in another tree are other keys.
    batch.remove_neighbours(Tree::Vault, [key(0), key(2)]);
    apply(&*store, &mut model, &batch);

    // A stale hint: an op put into the first run shifts both runs onto
    // other ops: a put inside one, two trees in the other.
    let mut stale = WriteBatch::new();
    stale.remove_neighbours(Tree::Deadlines, [key(202), key(204), key(206)]);
    stale.remove_neighbours(Tree::Vault, [key(300), key(302)]);
    stale.ops.insert(
        1,
        Op::Put {
            tree: Tree::Deadlines,
            key: OpKey::from(key(203).as_slice()),
            value: b"inside a run".to_vec(),
        },
    );
    apply(&*store, &mut model, &stale);

    for tree in [Tree::Deadlines, Tree::Vault] {
        let stored = collect(
            &*store,
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
        );
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .filter(|((t, _), _)| *t == tree)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(stored, expected, "{tree:?}");
    }
    assert_eq!(
        get(&*store, Tree::Deadlines, &key(100)),
        Some(b"v".to_vec())
    );
    assert_eq!(get(&*store, Tree::Deadlines, &key(10)), None);
    assert_eq!(get(&*store, Tree::Deadlines, &key(11)), None);
    assert_eq!(
        get(&*store, Tree::Deadlines, &key(12)),
        Some(b"revived after the run".to_vec())
    );
}

/// A batch over several trees becomes visible all at once: a reader that
/// sees its last tree's entry also sees the others'.
fn multi_tree_batch_is_atomic(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    let done = AtomicBool::new(false);
    /// Batches the writer applies while the reader watches.
    const BATCHES: u32 = 300;
    thread::scope(|s| {
        let store = &*store;
        let done = &done;
        let reader = s.spawn(move || {
            while !done.load(Ordering::Acquire) {
                for i in (0..BATCHES).rev() {
                    let key = i.to_be_bytes();
                    // Read the tree written last in the batch first: once it
                    // shows, the whole batch must.
                    if get(store, Tree::Audit, &key).is_some() {
                        assert!(
                            get(store, Tree::Data, &key).is_some(),
                            "batch {i} half visible"
                        );
                        assert!(
                            get(store, Tree::Vault, &key).is_some(),
                            "batch {i} half visible"
                        );
                        assert_eq!(
                            get(store, Tree::Meta, b"old"),
                            None,
                            "batch {i} half visible"
                        );
                        break;
                    }
                }
            }
        });
        put(store, Tree::Meta, b"old", b"removed by the first batch");
        for i in 0..BATCHES {
            let key = i.to_be_bytes();
            let mut batch = WriteBatch::new();
            batch.put(Tree::Data, key, b"record");
            batch.put(Tree::Vault, key, b"key");
            batch.remove(Tree::Meta, b"old");
            batch.put(Tree::Audit, key, b"entry");
            store
                .apply(&batch, Durability::Buffered)
                .expect("apply succeeds");
        }
        done.store(true, Ordering::Release);
        reader.join().expect("the reader saw no half-applied batch");
    });
    for i in 0..BATCHES {
        let key = i.to_be_bytes();
        for tree in [Tree::Data, Tree::Vault, Tree::Audit] {
            assert!(get(&*store, tree, &key).is_some(), "{tree:?} {i}");
        }
    }
}

/// `scan_prefix` visits exactly the keys starting with the prefix.
fn scan_prefix_selects_prefix(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    let keys: [&[u8]; 8] = [
        &[0x10],
        &[0x10, 0xff, 0xff],
        &[0x11],
        &[0x11, 0x00],
        &[0x11, 0x7f, 0x01],
        &[0x11, 0xff],
        &[0x12],
        &[0x12, 0x00],
    ];
    for k in keys {
        put(&*store, Tree::Holds, k, b"v");
    }
    let prefixed = |prefix: &[u8]| {
        let mut seen = Vec::new();
        scan_prefix(&*store, Tree::Holds, prefix, &mut |k, _| {
            seen.push(k.to_vec());
            ControlFlow::Continue(())
        })
        .expect("scan succeeds");
        seen
    };
    assert_eq!(
        prefixed(&[0x11]),
        vec![
            vec![0x11],
            vec![0x11, 0x00],
            vec![0x11, 0x7f, 0x01],
            vec![0x11, 0xff]
        ]
    );
    assert_eq!(prefixed(&[0x11, 0x7f]), vec![vec![0x11, 0x7f, 0x01]]);
    assert_eq!(prefixed(&[0x10, 0xff]), vec![vec![0x10, 0xff, 0xff]]);
    assert!(prefixed(&[0x13]).is_empty());
    assert_eq!(prefixed(b"").len(), keys.len());
    // Break inside a prefix scan stops it.
    let mut count = 0;
    scan_prefix(&*store, Tree::Holds, &[0x11], &mut |_, _| {
        count += 1;
        ControlFlow::Break(())
    })
    .expect("scan succeeds");
    assert_eq!(count, 1);
}

/// A scan's visitor may read and write the store it scans (compaction
/// deletes what it finds due).
fn visitor_may_use_the_store(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    for i in 0..5u8 {
        put(&*store, Tree::Deadlines, &[i], &[i]);
    }
    let mut visited = 0;
    store
        .scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, _| {
                visited += 1;
                assert!(get(&*store, Tree::Deadlines, k).is_some());
                let mut batch = WriteBatch::new();
                batch.remove(Tree::Deadlines, k);
                batch.put(Tree::Ledger, k, b"done");
                store
                    .apply(&batch, Durability::Buffered)
                    .expect("apply inside a scan succeeds");
                ControlFlow::Continue(())
            },
        )
        .expect("scan succeeds");
    assert_eq!(visited, 5);
    assert!(
        collect(
            &*store,
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending
        )
        .is_empty()
    );
    assert_eq!(
        collect(
            &*store,
            Tree::Ledger,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending
        )
        .len(),
        5
    );
}

/// Writer threads of the concurrency check.
const WRITERS: u16 = 8;
/// Batches each writer thread applies.
const BATCHES_PER_WRITER: u16 = 500;

/// Eight threads apply 500 buffered batches each; after a flush (and a
/// reopen, for persistent backends) every batch is there.
fn concurrent_buffered_writers(open: Opener, reopen: bool) {
    let dir = tempdir();
    let mut store = open_in(open, dir.path());
    thread::scope(|s| {
        for writer in 0..WRITERS {
            let store = &*store;
            s.spawn(move || {
                for i in 0..BATCHES_PER_WRITER {
                    let key = [writer.to_be_bytes(), i.to_be_bytes()].concat();
                    let mut batch = WriteBatch::new();
                    batch.put(Tree::Data, key.clone(), b"record");
                    batch.put(Tree::Deadlines, key, b"due");
                    store
                        .apply(&batch, Durability::Buffered)
                        .expect("apply succeeds");
                }
            });
        }
    });
    store.flush().expect("flush succeeds");
    if reopen {
        drop(store);
        store = open_in(open, dir.path());
    }
    let expected = usize::from(WRITERS) * usize::from(BATCHES_PER_WRITER);
    for tree in [Tree::Data, Tree::Deadlines] {
        let entries = collect(
            &*store,
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
        );
        assert_eq!(entries.len(), expected, "{tree:?}");
    }
    for writer in 0..WRITERS {
        for i in 0..BATCHES_PER_WRITER {
            let key = [writer.to_be_bytes(), i.to_be_bytes()].concat();
            assert_eq!(get(&*store, Tree::Data, &key), Some(b"record".to_vec()));
        }
    }
}

/// Buffered writes followed by `flush` survive close and reopen; so do
/// removals, and the size on disk is reported.
fn survives_reopen_after_flush(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    for i in 0..100u32 {
        put(&*store, Tree::Subjects, &i.to_be_bytes(), b"subject");
    }
    let mut batch = WriteBatch::new();
    batch.remove(Tree::Subjects, 7u32.to_be_bytes());
    store
        .apply(&batch, Durability::Buffered)
        .expect("apply succeeds");
    store.flush().expect("flush succeeds");
    assert!(store.space().expect("size").size_on_disk > 0);
    drop(store);
    let store = open_in(open, dir.path());
    for i in 0..100u32 {
        let expected = (i != 7).then(|| b"subject".to_vec());
        assert_eq!(
            get(&*store, Tree::Subjects, &i.to_be_bytes()),
            expected,
            "{i}"
        );
    }
}

/// A `Durable` apply survives close and reopen with no flush.
fn survives_reopen_after_durable_apply(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    let mut batch = WriteBatch::new();
    batch.put(Tree::Vault, b"key", b"destroyed");
    batch.put(Tree::Ledger, b"subject", b"erased");
    store
        .apply(&batch, Durability::Durable)
        .expect("apply succeeds");
    drop(store);
    let store = open_in(open, dir.path());
    assert_eq!(
        get(&*store, Tree::Vault, b"key"),
        Some(b"destroyed".to_vec())
    );
    assert_eq!(
        get(&*store, Tree::Ledger, b"subject"),
        Some(b"erased".to_vec())
    );
}

/// Set in the child process of [`writes_survive_exit`]: the store directory
/// to write to.
const CHILD_DIR: &str = "SHREDKV_STORAGE_EXIT_CHILD_DIR";

/// How the child process of [`writes_survive_exit`] makes its write durable.
#[derive(Debug, Clone, Copy)]
enum Persist {
    /// One `Durable` apply.
    DurableApply,
    /// Buffered applies, then `flush`.
    Flush,
}

/// Writes acknowledged as durable survive the process exiting without
/// closing the store (no destructor, no final flush of its own). The test
/// re-runs itself as a child process, which writes and exits at once.
fn writes_survive_exit(open: Opener, persist: Persist, test_name: &str) {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let store = open_in(open, Path::new(&dir));
        match persist {
            Persist::DurableApply => {
                let mut batch = WriteBatch::new();
                batch.put(Tree::Vault, b"key", b"destroyed");
                batch.put(Tree::Audit, b"entry", b"shred");
                store
                    .apply(&batch, Durability::Durable)
                    .expect("apply succeeds");
            }
            Persist::Flush => {
                put(&*store, Tree::Vault, b"key", b"destroyed");
                put(&*store, Tree::Audit, b"entry", b"shred");
                store.flush().expect("flush succeeds");
            }
        }
        std::process::exit(0);
    }
    let dir = tempdir();
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = std::process::Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .status()
        .expect("the child process runs");
    assert!(status.success(), "child failed: {status}");
    let store = open_in(open, dir.path());
    assert_eq!(
        get(&*store, Tree::Vault, b"key"),
        Some(b"destroyed".to_vec()),
        "{persist:?}"
    );
    assert_eq!(
        get(&*store, Tree::Audit, b"entry"),
        Some(b"shred".to_vec()),
        "{persist:?}"
    );
}

/// The checks every backend passes.
/// `insert_new` inserts only into an absent key, and of writers racing for
/// one key exactly one wins; a backend without it refuses the call instead
/// of writing unconditionally.
fn insert_new_only_when_absent(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    if !store.has_insert_new() {
        let refused = store.insert_new(Tree::Data, b"k", b"v", Durability::Buffered);
        assert!(refused.is_err(), "an unsupported insert_new must fail");
        assert_eq!(get(&*store, Tree::Data, b"k"), None, "and write nothing");
        return;
    }
    let insert = |key: &[u8], value: &[u8]| {
        store
            .insert_new(Tree::Data, key, value, Durability::Buffered)
            .expect("insert_new succeeds")
    };
    assert!(insert(b"k", b"first"));
    assert!(!insert(b"k", b"second"), "the key holds a value");
    assert_eq!(
        get(&*store, Tree::Data, b"k").as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(
        get(&*store, Tree::Vault, b"k"),
        None,
        "other trees untouched"
    );
    let mut batch = WriteBatch::new();
    batch.remove(Tree::Data, b"k");
    store.apply(&batch, Durability::Buffered).expect("remove");
    assert!(insert(b"k", b"third"), "absent again after removal");
    assert_eq!(
        get(&*store, Tree::Data, b"k").as_deref(),
        Some(&b"third"[..])
    );
    assert!(
        store
            .insert_new(Tree::Data, b"durable", b"d", Durability::Durable)
            .expect("durable insert_new succeeds")
    );

    let store: &dyn Storage = &*store;
    let winners: usize = thread::scope(|scope| {
        let racers: Vec<_> = (0..8u8)
            .map(|i| {
                scope.spawn(move || {
                    store
                        .insert_new(Tree::Data, b"raced", &[i], Durability::Buffered)
                        .expect("insert_new succeeds")
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| usize::from(r.join().expect("no racer panics")))
            .sum()
    });
    assert_eq!(winners, 1, "exactly one racer inserts");
    let value = get(store, Tree::Data, b"raced").expect("the winner's value");
    assert!(value.len() == 1 && value[0] < 8);
}

/// `get_many` answers, key by key and in order, what `get` answers: values,
/// empty values, absent keys, repeated keys, and only from its own tree.
fn get_many_matches_get(open: Opener) {
    let dir = tempdir();
    let store = open_in(open, dir.path());
    assert_eq!(
        store
            .get_many(Tree::Vault, &[])
            .expect("get_many of nothing"),
        Vec::<Option<Vec<u8>>>::new()
    );
    let mut batch = WriteBatch::new();
    for i in 0..300u16 {
        batch.put(
            Tree::Vault,
            i.to_be_bytes(),
            vec![u8::try_from(i % 251).unwrap_or(0); usize::from(i % 7)],
        );
    }
    batch.put(Tree::Data, 5u16.to_be_bytes(), b"another tree");
    store
        .apply(&batch, Durability::Buffered)
        .expect("apply succeeds");
    // get_many's answer, checked against single reads.
    let read = |keys: &[Vec<u8>]| {
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let many = store
            .get_many(Tree::Vault, &refs)
            .expect("get_many succeeds");
        let one_by_one: Vec<Option<Vec<u8>>> =
            refs.iter().map(|k| get(&*store, Tree::Vault, k)).collect();
        assert_eq!(many, one_by_one);
        many
    };
    let keys: Vec<Vec<u8>> = [299u16, 5, 1000, 0, 5, 150, 301]
        .iter()
        .map(|k| k.to_be_bytes().to_vec())
        .collect();
    let many = read(&keys);
    assert_eq!(many[2], None, "an absent key");
    assert_eq!(many[3], Some(Vec::new()), "an empty value");
    assert_eq!(many[1], many[4], "a repeated key");
    assert_ne!(many[1].as_deref(), Some(&b"another tree"[..]));
    // A page of keys, in order, present and absent.
    let all: Vec<Vec<u8>> = (0..310u16).map(|k| k.to_be_bytes().to_vec()).collect();
    let many = read(&all);
    assert_eq!(many.iter().filter(|v| v.is_some()).count(), 300);
}

macro_rules! common_tests {
    ($open:expr, reopen: $reopen:expr $(, #[$attr:meta])*) => {
        use super::*;

        /// Single-key reads and writes, removals, empty values and empty batches.
        #[test]
        $(#[$attr])*
        fn get_put_remove() {
            super::get_put_remove($open);
        }

        /// See [`super::get_many_matches_get`].
        #[test]
        $(#[$attr])*
        fn get_many_matches_get() {
            super::get_many_matches_get($open);
        }

        /// See [`super::scans_match_model`].
        #[test]
        $(#[$attr])*
        fn scans_match_model() {
            super::scans_match_model($open);
        }

        /// See [`super::scan_break_stops`].
        #[test]
        $(#[$attr])*
        fn scan_break_stops() {
            super::scan_break_stops($open);
        }

        /// See [`super::later_op_in_batch_wins`].
        #[test]
        $(#[$attr])*
        fn later_op_in_batch_wins() {
            super::later_op_in_batch_wins($open);
        }

        /// See [`super::removing_neighbours_is_removing_each`].
        #[test]
        $(#[$attr])*
        fn removing_neighbours_is_removing_each() {
            super::removing_neighbours_is_removing_each($open);
        }

        /// See [`super::multi_tree_batch_is_atomic`].
        #[test]
        $(#[$attr])*
        fn multi_tree_batch_is_atomic() {
            super::multi_tree_batch_is_atomic($open);
        }

        /// See [`super::scan_prefix_selects_prefix`].
        #[test]
        $(#[$attr])*
        fn scan_prefix_selects_prefix() {
            super::scan_prefix_selects_prefix($open);
        }

        /// See [`super::visitor_may_use_the_store`].
        #[test]
        $(#[$attr])*
        fn visitor_may_use_the_store() {
            super::visitor_may_use_the_store($open);
        }

        /// See [`super::insert_new_only_when_absent`].
        #[test]
        $(#[$attr])*
        fn insert_new_only_when_absent() {
            super::insert_new_only_when_absent($open);
        }

        /// See [`super::concurrent_buffered_writers`].
        #[test]
        $(#[$attr])*
        fn concurrent_buffered_writers() {
            super::concurrent_buffered_writers($open, $reopen);
        }
    };
}

/// The checks of the persistent backends.
macro_rules! durable_tests {
    ($open:expr) => {
        /// See [`super::survives_reopen_after_flush`].
        #[test]
        fn survives_reopen_after_flush() {
            super::survives_reopen_after_flush($open);
        }

        /// See [`super::survives_reopen_after_durable_apply`].
        #[test]
        fn survives_reopen_after_durable_apply() {
            super::survives_reopen_after_durable_apply($open);
        }

        /// libtest's name of the test `name` in this module.
        fn test_name(name: &str) -> String {
            let module = module_path!().split_once("::").map_or("", |(_, m)| m);
            format!("{module}::{name}")
        }

        /// See [`super::writes_survive_exit`].
        /// See [`super::writes_survive_exit`].
        #[test]
        fn durable_apply_survives_exit() {
            super::writes_survive_exit(
                $open,
                super::Persist::DurableApply,
                &test_name("durable_apply_survives_exit"),
            );
        }

        /// See [`super::writes_survive_exit`].
        /// See [`super::writes_survive_exit`].
        #[test]
        fn flush_survives_exit() {
            super::writes_survive_exit(
                $open,
                super::Persist::Flush,
                &test_name("flush_survives_exit"),
            );
        }
    };
}

/// The reference backend.
mod memory {
    common_tests!(open_memory, reopen: false);
}

/// The sled backend.
mod sled {
    common_tests!(open_sled, reopen: true);
    durable_tests!(open_sled);
}

/// The redb backend.
mod redb {
    common_tests!(open_redb, reopen: true);
    durable_tests!(open_redb);
}

/// The etcd backend, against a real 3-member cluster on loopback ports
/// (`etcd_cluster`). Durability is the cluster's (a quorum's disks), so the
/// process-exit checks do not apply; reopening is a new client.
#[cfg(feature = "etcd")]
mod etcd {
    common_tests!(open_etcd, reopen: true);

    /// See [`super::survives_reopen_after_flush`].
    #[test]
    fn survives_reopen_after_flush() {
        super::survives_reopen_after_flush(open_etcd);
    }

    /// See [`super::survives_reopen_after_durable_apply`].
    #[test]
    fn survives_reopen_after_durable_apply() {
        super::survives_reopen_after_durable_apply(open_etcd);
    }

    /// `get_many` of more keys than one etcd transaction may hold reads them
    /// in several transactions, in order, instead of being refused.
    #[test]
    fn get_many_over_the_transaction_limit_is_split() {
        let dir = tempdir();
        let store = open_in(open_etcd, dir.path());
        let limit = super::super::etcd_cluster::MAX_TXN_OPS;
        let keys: Vec<Vec<u8>> = (0..limit + 10)
            .map(|i| (i as u64).to_be_bytes().to_vec())
            .collect();
        for chunk in keys.chunks(limit / 2) {
            let mut batch = WriteBatch::new();
            for key in chunk.iter().step_by(2) {
                batch.put(Tree::Data, key.clone(), key.clone());
            }
            store.apply(&batch, Durability::Durable).expect("apply");
        }
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let many = store
            .get_many(Tree::Data, &refs)
            .expect("get_many over the limit");
        assert_eq!(many.len(), keys.len());
        for (i, (key, value)) in keys.iter().zip(&many).enumerate() {
            let expected = (i % 2 == 0).then(|| key.clone());
            assert_eq!(value, &expected, "key {i}");
        }
    }

    /// A batch larger than one etcd transaction may hold is refused whole:
    /// nothing of it is written, and the error says what to do.
    #[test]
    fn a_batch_over_the_transaction_limit_is_refused_whole() {
        let dir = tempdir();
        let store = open_in(open_etcd, dir.path());
        let limit = super::super::etcd_cluster::MAX_TXN_OPS;
        let mut batch = WriteBatch::new();
        for i in 0..=limit {
            batch.put(Tree::Data, (i as u64).to_be_bytes(), b"v");
        }
        let err = store
            .apply(&batch, Durability::Durable)
            .expect_err("refused");
        assert!(err.to_string().contains("--max-txn-ops"), "{err}");
        assert!(
            collect(
                &*store,
                Tree::Data,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::Ascending
            )
            .is_empty()
        );
        // Repeated keys count once: the same number of ops on fewer keys fits.
        let mut batch = WriteBatch::new();
        for i in 0..=limit {
            batch.put(Tree::Data, ((i % 10) as u64).to_be_bytes(), b"v");
        }
        store.apply(&batch, Durability::Durable).expect("fits");
        assert_eq!(
            collect(
                &*store,
                Tree::Data,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::Ascending
            )
            .len(),
            10
        );
    }

    /// A scan longer than one request's page reads every entry once, in
    /// order both ways, at one revision: what the visitor writes meanwhile
    /// is not seen by that scan.
    #[test]
    fn a_scan_across_pages_reads_one_revision() {
        let dir = tempdir();
        let store = open_in(open_etcd, dir.path());
        let n = 1_300u32; // more than two pages of 512
        let mut batch = WriteBatch::new();
        for i in 0..n {
            batch.put(Tree::Audit, i.to_be_bytes(), b"v");
        }
        store.apply(&batch, Durability::Durable).expect("load");
        for order in [Order::Ascending, Order::Descending] {
            let mut seen = Vec::new();
            store
                .scan(
                    Tree::Audit,
                    Bound::Unbounded,
                    Bound::Unbounded,
                    order,
                    &mut |k, _| {
                        if seen.is_empty() {
                            // After the first entry: a new key at each end, and
                            // the removal of one the scan has not reached yet.
                            let mut batch = WriteBatch::new();
                            batch.put(Tree::Audit, u32::MAX.to_be_bytes(), b"late");
                            batch.put(Tree::Audit, [0u8; 2], b"late");
                            batch.remove(Tree::Audit, 650u32.to_be_bytes());
                            store
                                .apply(&batch, Durability::Durable)
                                .expect("a write during the scan");
                        }
                        seen.push(u32::from_be_bytes(k.try_into().expect("a 4-byte key")));
                        ControlFlow::Continue(())
                    },
                )
                .expect("scan");
            let mut expected: Vec<u32> = (0..n).collect();
            if order == Order::Descending {
                expected.reverse();
            }
            assert!(
                seen == expected,
                "{order:?}: {} entries seen (of {n}), 650 {}, the late keys {}",
                seen.len(),
                if seen.contains(&650) {
                    "seen"
                } else {
                    "missing"
                },
                if seen.contains(&u32::MAX) {
                    "seen"
                } else {
                    "not seen"
                },
            );
            // Put the store back as it was for the other direction.
            let mut undo = WriteBatch::new();
            undo.remove(Tree::Audit, u32::MAX.to_be_bytes());
            undo.remove(Tree::Audit, [0u8; 2]);
            undo.put(Tree::Audit, 650u32.to_be_bytes(), b"v");
            store.apply(&undo, Durability::Durable).expect("undo");
        }
    }

    /// A scan whose pages would be larger than the client accepts (40
    /// values of 1 MiB: a page of 512 keys would be 40 MiB) reads every
    /// entry once, in order, both ways: the pages shrink to fit.
    #[test]
    fn a_scan_of_large_values_reads_every_entry() {
        let dir = tempdir();
        let store = open_in(open_etcd, dir.path());
        let n = 40u32;
        for i in 0..n {
            let mut batch = WriteBatch::new();
            batch.put(
                Tree::Data,
                i.to_be_bytes(),
                vec![u8::try_from(i).expect("small"); 1 << 20],
            );
            store
                .apply(&batch, Durability::Durable)
                .expect("a 1 MiB value");
        }
        for order in [Order::Ascending, Order::Descending] {
            let entries = collect(
                &*store,
                Tree::Data,
                Bound::Unbounded,
                Bound::Unbounded,
                order,
            );
            let mut expected: Vec<u32> = (0..n).collect();
            if order == Order::Descending {
                expected.reverse();
            }
            let seen: Vec<u32> = entries
                .iter()
                .map(|(k, v)| {
                    let i = u32::from_be_bytes(k.as_slice().try_into().expect("a 4-byte key"));
                    assert!(v.len() == 1 << 20 && v.iter().all(|b| u32::from(*b) == i));
                    i
                })
                .collect();
            assert_eq!(seen, expected, "{order:?}");
        }
    }

    /// Two stores of one cluster never see each other's entries.
    #[test]
    fn stores_in_one_cluster_are_apart() {
        let (a, b) = (tempdir(), tempdir());
        let (a, b) = (open_in(open_etcd, a.path()), open_in(open_etcd, b.path()));
        put(&*a, Tree::Data, b"k", b"a");
        put(&*b, Tree::Data, b"k", b"b");
        assert_eq!(get(&*a, Tree::Data, b"k"), Some(b"a".to_vec()));
        assert_eq!(get(&*b, Tree::Data, b"k"), Some(b"b".to_vec()));
        assert_eq!(
            collect(
                &*a,
                Tree::Data,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::Descending
            ),
            vec![(b"k".to_vec(), b"a".to_vec())]
        );
    }
}

/// The TiKV backend, against the cluster `SHREDKV_TIKV_PD` names. No
/// cluster runs in CI, so these tests are ignored there; run them with
/// `SHREDKV_TIKV_PD=127.0.0.1:2379 cargo test -p shredkv --features tikv
/// --lib storage::conformance::tikv -- --ignored` (docs/scale-out.md).
#[cfg(feature = "tikv")]
mod tikv {
    common_tests!(
        open_tikv,
        reopen: true,
        #[ignore = "needs a TiKV cluster: SHREDKV_TIKV_PD"]
    );

    /// See [`super::survives_reopen_after_flush`].
    #[test]
    #[ignore = "needs a TiKV cluster: SHREDKV_TIKV_PD"]
    fn survives_reopen_after_flush() {
        super::survives_reopen_after_flush(open_tikv);
    }

    /// A second node's open of a served store is refused; once the first
    /// closes, it opens. A node whose ownership another took is fenced:
    /// it neither reads nor writes.
    #[test]
    #[ignore = "needs a TiKV cluster: SHREDKV_TIKV_PD"]
    fn one_node_serves_a_store_and_a_node_taken_over_is_fenced() {
        let dir = tempdir();
        let first = open_in(open_tikv, dir.path());
        put(&*first, Tree::Data, b"k", b"v");
        let refused = open_tikv(dir.path())
            .err()
            .expect("a second node is refused");
        assert!(refused.is_locked(), "{refused}");
        drop(first);
        let second = open_in(open_tikv, dir.path());
        assert_eq!(get(&*second, Tree::Data, b"k"), Some(b"v".to_vec()));
        // Another node takes the store over behind this one's back: its
        // owner key is overwritten, as a takeover after a lapse does.
        overwrite_owner_key(dir.path());
        let read = second.get(Tree::Data, b"k").expect_err("fenced");
        assert!(read.is_fenced(), "{read}");
        let mut batch = WriteBatch::new();
        batch.put(Tree::Data, b"k", b"late");
        let write = second
            .apply(&batch, Durability::Durable)
            .expect_err("fenced");
        assert!(write.is_fenced(), "{write}");
        drop(second);
    }

    /// Writes another node's record into the owner key of `dir`'s store,
    /// through a client of its own.
    fn overwrite_owner_key(dir: &Path) {
        let endpoints: Vec<String> = std::env::var("SHREDKV_TIKV_PD")
            .expect("SHREDKV_TIKV_PD")
            .split(',')
            .map(str::to_string)
            .collect();
        let namespace = format!("shredkv-conformance{}/", dir.display());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let client = tikv_client::TransactionClient::new(endpoints)
                .await
                .expect("a client");
            let mut txn = client
                .begin_with_options(super::super::tikv_backend::transaction_options())
                .await
                .expect("a transaction");
            // Another token, lapsing far in the future.
            let mut record = vec![0xAB; 16];
            record.extend_from_slice(&i64::MAX.to_be_bytes());
            record.extend_from_slice(b"pid 0 on another node");
            txn.put(
                super::super::tikv_owner::owner_key(namespace.as_bytes()),
                record,
            )
            .await
            .expect("a put");
            txn.commit().await.expect("the takeover commits");
        });
    }
}
