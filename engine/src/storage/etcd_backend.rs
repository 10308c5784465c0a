//! The etcd backend: a store kept in an etcd cluster (v3 API) instead of
//! local files (feature `etcd`).
//!
//! Layout: every entry of tree `t` under key `k` is the etcd key
//! `namespace ‖ t's name ‖ 0x00 ‖ k`, so one store is one key range of the
//! cluster and each tree one sub-range (tree names hold no zero byte).
//!
//! - **get**: a linearizable range read of one key.
//! - **scan**: pages of [`SCAN_PAGE`] keys, all read at the revision of the
//!   first page, so a scan sees one committed state, ascending or
//!   descending; the visitor runs between pages, outside the client's
//!   runtime, so it may use the store.
//! - **apply**: one etcd transaction. A later op on the same key wins (etcd
//!   refuses a transaction that names a key twice, so the batch is reduced
//!   to its last op per key first). A batch larger than the cluster's
//!   `--max-txn-ops` (128 by default) cannot be one transaction: it is
//!   refused before anything is sent, never split, since a split batch
//!   would not be atomic. An erasure too large for one transaction is
//!   chunked by the engine (`db::erasure_commit`, which reads the limit
//!   from [`Storage::max_batch_ops`]); other batches of the engine (pages
//!   of compaction and epoch re-wraps) can still exceed 128, so the
//!   cluster must allow them (docs/scale-out.md).
//! - **durability**: every acknowledged transaction is committed by a
//!   quorum of members, so `Buffered` and `Durable` are the same and
//!   `flush` has nothing to do.
//! - **insert-if-absent**: a transaction guarded on the key's
//!   `create_revision` being 0.
//!
//! The seam is synchronous and the client asynchronous: each call runs on
//! a one-worker tokio runtime owned by the store (`block_on` from any
//! thread).
//!
//! **Members down.** The client spreads requests over every endpoint and
//! does not route around one that refuses connections (etcd-client issue
//! 39): a request that lands on a stopped member fails at once. Such a
//! request never left this process, so it is sent again, writes included,
//! until [`REQUEST_TIMEOUT`]; reads are also sent again after any transient
//! failure (no leader, a timeout). A write whose outcome is unknown (sent,
//! no answer) is never resent: the caller sees the error, and the engine
//! re-reads what it caches.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use super::{
    Backend, Durability, Op, Order, Storage, StorageError, StorageErrorKind, Tree, WriteBatch,
    range_is_empty,
};

/// Keys read per request of a scan.
const SCAN_PAGE: i64 = 512;
/// How long a request may take before it fails (a cluster without quorum
/// does not answer writes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a store lives in a cluster and how large its transactions may be.
#[derive(Debug, Clone)]
pub(crate) struct EtcdTarget {
    /// Client URLs of the cluster's members (`http://host:port`).
    pub(crate) endpoints: Vec<String>,
    /// The key prefix of this store; no other store may use a prefix of it
    /// or one it is a prefix of.
    pub(crate) namespace: Vec<u8>,
    /// The cluster's `--max-txn-ops`.
    pub(crate) max_txn_ops: usize,
}

/// A store in an etcd cluster.
pub(crate) struct EtcdStorage {
    runtime: tokio::runtime::Runtime,
    client: Client,
    target: EtcdTarget,
    /// The endpoints, for error messages.
    path: PathBuf,
}

impl EtcdStorage {
    /// Connects to the cluster.
    pub(crate) fn connect(target: EtcdTarget) -> Result<Self, StorageError> {
        let path = PathBuf::from(target.endpoints.join(","));
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| StorageError {
            backend: Backend::Etcd,
            action: "connect",
            path: path.clone(),
            kind: StorageErrorKind::Io,
            source,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shredkv-etcd")
            .enable_all()
            .build()
            .map_err(|e| fail(Box::new(e)))?;
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let client = runtime
            .block_on(Client::connect(&target.endpoints, Some(options)))
            .map_err(|e| fail(Box::new(e)))?;
        Ok(Self {
            runtime,
            client,
            target,
            path,
        })
    }

    fn fail(&self, action: &'static str) -> impl Fn(etcd_client::Error) -> StorageError + '_ {
        move |error| {
            if let etcd_client::Error::GRpcStatus(status) = &error
                && i32::from(status.code()) == GRPC_RESOURCE_EXHAUSTED
                && status.message().contains("space exceeded")
            {
                return StorageError {
                    backend: Backend::Etcd,
                    action,
                    path: self.path.clone(),
                    kind: StorageErrorKind::Full,
                    source: format!(
                        "the etcd cluster is full ({}; NOSPACE alarm): nothing was written, \
                         reads and deletes still work. Compact and defragment the cluster, or \
                         raise its --quota-backend-bytes, then `etcdctl alarm disarm`",
                        status.message()
                    )
                    .into(),
                };
            }
            let kind = if transient(&error) {
                StorageErrorKind::Io
            } else {
                StorageErrorKind::Other
            };
            StorageError {
                backend: Backend::Etcd,
                action,
                path: self.path.clone(),
                kind,
                source: Box::new(error),
            }
        }
    }

    /// Runs the request `send` makes, sending it again after a failure
    /// `resend` allows, until [`REQUEST_TIMEOUT`] has passed.
    fn request<T, F, Fut>(
        &self,
        action: &'static str,
        resend: Resend,
        send: F,
    ) -> Result<T, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            match self.runtime.block_on(send()) {
                Ok(answer) => return Ok(answer),
                Err(error)
                    if Instant::now() + pause < deadline
                        && (never_sent(&error)
                            || (resend == Resend::Read && transient(&error))) =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(error) => return Err(self.fail(action)(error)),
            }
        }
    }

    /// The etcd key of `key` in `tree`.
    fn full_key(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        let mut full = self.tree_prefix(tree);
        full.extend_from_slice(key);
        full
    }

    /// `namespace ‖ tree name ‖ 0x00`.
    fn tree_prefix(&self, tree: Tree) -> Vec<u8> {
        let mut prefix = self.target.namespace.clone();
        prefix.extend_from_slice(tree.name().as_bytes());
        prefix.push(0);
        prefix
    }
}

/// Which failed requests are sent again (see the module's "Members down").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// A read: after any transient failure.
    Read,
    /// A write: only when the request never reached a member.
    Write,
}

/// Whether `error` says the request never reached a member: no connection
/// to the member it was routed to could be made (etcd-client's own error
/// does not expose its cause as `source()`, so the walk starts below it).
fn never_sent(error: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match error {
        etcd_client::Error::GRpcStatus(status) => {
            if i32::from(status.code()) == GRPC_UNAVAILABLE
                && status.message() == "tcp connect error"
            {
                return true;
            }
            Some(status)
        }
        etcd_client::Error::TransportError(transport) => Some(transport),
        _ => None,
    };
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = current.source();
    }
    false
}

/// Whether `error` is a cluster that cannot answer now (and may soon).
fn transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            i32::from(status.code()),
            GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED
        ),
        _ => false,
    }
}

/// gRPC status codes (the gRPC specification's numbers) of a cluster that
/// cannot answer now: no leader, no quorum, a member down.
const GRPC_UNAVAILABLE: i32 = 14;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
/// The code of etcd's "database space exceeded" (its quota is reached).
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;

/// `key ‖ 0x00`: the first key after `key`.
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

impl Storage for EtcdStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let key = self.full_key(tree, key);
        let response = self.request("read", Resend::Read, || {
            let mut kv = self.client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })?;
        Ok(response.kvs().first().map(|entry| entry.value().to_vec()))
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
        let prefix = self.tree_prefix(tree);
        let mut low = match start {
            Bound::Unbounded => prefix.clone(),
            Bound::Included(k) => self.full_key(tree, k),
            Bound::Excluded(k) => successor(self.full_key(tree, k)),
        };
        // Exclusive; the tree prefix ends in 0x00, so its end is the same
        // prefix ending in 0x01.
        let mut high = match end {
            Bound::Unbounded => {
                let mut after = prefix.clone();
                if let Some(last) = after.last_mut() {
                    *last = 1;
                }
                after
            }
            Bound::Excluded(k) => self.full_key(tree, k),
            Bound::Included(k) => successor(self.full_key(tree, k)),
        };
        let sort = match order {
            Order::Ascending => SortOrder::Ascend,
            Order::Descending => SortOrder::Descend,
        };
        let mut revision = 0;
        loop {
            if low >= high {
                return Ok(());
            }
            let mut options = GetOptions::new()
                .with_range(high.clone())
                .with_limit(SCAN_PAGE)
                .with_sort(SortTarget::Key, sort);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response = self.request("scan", Resend::Read, || {
                let mut kv = self.client.kv_client();
                let (low, options) = (low.clone(), options.clone());
                async move { kv.get(low, Some(options)).await }
            })?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let entries = response.take_kvs();
            let Some(last) = entries.last().map(|e| e.key().to_vec()) else {
                return Ok(());
            };
            for entry in &entries {
                let key = entry.key().get(prefix.len()..).unwrap_or_default();
                if visit(key, entry.value()).is_break() {
                    return Ok(());
                }
            }
            if !more {
                return Ok(());
            }
            match order {
                Order::Ascending => low = successor(last),
                Order::Descending => high = last,
            }
        }
    }

    fn apply(&self, batch: &WriteBatch, _durability: Durability) -> Result<(), StorageError> {
        // The last op on each key (etcd refuses a key named twice).
        let mut last: BTreeMap<Vec<u8>, Option<&[u8]>> = BTreeMap::new();
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } => {
                    last.insert(self.full_key(*tree, key), Some(value.as_slice()));
                }
                Op::Remove { tree, key } => {
                    last.insert(self.full_key(*tree, key), None);
                }
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        if last.len() > self.target.max_txn_ops {
            return Err(StorageError {
                backend: Backend::Etcd,
                action: "write",
                path: self.path.clone(),
                kind: StorageErrorKind::Other,
                source: format!(
                    "a batch of {} operations is more than one etcd transaction may hold \
                     (--max-txn-ops {}); nothing was written. Raise the cluster's \
                     --max-txn-ops (and tell the store), or write smaller batches",
                    last.len(),
                    self.target.max_txn_ops
                )
                .into(),
            });
        }
        let ops: Vec<TxnOp> = last
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(key, value.to_vec(), None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new().and_then(ops);
        self.request("write", Resend::Write, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        Ok(())
    }

    fn has_insert_new(&self) -> bool {
        true
    }

    fn max_batch_ops(&self) -> Option<usize> {
        Some(self.target.max_txn_ops)
    }

    fn insert_new(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
        _durability: Durability,
    ) -> Result<bool, StorageError> {
        let key = self.full_key(tree, key);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let response = self.request("insert a new key", Resend::Write, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        Ok(response.succeeded())
    }

    fn flush(&self) -> Result<(), StorageError> {
        // Acknowledged transactions are on a quorum's disks already.
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        let status = self.request("read the cluster's status", Resend::Read, || {
            let mut maintenance = self.client.maintenance_client();
            async move { maintenance.status().await }
        })?;
        Ok(u64::try_from(status.db_size()).unwrap_or(0))
    }

    fn backend(&self) -> Backend {
        Backend::Etcd
    }
}
