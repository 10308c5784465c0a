//! The storage seam: the few operations the engine needs from a backend.
//!
//! Ordered get, range scan, an atomic multi-tree write batch, flush, and an
//! optional atomic insert-if-absent that spares a new record's write the
//! read of what it would replace. Two real backends sit behind it (sled 0.34
//! and redb), and tests wrap it to inject faults. Nothing above this module
//! knows which backend it talks to.

use std::fmt;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The trees (sled trees, redb tables) of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Tree {
    /// Store identity, format version, wrapped store secret, policy digest.
    Meta,
    /// Sealed records: subject tag ‖ class ‖ record key → envelope.
    Data,
    /// Wrapped keys by key id → vault entry: scope keys, open-bucket keys,
    /// and expiry-bucket keys made before the day lane (store format 2).
    Vault,
    /// Subjects: subject tag → subject record.
    Subjects,
    /// The deadline (TTL) index: deadline ‖ key id → reason.
    Deadlines,
    /// Re-key debts: key id → since when.
    Debts,
    /// Legal holds: subject tag ‖ class → hold record.
    Holds,
    /// The erasure ledger: subject tag ‖ class → erasure record.
    Ledger,
    /// The hash-chained audit log: sequence → entry.
    Audit,
    /// Work a legal hold blocked: subject tag ‖ class ‖ deadline key → empty.
    Blocked,
    /// Seal accounting per data key: key id → reserved seals, retired.
    Seals,
    /// Compaction items set aside after a failure of their own: kind ‖
    /// item → attempts, first failure, next retry, deadline, error kind.
    Poisoned,
    /// The vault's day lane: expiry-bucket data keys ordered by their day,
    /// bucket ‖ subject tag ‖ class ‖ version → vault entry, so that the
    /// keys one day destroys lie together (see `vault::layout`).
    VaultDays,
    /// The key tree's nodes (store format 4): node id (depth ‖ prefix) →
    /// node entry, its key wrapped under its parent's (see `vault::tree`).
    KeyNodes,
}

impl Tree {
    /// Every tree, in a fixed order (used to open and to copy a store).
    pub(crate) const ALL: [Tree; 14] = [
        Tree::Meta,
        Tree::Data,
        Tree::Vault,
        Tree::Subjects,
        Tree::Deadlines,
        Tree::Debts,
        Tree::Holds,
        Tree::Ledger,
        Tree::Audit,
        Tree::Blocked,
        Tree::Seals,
        Tree::Poisoned,
        Tree::VaultDays,
        Tree::KeyNodes,
    ];

    /// The tree named `name` ([`Tree::name`]), if there is one.
    #[cfg(feature = "serde")]
    pub(crate) fn from_name(name: &str) -> Option<Tree> {
        Tree::ALL.into_iter().find(|tree| tree.name() == name)
    }

    /// The tree's name in the backend's files. Part of the on-disk format.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Data => "data",
            Tree::Vault => "vault",
            Tree::Subjects => "subjects",
            Tree::Deadlines => "deadlines",
            Tree::Debts => "debts",
            Tree::Holds => "holds",
            Tree::Ledger => "ledger",
            Tree::Audit => "audit",
            Tree::Blocked => "blocked",
            Tree::Seals => "seals",
            Tree::Poisoned => "poisoned",
            Tree::VaultDays => "vault_days",
            Tree::KeyNodes => "key_nodes",
        }
    }
}

/// The key of an op, kept inside the op up to [`OpKey::INLINE`] bytes. Every
/// key the engine writes is that short but a few meta keys, so a batch costs
/// no allocation per key: a page of compaction frees a thousand fewer
/// buffers at once, which the allocator would sort later.
#[derive(Clone)]
pub(crate) enum OpKey {
    /// Up to [`OpKey::INLINE`] bytes, in place.
    Inline {
        /// How many of `bytes` are the key.
        len: u8,
        /// The key, then zeros.
        bytes: [u8; OpKey::INLINE],
    },
    /// A longer key.
    Heap(Vec<u8>),
}

impl OpKey {
    /// The longest key kept inline: a record's key (subject tag ‖ class ‖
    /// blinded record key, 34 bytes) and a due item's (35) fit.
    pub(crate) const INLINE: usize = 46;

    /// The key's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            OpKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            OpKey::Heap(key) => key,
        }
    }
}

impl From<&[u8]> for OpKey {
    fn from(key: &[u8]) -> Self {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= OpKey::INLINE => {
                let mut bytes = [0u8; OpKey::INLINE];
                bytes[..key.len()].copy_from_slice(key);
                OpKey::Inline { len, bytes }
            }
            _ => OpKey::Heap(key.to_vec()),
        }
    }
}

impl std::ops::Deref for OpKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for OpKey {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for OpKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for OpKey {}

impl fmt::Debug for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// One change in a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Insert or replace.
    Put {
        /// Which tree.
        tree: Tree,
        /// The key.
        key: OpKey,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove if present.
    Remove {
        /// Which tree.
        tree: Tree,
        /// The key.
        key: OpKey,
    },
}

/// Changes applied together or not at all, across any trees. Applied in
/// order: a later op on the same key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    /// Runs of `ops` that [`WriteBatch::remove_neighbours`] added: removals
    /// in one tree of keys in ascending order that lie together, which a
    /// backend may do in one pass over their range. A hint only: every run
    /// is also plain removals in `ops`, a backend may ignore it, and one
    /// that uses it checks it first (ops moved since cannot mislead it).
    pub(crate) neighbour_runs: Vec<std::ops::Range<usize>>,
}

impl WriteBatch {
    /// An empty batch.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `ops` ops: a large batch built op by op
    /// is copied at every doubling.
    pub(crate) fn with_capacity(ops: usize) -> Self {
        Self {
            ops: Vec::with_capacity(ops),
            neighbour_runs: Vec::new(),
        }
    }

    /// Adds an insert.
    pub(crate) fn put(&mut self, tree: Tree, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            tree,
            key: OpKey::from(key.as_ref()),
            value: value.into(),
        });
    }

    /// Adds a removal.
    pub(crate) fn remove(&mut self, tree: Tree, key: impl AsRef<[u8]>) {
        self.ops.push(Op::Remove {
            tree,
            key: OpKey::from(key.as_ref()),
        });
    }

    /// Adds the removal of each of `keys`, keys of `tree` in ascending order
    /// with few others between them (one page of a scan, say): a backend
    /// may remove them in one pass over their range instead of one search
    /// each. Keys out of order are still removed, one by one.
    pub(crate) fn remove_neighbours(
        &mut self,
        tree: Tree,
        keys: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) {
        let start = self.ops.len();
        for key in keys {
            self.remove(tree, key);
        }
        if self.ops.len() - start > 1 {
            self.neighbour_runs.push(start..self.ops.len());
        }
    }

    /// Whether the batch holds no ops.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// When a write must be on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Visible at once; on disk by the next flush (or the backend's own
    /// periodic flush). Lost by a crash before then, atomically.
    Buffered,
    /// On stable storage before `apply` returns.
    Durable,
}

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Ascending by key bytes.
    Ascending,
    /// Descending by key bytes.
    Descending,
}

/// The storage backends shredkv can run on.
///
/// A new store is made with redb unless configured otherwise; an existing
/// one is opened with the backend that made it ([`Backend::detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// sled 0.34.7. Files never shrink; damage to the tail of its log is
    /// dropped silently on open (an erasure can go with it), so it is not
    /// the default (docs/reliability.md).
    Sled,
    /// redb: maintained, ACID, checksummed pages, stable file format; a
    /// damaged file is refused with an error. The default.
    #[default]
    Redb,
    /// An etcd cluster (feature `etcd`): the store is a key range of the
    /// cluster, every commit quorum-durable. Opened by its endpoints, not
    /// from a directory.
    #[cfg(feature = "etcd")]
    Etcd,
    /// A TiKV cluster (feature `tikv`): the store is a key range of the
    /// cluster, every commit a transaction durable on a quorum of replicas.
    /// Opened by its PD endpoints. Untested against a real cluster
    /// (docs/scale-out.md).
    #[cfg(feature = "tikv")]
    Tikv,
}

impl Backend {
    /// The backend whose files are in the store directory `dir`, if any:
    /// redb's `store.redb`, or sled's `sled/` directory. `None` for a new
    /// (or empty) directory, or one holding both.
    pub fn detect(dir: &Path) -> Option<Backend> {
        let sled = dir.join(sled_backend::SLED_DIR).is_dir();
        let redb = dir.join(redb_backend::FILE_NAME).is_file();
        match (sled, redb) {
            (true, false) => Some(Backend::Sled),
            (false, true) => Some(Backend::Redb),
            _ => None,
        }
    }

    /// The backend's name, as used in configuration and reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Redb => "redb",
            #[cfg(feature = "etcd")]
            Backend::Etcd => "etcd",
            #[cfg(feature = "tikv")]
            Backend::Tikv => "tikv",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sled" => Ok(Backend::Sled),
            "redb" => Ok(Backend::Redb),
            other => Err(format!(
                "unknown storage backend `{other}`: expected `sled` or `redb`"
            )),
        }
    }
}

/// What kind of failure a backend reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageErrorKind {
    /// An I/O error (including a full disk); the store may be retried or reopened.
    Io,
    /// The store is full: a local disk with no space left, or an etcd
    /// cluster past its quota (NOSPACE alarm).
    Full,
    /// The backend found its files damaged.
    Corrupt,
    /// A control value failed its MAC (`sealed`): written without the keys.
    Tampered,
    /// Another process (or, on etcd, another node) holds the store.
    Locked,
    /// This node no longer owns the etcd store it serves: a paused or
    /// partitioned node past its lease (`storage::etcd_owner`).
    Fenced,
    /// The directory holds a store of another backend than the one asked for.
    WrongBackend,
    /// Anything else the backend reported.
    Other,
}

impl StorageErrorKind {
    /// The kind of an I/O failure: a full disk is `Full`, anything else `Io`.
    pub(crate) fn of_io(error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::StorageFull {
            StorageErrorKind::Full
        } else {
            StorageErrorKind::Io
        }
    }
}

/// A failure reported by a storage backend, with what was being done.
#[derive(Debug)]
pub struct StorageError {
    pub(crate) backend: Backend,
    pub(crate) action: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) kind: StorageErrorKind,
    pub(crate) source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} backend failed to {} at {}: {}",
            self.backend,
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The space a store takes, and how much more it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Space {
    /// Bytes the backend occupies: its files; on etcd the largest member's
    /// database; on TiKV the logical size of the store.
    pub(crate) size_on_disk: u64,
    /// The most the backend may occupy before writes are refused: the size
    /// of a local store's filesystem, an etcd cluster's quota. `None` where
    /// the backend cannot tell.
    pub(crate) capacity: Option<u64>,
    /// How much more it may take before writes are refused: what the
    /// filesystem has free for an unprivileged writer, what is left of an
    /// etcd cluster's quota.
    pub(crate) headroom: Option<u64>,
}

impl Space {
    /// A local store of `size_on_disk` bytes whose files are under `path`:
    /// the capacity and headroom of that filesystem, if it tells them.
    pub(crate) fn local(size_on_disk: u64, path: &Path) -> Space {
        let filesystem = rustix::fs::statvfs(path).ok();
        Space {
            size_on_disk,
            capacity: filesystem
                .as_ref()
                .map(|fs| fs.f_blocks.saturating_mul(fs.f_frsize)),
            headroom: filesystem.map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize)),
        }
    }
}

/// The operations the engine needs from a backend.
pub(crate) trait Storage: Send + Sync {
    /// The value under `key`, if any.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// The values under `keys`, in their order: what [`Storage::get`] would
    /// return for each, read in one read transaction where the backend has
    /// them (redb), which a page of random lookups would otherwise open
    /// one by one.
    fn get_many(&self, tree: Tree, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        keys.iter().map(|key| self.get(tree, key)).collect()
    }

    /// Calls `visit` for every entry with a key in `(start, end)`, in `order`,
    /// until it returns `Break`. The view is consistent within one call on
    /// redb; on sled it is per entry.
    #[allow(
        clippy::type_complexity,
        reason = "the visitor type is the seam's signature; an alias would change its lifetimes"
    )]
    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError>;

    /// Applies every op of `batch` atomically (all or none, also across a crash).
    fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StorageError>;

    /// [`Storage::apply`] for a batch its caller is done with: a layer that
    /// rewrites values (the sealing layer's MACs) does so in place instead
    /// of copying every op of the batch.
    fn apply_owned(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        self.apply(&batch, durability)
    }

    /// Whether [`Storage::insert_new`] is available: an insert that fails
    /// when the key holds a value, in one atomic step.
    fn has_insert_new(&self) -> bool {
        false
    }

    /// Inserts `value` under `key` unless the key holds a value, atomically,
    /// and returns whether it inserted. Lets a write of a new key skip the
    /// read it would otherwise need to find an overwritten value. Only
    /// called when [`Storage::has_insert_new`] says so.
    fn insert_new(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<bool, StorageError> {
        let _ = (tree, key, value, durability);
        Err(StorageError {
            backend: self.backend(),
            action: "insert a new key",
            path: PathBuf::new(),
            kind: StorageErrorKind::Other,
            source: "this backend has no atomic insert-if-absent; read first".into(),
        })
    }

    /// The most ops one [`Storage::apply`] takes, if the backend has a limit
    /// (etcd's `--max-txn-ops`); a larger batch is refused whole. The
    /// engine splits the batches it can split (an erasure's key tombstones,
    /// `db::erasure_commit`) to fit.
    fn max_batch_ops(&self) -> Option<usize> {
        None
    }

    /// The largest value one write may carry, with room left for the rest
    /// of its batch, if the backend limits it: half of etcd's
    /// `--max-request-bytes` (the whole request is limited), TiKV's
    /// `txn-entry-size-limit`. The values that grow with a family (an
    /// erasure's marker and stored receipt, `db::erasure_commit`) are kept
    /// within it.
    fn max_value_bytes(&self) -> Option<usize> {
        None
    }

    /// Makes every applied batch durable.
    fn flush(&self) -> Result<(), StorageError>;

    /// The space the store takes and, where the backend can tell, how much
    /// more it may take before writes are refused.
    fn space(&self) -> Result<Space, StorageError>;

    /// Which backend this is.
    fn backend(&self) -> Backend;
}

/// Calls `visit` for every entry whose key starts with `prefix`, ascending.
#[allow(
    clippy::type_complexity,
    reason = "the same visitor type as `Storage::scan`"
)]
pub(crate) fn scan_prefix(
    storage: &dyn Storage,
    tree: Tree,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
) -> Result<(), StorageError> {
    storage.scan(
        tree,
        Bound::Included(prefix),
        Bound::Unbounded,
        Order::Ascending,
        &mut |k, v| {
            if k.starts_with(prefix) {
                visit(k, v)
            } else {
                ControlFlow::Break(())
            }
        },
    )
}

/// Whether no key can lie in `(start, end)`: the start is above the end, or
/// both name the same key and one excludes it. Backends return early on such
/// ranges because `BTreeMap::range` panics on some of them.
pub(crate) fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s >= e
        }
        _ => false,
    }
}

/// The backend to open `dir` with: the one whose files are there, else the
/// one asked for, else the default. Asking for another backend than the one
/// whose files are there is refused, before anything is created.
pub(crate) fn resolve(requested: Option<Backend>, dir: &Path) -> Result<Backend, StorageError> {
    match (requested, Backend::detect(dir)) {
        (Some(asked), Some(found)) if asked != found => Err(StorageError {
            backend: asked,
            action: "open",
            path: dir.to_path_buf(),
            kind: StorageErrorKind::WrongBackend,
            source: format!(
                "the directory holds a {found} store; open it with the {found} backend \
                 (Config::backend(Backend::{found:?}), or leave the backend unset to detect it)"
            )
            .into(),
        }),
        (_, Some(found)) => Ok(found),
        (Some(asked), None) => Ok(asked),
        (None, None) => Ok(Backend::default()),
    }
}

/// How long an open waits for the store's lock: a `Db` closing on another
/// thread (or a process exiting) releases it within moments.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens (creating if absent) the backend's files inside `dir`, refusing a
/// directory another backend made (nothing is created then). Panics inside
/// the backend, while opening or later, become corruption errors
/// (guard.rs).
/// `backend` is what the caller asked for, if anything.
pub(crate) fn open(
    backend: impl Into<Option<Backend>>,
    dir: &Path,
) -> Result<Arc<dyn Storage>, StorageError> {
    let backend = resolve(backend.into(), dir)?;
    let Some(open_here) = open_stores::mark_open(dir, LOCK_WAIT) else {
        return Err(StorageError {
            backend,
            action: "open",
            path: dir.to_path_buf(),
            kind: StorageErrorKind::Locked,
            source: format!(
                "this process already has the store open (a Db for this directory is alive, or a \
                 background compactor pass holds it; waited {LOCK_WAIT:?}): share that Db — it is \
                 Clone, Send and Sync — instead of opening the directory again"
            )
            .into(),
        });
    };
    let opened = guard::catch(backend, "open", dir, || -> Result<Arc<dyn Storage>, _> {
        match backend {
            Backend::Sled => Ok(Arc::new(sled_backend::SledStorage::open(dir)?)),
            Backend::Redb => Ok(Arc::new(redb_backend::RedbStorage::open(dir)?)),
            #[cfg(feature = "etcd")]
            Backend::Etcd => Err(remote_by_directory(backend, dir)),
            #[cfg(feature = "tikv")]
            Backend::Tikv => Err(remote_by_directory(backend, dir)),
        }
    })?;
    Ok(Arc::new(guard::Guarded::new(
        opened,
        dir.to_path_buf(),
        open_here,
    )))
}

/// The error of a cluster backend asked for by directory alone.
#[cfg(any(feature = "etcd", feature = "tikv"))]
fn remote_by_directory(backend: Backend, dir: &Path) -> StorageError {
    StorageError {
        backend,
        action: "open",
        path: dir.to_path_buf(),
        kind: StorageErrorKind::Other,
        source: format!(
            "a {backend} store is reached through its cluster's endpoints, not a directory: \
             configure them (Config::{backend})"
        )
        .into(),
    }
}

/// A store kept in a cluster instead of local files.
#[derive(Debug, Clone)]
pub(crate) enum Remote {
    /// An etcd cluster.
    #[cfg(feature = "etcd")]
    Etcd(etcd_backend::EtcdTarget),
    /// A TiKV cluster.
    #[cfg(feature = "tikv")]
    Tikv(tikv_backend::TikvTarget),
}

/// Connects to the cluster of `remote` for the store whose local
/// directory (key file, lock) is `dir`, guarded like a local backend.
pub(crate) fn open_remote(remote: &Remote, dir: &Path) -> Result<Arc<dyn Storage>, StorageError> {
    #[cfg(any(feature = "etcd", feature = "tikv"))]
    {
        let backend = match remote {
            #[cfg(feature = "etcd")]
            Remote::Etcd(_) => Backend::Etcd,
            #[cfg(feature = "tikv")]
            Remote::Tikv(_) => Backend::Tikv,
        };
        let Some(open_here) = open_stores::mark_open(dir, LOCK_WAIT) else {
            return Err(StorageError {
                backend,
                action: "open",
                path: dir.to_path_buf(),
                kind: StorageErrorKind::Locked,
                source: "this process already has the store open: share that Db instead".into(),
            });
        };
        let remote = remote.clone();
        let opened =
            guard::catch(backend, "open", dir, || match remote {
                #[cfg(feature = "etcd")]
                Remote::Etcd(target) => etcd_backend::EtcdStorage::connect(target)
                    .map(|s| Arc::new(s) as Arc<dyn Storage>),
                #[cfg(feature = "tikv")]
                Remote::Tikv(target) => tikv_backend::TikvStorage::connect(target)
                    .map(|s| Arc::new(s) as Arc<dyn Storage>),
            })?;
        Ok(Arc::new(guard::Guarded::new(
            opened,
            dir.to_path_buf(),
            open_here,
        )))
    }
    #[cfg(not(any(feature = "etcd", feature = "tikv")))]
    {
        let _ = dir;
        match *remote {}
    }
}

#[cfg(any(feature = "etcd", feature = "tikv"))]
mod cluster_keys;
#[cfg(test)]
mod conformance;
#[cfg(feature = "etcd")]
pub(crate) mod etcd_backend;
#[cfg(feature = "etcd")]
pub(crate) mod etcd_cluster;
#[cfg(feature = "etcd")]
pub(crate) mod etcd_history;
#[cfg(feature = "etcd")]
pub(crate) mod etcd_owner;
pub(crate) mod faults;
mod group_commit;
mod guard;
pub(crate) mod memory;
mod open_stores;
pub(crate) mod pauses;
mod redb_backend;
pub(crate) mod sealed;
mod sled_backend;
pub(crate) mod tape;
#[cfg(feature = "tikv")]
pub(crate) mod tikv_backend;
#[cfg(feature = "tikv")]
mod tikv_owner;

#[cfg(test)]
mod open_tests {
    use super::*;

    /// Opening a directory with the other backend is refused and creates
    /// nothing; unset, the backend is detected; a new store is redb.
    #[test]
    fn the_backend_is_detected_and_a_wrong_one_refused() {
        for made_by in [Backend::Sled, Backend::Redb] {
            let dir = tempfile::tempdir().expect("dir");
            drop(open(made_by, dir.path()).expect("create"));
            assert_eq!(Backend::detect(dir.path()), Some(made_by));
            let files = |d: &Path| {
                let mut names: Vec<_> = std::fs::read_dir(d)
                    .expect("list")
                    .map(|e| e.expect("entry").file_name())
                    .collect();
                names.sort();
                names
            };
            let before = files(dir.path());
            let other = if made_by == Backend::Sled {
                Backend::Redb
            } else {
                Backend::Sled
            };
            let err = open(other, dir.path())
                .err()
                .expect("wrong backend refused");
            assert!(err.is_wrong_backend(), "{err}");
            assert!(err.to_string().contains(made_by.name()), "{err}");
            assert_eq!(files(dir.path()), before, "nothing created");
            let detected = open(None, dir.path()).expect("detected");
            assert_eq!(detected.backend(), made_by);
        }
        let fresh = tempfile::tempdir().expect("dir");
        assert_eq!(
            open(None, fresh.path()).expect("new").backend(),
            Backend::Redb
        );
    }
}

#[cfg(test)]
mod op_key_tests {
    use super::*;

    /// A key is kept whole whatever its length: inline up to the limit, on
    /// the heap past it, equal by its bytes either way.
    #[test]
    fn an_op_key_keeps_every_byte_inline_or_not() {
        for len in [
            0,
            1,
            26,
            35,
            OpKey::INLINE - 1,
            OpKey::INLINE,
            OpKey::INLINE + 1,
            300,
        ] {
            let key: Vec<u8> = (0..len)
                .map(|i| u8::try_from((i * 7 + 3) % 256).expect("below 256"))
                .collect();
            let op_key = OpKey::from(key.as_slice());
            assert_eq!(op_key.as_slice(), key.as_slice(), "{len} bytes");
            assert_eq!(
                matches!(op_key, OpKey::Inline { .. }),
                len <= OpKey::INLINE,
                "{len} bytes"
            );
            assert_eq!(op_key, op_key.clone());
            assert_eq!(format!("{op_key:?}"), format!("{key:?}"));
        }
        // A shorter key is a different key, though its bytes begin the same.
        assert_ne!(
            OpKey::from(&b"due-1"[..]),
            OpKey::from(&b"due-10"[..4 + 1 + 1])
        );
        assert_ne!(OpKey::from(&b"due"[..]), OpKey::from(&b"due\0"[..]));
    }
}
