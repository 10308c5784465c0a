//! How a store is opened.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shredkv_crypto::KeyProvider;

use crate::clock::{Clock, SystemClock};
use crate::retention::Policy;
use crate::storage::Backend;

/// Options for [`Db::open`](crate::Db::open). Built with chained setters:
///
/// ```
/// use shredkv::{Backend, Config};
/// let config = Config::new("/tmp/store").backend(Backend::Redb).sync_writes(true);
/// assert_eq!(config.path().to_str(), Some("/tmp/store"));
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) path: PathBuf,
    /// `None`: the backend whose files are in `path`, redb for a new store.
    pub(crate) backend: Option<Backend>,
    pub(crate) policy: Option<Policy>,
    pub(crate) apply_policy_change: bool,
    pub(crate) key_provider: Option<Arc<dyn KeyProvider>>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) allow_key_file_in_store: bool,
    pub(crate) clock: Arc<dyn Clock>,
    /// Set by a restore only: the time of the store whose erasures it
    /// replays, below which the restored store's time never reads.
    pub(crate) time_floor: Option<i64>,
    pub(crate) sync_writes: bool,
    pub(crate) key_cache_bytes: usize,
    pub(crate) flush_every: Option<Duration>,
    pub(crate) gate_stripes: usize,
    pub(crate) retire_after_seals: u64,
    pub(crate) epoch_rotation: Option<jiff::SignedDuration>,
    pub(crate) maintenance_every: Option<Duration>,
    /// Where `Db::open` serves the admin endpoint, if anywhere (read only
    /// with the `admin` feature).
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) admin_socket: Option<PathBuf>,
    /// The uid the admin endpoint admits; the process's own when `None`.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) admin_allowed_uid: Option<u32>,
    /// The cluster the store lives in ([`Config::etcd`], `Config::tikv`),
    /// instead of local files.
    pub(crate) remote: Option<crate::storage::Remote>,
    /// The shard this store serves ([`Config::shard`]).
    pub(crate) shard: Option<crate::shard_route::ShardBinding>,
    /// An etcd cluster's `--max-request-bytes` ([`Config::max_request_bytes`]),
    /// kept here too so the order of the two calls does not matter.
    #[cfg(feature = "etcd")]
    max_request_bytes: Option<usize>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("backend", &self.backend)
            .field("sync_writes", &self.sync_writes)
            .field("key_file", &self.key_file)
            .field("allow_key_file_in_store", &self.allow_key_file_in_store)
            .field("maintenance_every", &self.maintenance_every)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A store in directory `path` with defaults: the backend whose files are
    /// there (redb for a new store; see [`Backend::detect`]), the default
    /// policy (`policy/default.toml`), a file key provider at `path/keys`
    /// (refused unless [`Config::allow_key_file_in_store`]: give
    /// [`Config::key_file`] a path outside the store), the system clock, buffered writes flushed every 500 ms, and
    /// maintenance (compaction, epoch rotation and destruction) in the
    /// background every hour.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            backend: None,
            policy: None,
            apply_policy_change: false,
            key_provider: None,
            key_file: None,
            allow_key_file_in_store: false,
            clock: Arc::new(SystemClock),
            time_floor: None,
            sync_writes: false,
            key_cache_bytes: 64 << 20,
            flush_every: Some(Duration::from_millis(500)),
            gate_stripes: 256,
            retire_after_seals: shredkv_crypto::RETIRE_AFTER_SEALS,
            epoch_rotation: None,
            maintenance_every: Some(Duration::from_secs(3600)),
            admin_socket: None,
            admin_allowed_uid: None,
            remote: None,
            shard: None,
            #[cfg(feature = "etcd")]
            max_request_bytes: None,
        }
    }

    /// Serves the admin endpoint on a Unix socket at `path` while the store
    /// is open, so the `shredkv` CLI can operate it (conventionally
    /// `<store>/admin.sock`, where the CLI looks by default). The socket is
    /// owner-only and admits only this process's uid; see
    /// [`crate::admin`].
    #[cfg(feature = "admin")]
    pub fn admin_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.admin_socket = Some(path.into());
        self
    }

    /// The uid the admin endpoint admits instead of this process's (tests).
    #[cfg(feature = "admin")]
    #[doc(hidden)]
    pub fn admin_allowed_uid(mut self, uid: u32) -> Self {
        self.admin_allowed_uid = Some(uid);
        self
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The storage backend. Opening a directory another backend made is
    /// then refused (`StorageError::is_wrong_backend`), creating nothing;
    /// without it, the backend is detected, and a new store uses redb.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Keeps the store in an etcd cluster (feature `etcd`): every tree
    /// under the key prefix `namespace` of the cluster whose members answer
    /// at `endpoints` (`http://host:port`), every commit quorum-durable.
    /// `max_txn_ops` is the cluster's `--max-txn-ops` (etcd's default is
    /// 128): the engine sizes its batches to it, an erasure too large for
    /// one transaction lands in chunks (docs/design.md, invariant 3), and a
    /// batch it cannot split that is larger is refused whole, never split.
    /// The directory `path` still holds what is local to this process: the
    /// key file (by default) and the store's lock. Two stores must never
    /// share a namespace, nor one be a prefix of another's.
    ///
    /// One node serves a store at a time: opening takes the store's owner
    /// key under an etcd lease (waiting up to one lease, 10 s, for a crashed
    /// owner's to lapse; a store still served is refused with
    /// [`Error::is_locked`](crate::Error::is_locked)), and every request is
    /// guarded on it, so a node paused past its lease is refused
    /// ([`Error::is_fenced`](crate::Error::is_fenced)). Closing hands the
    /// store over at once.
    ///
    /// A backup of an etcd store ([`Db::backup`](crate::Db::backup)) is a
    /// local redb store; [`Db::restore`](crate::Db::restore) into a target
    /// configured with this method writes an empty namespace (one that
    /// holds a store is refused).
    #[cfg(feature = "etcd")]
    pub fn etcd(
        mut self,
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        namespace: &str,
        max_txn_ops: usize,
    ) -> Self {
        self.backend = Some(Backend::Etcd);
        self.remote = Some(crate::storage::Remote::Etcd(
            crate::storage::etcd_backend::EtcdTarget {
                endpoints: endpoints.into_iter().map(Into::into).collect(),
                namespace: namespace.as_bytes().to_vec(),
                max_txn_ops,
                max_request_bytes: self
                    .max_request_bytes
                    .unwrap_or(crate::storage::etcd_backend::DEFAULT_MAX_REQUEST_BYTES),
            },
        ));
        self
    }

    /// The etcd cluster's `--max-request-bytes` (default etcd's own, 1.5
    /// MiB), for a store given by [`Config::etcd`] (before or after it). No
    /// value the store writes is larger than half of it: an erasure of
    /// several families at once (`Db::shred_each`) whose marker, listing
    /// their subjects at 16 bytes each, would be is refused before anything
    /// is written; an erasure whose receipt would be lands, and its retry is
    /// not answered from a stored receipt (docs/scale-out.md).
    #[cfg(feature = "etcd")]
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = Some(bytes);
        if let Some(crate::storage::Remote::Etcd(target)) = &mut self.remote {
            target.max_request_bytes = bytes;
        }
        self
    }

    /// Keeps the store in a TiKV cluster (feature `tikv`), under the key
    /// prefix `namespace` of the cluster whose PD members answer at
    /// `pd_endpoints` (`host:port`). Every commit is an optimistic
    /// transaction, durable on a quorum of replicas. The directory `path`
    /// holds what is local to this process (the key file by default, the
    /// lock), as with [`Config::etcd`], and one node serves a store at a
    /// time, fenced the same way (`is_locked`, `is_fenced`).
    ///
    /// **Untested against a real cluster**: CI compiles this backend, and
    /// its conformance suite runs only where a cluster is given
    /// (`SHREDKV_TIKV_PD`; docs/scale-out.md). Backups of a TiKV store are
    /// not supported.
    #[cfg(feature = "tikv")]
    pub fn tikv(
        mut self,
        pd_endpoints: impl IntoIterator<Item = impl Into<String>>,
        namespace: &str,
    ) -> Self {
        self.backend = Some(Backend::Tikv);
        self.remote = Some(crate::storage::Remote::Tikv(
            crate::storage::tikv_backend::TikvTarget {
                pd_endpoints: pd_endpoints.into_iter().map(Into::into).collect(),
                namespace: namespace.as_bytes().to_vec(),
            },
        ));
        self
    }

    /// The retention policy (default: the embedded `policy/default.toml`).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Accept a policy that differs from the one the store was created with
    /// (recorded in the audit log). Without this, opening such a store fails.
    pub fn apply_policy_change(mut self, apply: bool) -> Self {
        self.apply_policy_change = apply;
        self
    }

    /// Use this key provider instead of the file provider.
    pub fn key_provider(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.key_provider = Some(provider);
        self
    }

    /// Keep the file provider's key file here instead of `path/keys`. In
    /// production, keep it outside the store directory and off the volume
    /// that is backed up with the store.
    ///
    /// ```
    /// use shredkv::Config;
    /// let config = Config::new("/var/lib/app/store").key_file("/etc/app/keys/store.keys");
    /// ```
    pub fn key_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.key_file = Some(file.into());
        self
    }

    /// Allow the file provider's key file inside the store directory (the
    /// default `path/keys` included); refused otherwise, as
    /// [`Error::KeyFileInStore`](crate::Error::KeyFileInStore). For tests
    /// and demos only: a key file there travels with every copy of the
    /// store (a snapshot, `cp -a`, a backup of the volume), so whoever holds
    /// the copy holds the keys that decrypt what it has not yet erased.
    pub fn allow_key_file_in_store(mut self, allow: bool) -> Self {
        self.allow_key_file_in_store = allow;
        self
    }

    /// The file provider's key file: the configured one or `path/keys`,
    /// refused inside the store directory unless allowed.
    pub(crate) fn placed_key_file(&self) -> crate::Result<PathBuf> {
        let file = self
            .key_file
            .clone()
            .unwrap_or_else(|| self.path.join("keys"));
        if !self.allow_key_file_in_store && is_inside(&self.path, &file) {
            return Err(crate::Error::KeyFileInStore {
                path: self.path.clone(),
                key_file: file,
            });
        }
        Ok(file)
    }

    /// The clock (inject a [`ManualClock`](crate::ManualClock) in tests).
    ///
    /// The store never runs its time back: it reads this clock floored by
    /// the latest second it already used, kept in the store across reopens
    /// ([`Db::now`](crate::Db::now)). A clock set back stands still for the
    /// store until it passes that second again.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Make every write durable before it returns (default: durable at the
    /// next [`Db::flush`](crate::Db::flush) or background flush).
    pub fn sync_writes(mut self, sync: bool) -> Self {
        self.sync_writes = sync;
        self
    }

    /// Memory for unwrapped keys (default 64 MiB, about 65,000 keys).
    pub fn key_cache_bytes(mut self, bytes: usize) -> Self {
        self.key_cache_bytes = bytes;
        self
    }

    /// How often buffered writes are flushed in the background (`None`: only
    /// on [`Db::flush`](crate::Db::flush) and close).
    pub fn flush_every(mut self, every: Option<Duration>) -> Self {
        self.flush_every = every;
        self
    }

    /// How often the epoch key is rotated (default: one day, or a quarter of
    /// the policy's shortest purge window if that is shorter). At most a
    /// quarter of the shortest purge window, or the open fails: see
    /// docs/design.md, "The deletion timeline".
    pub fn epoch_rotation(mut self, every: jiff::SignedDuration) -> Self {
        self.epoch_rotation = Some(every);
        self
    }

    /// How often maintenance runs in the background: a compaction pass,
    /// which also rotates and destroys epoch keys on schedule (default every
    /// hour, first a minute after open; the purge timeline needs a pass at
    /// least every half rotation period). `None` turns the background thread
    /// off: the application then calls [`Db::compact`](crate::Db::compact)
    /// itself, as tests with an injected clock do. Overdue purges show in
    /// [`Db::stats`](crate::Db::stats) and [`Db::verify`](crate::Db::verify).
    pub fn maintenance_every(mut self, every: Option<Duration>) -> Self {
        self.maintenance_every = every;
        self
    }

    /// This store is shard `index` of `count` (`index < count`): it holds
    /// the accounts that route to it, each with its end users, and refuses
    /// to register any other account ([`Error::WrongShard`]). The first open
    /// that names a shard binds the store to it (only a store without
    /// subjects can be bound); later opens must name the same shard, or
    /// none. [`Shards`](crate::Shards) opens one store per shard this way.
    /// An `index` not below `count` is refused at open.
    ///
    /// [`Error::WrongShard`]: crate::Error::WrongShard
    pub fn shard(mut self, index: u32, count: u32) -> Self {
        self.shard = Some(crate::shard_route::ShardBinding { index, count });
        self
    }

    /// Retire a data key after this many seals (default and maximum 2^30, a
    /// quarter of AES-GCM's random-nonce limit). Lower values exercise key
    /// rotation in tests.
    pub fn retire_keys_after_seals(mut self, seals: u64) -> Self {
        self.retire_after_seals = seals.max(1);
        self
    }
}

/// Whether `file` lies inside directory `dir`, symbolic links resolved
/// where the paths exist (lexically where they do not yet).
fn is_inside(dir: &Path, file: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let parent = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    resolve(parent).starts_with(resolve(dir))
}
