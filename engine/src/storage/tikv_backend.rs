//! The TiKV backend: a store kept in a TiKV cluster through its
//! transactional API (feature `tikv`).
//!
//! **Untested against a cluster.** CI compiles and lints it, and runs its
//! unit tests; its conformance suite (`storage::conformance::tikv`) runs
//! only against a cluster named by `SHREDKV_TIKV_PD` (docs/scale-out.md).
//! No TiKV cluster runs in CI, and no mock stands in for one.
//!
//! Layout: the same as etcd's (`storage::cluster_keys`) — the entry of
//! tree `t` under key `k` is the TiKV key `namespace ‖ t's name ‖ 0x00 ‖
//! k`, so one store is one key range and each tree one sub-range.
//!
//! - **get**: a transaction at a fresh timestamp reads the owner key (the
//!   fence), then the key.
//! - **scan**: pages of [`SCAN_PAGE`] keys from one snapshot, so a scan
//!   sees one committed state, ascending (`scan`) or descending
//!   (`scan_reverse`); the visitor runs between pages, outside the
//!   client's runtime, so it may use the store.
//! - **apply**: one optimistic transaction (two-phase commit across
//!   regions, atomic). A later op on the same key wins: the transaction's
//!   buffer keeps the last. TiKV has no operation count limit (its limits
//!   are in bytes: 6 MiB per entry, 100 MiB per transaction by default), so
//!   [`Storage::max_batch_ops`] is `None`.
//! - **durability**: a commit returns once its Raft log entries are on a
//!   quorum of replicas, so `Buffered` and `Durable` are the same and
//!   `flush` has nothing to do.
//! - **insert-if-absent**: the transaction's `insert`, which the prewrite
//!   refuses when the key exists (`already_exist`).
//! - **ownership**: every transaction reads the owner key and goes on only
//!   while this node owns the store; a write also locks it
//!   (`storage::tikv_owner`).
//!
//! **Failures.** A transaction that fails before its commit (a write
//! conflict, often with this node's own renewal of the owner key; a region
//! moving; a store not answering) is run again from the start, with a new
//! timestamp, until [`REQUEST_TIMEOUT`]. A commit that fails is not: its
//! outcome may be unknown, so the caller sees the error (as on etcd).

use std::future::Future;
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tikv_client::{
    BoundRange, CheckLevel, Key, KvPair, Transaction, TransactionClient, TransactionOptions,
};

use super::cluster_keys::{Namespace, held_by_another_node, successor};
use super::tikv_owner::{Fence, LEASE_TTL, Owner, TakeError};
use super::{
    Backend, Durability, Op, Order, Space, Storage, StorageError, StorageErrorKind, Tree,
    WriteBatch, range_is_empty,
};

/// Keys read per request of a scan, at most: a page whose answer is over
/// [`ANSWER_LIMIT`] (large values) is read again in halves, as on etcd.
const SCAN_PAGE: u32 = 512;
/// The largest answer this client accepts, above the gRPC default of
/// 4 MiB: one TiKV entry may be 6 MiB (`txn-entry-size-limit`).
const ANSWER_LIMIT: usize = 32 << 20;
/// How long a request may take, runs again included, before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the client waits for one answer from PD or a TiKV store.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a store lives in a TiKV cluster.
#[derive(Debug, Clone)]
pub(crate) struct TikvTarget {
    /// Addresses of the cluster's PD members (`host:port`).
    pub(crate) pd_endpoints: Vec<String>,
    /// The key prefix of this store; no other store may use a prefix of it
    /// or one it is a prefix of.
    pub(crate) namespace: Vec<u8>,
}

/// The options of every transaction: optimistic, and no panic when one is
/// dropped unfinished (a snapshot is never committed).
pub(crate) fn transaction_options() -> TransactionOptions {
    TransactionOptions::new_optimistic().drop_check(CheckLevel::None)
}

/// Why one run of a transaction failed.
enum Failure {
    /// This node does not own the store at the transaction's timestamp.
    Fenced,
    /// Before the commit: nothing was written, the transaction may run again.
    Before(tikv_client::Error),
    /// In the commit: its outcome may be unknown.
    Commit(tikv_client::Error),
}

impl From<tikv_client::Error> for Failure {
    fn from(error: tikv_client::Error) -> Self {
        Failure::Before(error)
    }
}

/// A store in a TiKV cluster.
pub(crate) struct TikvStorage {
    runtime: tokio::runtime::Runtime,
    client: TransactionClient,
    /// This node's ownership: every transaction checks it.
    owner: Owner,
    target: TikvTarget,
    /// The PD endpoints, for error messages.
    path: PathBuf,
}

impl TikvStorage {
    /// Connects to the cluster and takes the store for this node.
    pub(crate) fn connect(target: TikvTarget) -> Result<Self, StorageError> {
        let path = PathBuf::from(target.pd_endpoints.join(","));
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| StorageError {
            backend: Backend::Tikv,
            action: "connect",
            path: path.clone(),
            kind: StorageErrorKind::Io,
            source,
        };
        if target.pd_endpoints.is_empty() {
            return Err(fail("no PD endpoint given".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shredkv-tikv")
            .enable_all()
            .build()
            .map_err(|e| fail(Box::new(e)))?;
        let config = tikv_client::Config::default()
            .with_timeout(ATTEMPT_TIMEOUT)
            .with_grpc_max_decoding_message_size(ANSWER_LIMIT);
        let client = runtime
            .block_on(TransactionClient::new_with_config(
                target.pd_endpoints.clone(),
                config,
            ))
            .map_err(|e| fail(Box::new(e)))?;
        // A crashed owner's lease lapses within one lease: wait that long.
        let take = Owner::take(
            &client,
            &target.namespace,
            LEASE_TTL + Duration::from_secs(2),
        );
        let owner = match runtime.block_on(take) {
            Ok(owner) => owner,
            Err(TakeError::Cluster(e)) => return Err(fail(Box::new(e))),
            Err(TakeError::Random(e)) => {
                return Err(fail(
                    format!("the operating system's random generator failed: {e}").into(),
                ));
            }
            Err(TakeError::Held(holder)) => {
                return Err(held_by_another_node(
                    Backend::Tikv,
                    path.clone(),
                    &target.namespace,
                    &holder,
                    LEASE_TTL,
                ));
            }
        };
        Ok(Self {
            runtime,
            client,
            owner,
            target,
            path,
        })
    }

    /// The storage error of a failed request.
    fn error(&self, action: &'static str, failure: Failure) -> StorageError {
        let (error, in_commit) = match failure {
            Failure::Fenced => {
                return StorageError {
                    backend: Backend::Tikv,
                    action,
                    path: self.path.clone(),
                    kind: StorageErrorKind::Fenced,
                    source: "this node no longer owns the TiKV store (its ownership lapsed \
                             while it was paused or cut off, or another node took the store \
                             over): nothing was read or written. Close the store and open it \
                             again to serve it"
                        .into(),
                };
            }
            Failure::Before(error) => (error, false),
            Failure::Commit(error) => (error, true),
        };
        if disk_full(&error) {
            return StorageError {
                backend: Backend::Tikv,
                action,
                path: self.path.clone(),
                kind: StorageErrorKind::Full,
                source: format!(
                    "the TiKV cluster is full ({error}): nothing was written. Add capacity or \
                     free space on its stores, then retry"
                )
                .into(),
            };
        }
        let kind = if transient(&error) {
            StorageErrorKind::Io
        } else {
            StorageErrorKind::Other
        };
        let source: Box<dyn std::error::Error + Send + Sync> = if in_commit {
            format!("the commit failed and may or may not have landed: {error}").into()
        } else {
            Box::new(error)
        };
        StorageError {
            backend: Backend::Tikv,
            action,
            path: self.path.clone(),
            kind,
            source,
        }
    }

    /// Runs the transaction `run` makes until it succeeds, is fenced, fails
    /// in its commit, or fails for a reason a new run cannot help, within
    /// [`REQUEST_TIMEOUT`].
    fn request<T, F, Fut>(&self, action: &'static str, run: F) -> Result<T, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            match self.runtime.block_on(run()) {
                Ok(answer) => return Ok(answer),
                // A full store stays full: no use running again.
                Err(Failure::Before(error))
                    if (conflict(&error) || transient(&error))
                        && !disk_full(&error)
                        && Instant::now() + pause < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(failure) => return Err(self.error(action, failure)),
            }
        }
    }

    /// A new transaction, checked against the fence. A write transaction
    /// also locks the owner key, so a takeover after its start fails its
    /// commit.
    async fn begin(&self, write: bool) -> Result<Transaction, Failure> {
        let mut txn = self
            .client
            .begin_with_options(transaction_options())
            .await?;
        match self.owner.check_in(&mut txn).await {
            Ok(Fence::Owned) => {}
            Ok(Fence::Lost) => {
                let _ = txn.rollback().await;
                return Err(Failure::Fenced);
            }
            Err(error) => {
                let _ = txn.rollback().await;
                return Err(Failure::Before(error));
            }
        }
        if write {
            txn.lock_keys([self.owner.key().to_vec()]).await?;
        }
        Ok(txn)
    }

    /// Commits `txn`; a failure is [`Failure::Commit`] unless the prewrite
    /// refused it whole (a write conflict: nothing landed).
    async fn commit(txn: &mut Transaction) -> Result<(), Failure> {
        match txn.commit().await {
            Ok(_) => Ok(()),
            Err(error) if conflict(&error) || already_exists(&error) => Err(Failure::Before(error)),
            Err(error) => Err(Failure::Commit(error)),
        }
    }

    /// The store's key layout in the cluster.
    fn keys(&self) -> Namespace<'_> {
        Namespace(&self.target.namespace)
    }
}

/// Every error inside `error`, itself included (the client nests the
/// per-key errors of a request).
fn each_error(
    error: &tikv_client::Error,
    visit: &mut dyn FnMut(&tikv_client::Error) -> bool,
) -> bool {
    if visit(error) {
        return true;
    }
    match error {
        tikv_client::Error::MultipleKeyErrors(inner)
        | tikv_client::Error::ExtractedErrors(inner) => inner.iter().any(|e| each_error(e, visit)),
        tikv_client::Error::UndeterminedError(inner) => each_error(inner, visit),
        _ => false,
    }
}

/// Whether the prewrite met a newer write or a lock of another
/// transaction: nothing of this one landed, and a new run may succeed.
fn conflict(error: &tikv_client::Error) -> bool {
    !matches!(error, tikv_client::Error::UndeterminedError(_))
        && each_error(error, &mut |e| match e {
            tikv_client::Error::KeyError(key) => {
                key.conflict.is_some() || key.locked.is_some() || !key.retryable.is_empty()
            }
            _ => false,
        })
}

/// Whether an insert met an existing key.
fn already_exists(error: &tikv_client::Error) -> bool {
    each_error(error, &mut |e| match e {
        tikv_client::Error::DuplicateKeyInsertion => true,
        tikv_client::Error::KeyError(key) => key.already_exist.is_some(),
        _ => false,
    })
}

/// Whether an answer was larger than the client accepts ([`ANSWER_LIMIT`]).
fn answer_too_large(error: &tikv_client::Error) -> bool {
    /// The gRPC status of an answer over the client's size limit.
    const GRPC_OUT_OF_RANGE: i32 = 11;
    each_error(error, &mut |e| {
        matches!(e, tikv_client::Error::GrpcAPI(status)
            if i32::from(status.code()) == GRPC_OUT_OF_RANGE
                && status.message().contains("message length too large"))
    })
}

/// Whether a TiKV store refused the write for lack of disk space.
fn disk_full(error: &tikv_client::Error) -> bool {
    each_error(error, &mut |e| match e {
        tikv_client::Error::RegionError(region) => region.disk_full.is_some(),
        _ => false,
    })
}

/// Whether `error` is a cluster that cannot answer now (and may soon).
fn transient(error: &tikv_client::Error) -> bool {
    each_error(error, &mut |e| {
        matches!(
            e,
            tikv_client::Error::Grpc(_)
                | tikv_client::Error::GrpcAPI(_)
                | tikv_client::Error::RegionError(_)
                | tikv_client::Error::LeaderNotFound { .. }
                | tikv_client::Error::RegionForKeyNotFound { .. }
                | tikv_client::Error::RegionForRangeNotFound { .. }
                | tikv_client::Error::Io(_)
        )
    })
}

impl Storage for TikvStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let full = &self.keys().full_key(tree, key);
        self.request("read", move || async move {
            let mut txn = self.begin(false).await?;
            let found = txn.get(full.clone()).await;
            let _ = txn.rollback().await;
            Ok(found?)
        })
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
        let prefix = self.keys().tree_prefix(tree);
        let (mut low, mut high) = self.keys().range(tree, start, end);
        // One transaction for every page: one snapshot, checked once.
        let mut txn = self.request("scan", || self.begin(false))?;
        let mut page_len = SCAN_PAGE;
        let outcome = loop {
            if low >= high {
                break Ok(());
            }
            let range = BoundRange::new(
                Bound::Included(Key::from(low.clone())),
                Bound::Excluded(Key::from(high.clone())),
            );
            let page = self.runtime.block_on(async {
                match order {
                    Order::Ascending => txn
                        .scan(range, page_len)
                        .await
                        .map(|page| page.collect::<Vec<KvPair>>()),
                    Order::Descending => txn
                        .scan_reverse(range, page_len)
                        .await
                        .map(|page| page.collect::<Vec<KvPair>>()),
                }
            });
            let entries = match page {
                Ok(entries) => entries,
                // Large values: the same page again, half as long.
                Err(error) if page_len > 1 && answer_too_large(&error) => {
                    page_len /= 2;
                    continue;
                }
                Err(error) => break Err(self.error("scan", Failure::Before(error))),
            };
            let full_page = entries.len() == page_len as usize;
            let mut last = None;
            let mut stopped = false;
            for pair in entries {
                let (key, value): (Key, Vec<u8>) = pair.into();
                let key: Vec<u8> = key.into();
                let stripped = key.get(prefix.len()..).unwrap_or_default();
                if visit(stripped, &value).is_break() {
                    stopped = true;
                    break;
                }
                last = Some(key);
            }
            match (stopped, full_page, last) {
                (false, true, Some(last)) => match order {
                    Order::Ascending => low = successor(last),
                    Order::Descending => high = last,
                },
                _ => break Ok(()),
            }
        };
        let _ = self.runtime.block_on(txn.rollback());
        outcome
    }

    fn apply(&self, batch: &WriteBatch, _durability: Durability) -> Result<(), StorageError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.request("write", move || async move {
            let mut txn = self.begin(true).await?;
            for op in &batch.ops {
                let written = match op {
                    Op::Put { tree, key, value } => {
                        txn.put(self.keys().full_key(*tree, key), value.clone())
                            .await
                    }
                    Op::Remove { tree, key } => txn.delete(self.keys().full_key(*tree, key)).await,
                };
                if let Err(error) = written {
                    let _ = txn.rollback().await;
                    return Err(Failure::Before(error));
                }
            }
            Self::commit(&mut txn).await
        })
    }

    fn max_value_bytes(&self) -> Option<usize> {
        // TiKV's default txn-entry-size-limit (6 MiB): a larger key-value
        // entry fails the transaction.
        Some(6 << 20)
    }

    fn has_insert_new(&self) -> bool {
        true
    }

    fn insert_new(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
        _durability: Durability,
    ) -> Result<bool, StorageError> {
        let full = &self.keys().full_key(tree, key);
        self.request("insert a new key", move || async move {
            let mut txn = self.begin(true).await?;
            if let Err(error) = txn.insert(full.clone(), value.to_vec()).await {
                let _ = txn.rollback().await;
                return if already_exists(&error) {
                    Ok(false)
                } else {
                    Err(Failure::Before(error))
                };
            }
            match Self::commit(&mut txn).await {
                Ok(()) => Ok(true),
                Err(Failure::Before(error)) if already_exists(&error) => Ok(false),
                Err(failure) => Err(failure),
            }
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        // Committed transactions are on a quorum of replicas already.
        Ok(())
    }

    fn space(&self) -> Result<Space, StorageError> {
        // The client reports no sizes, so this is the logical size: every
        // key and value of the store once, before replication, compression
        // and old versions (a scan of the whole store).
        let mut bytes = 0u64;
        for tree in super::Tree::ALL {
            self.scan(
                tree,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, v| {
                    bytes += (k.len() + v.len()) as u64;
                    ControlFlow::Continue(())
                },
            )?;
        }
        // Neither the cluster's capacity nor its free space is known here.
        Ok(Space {
            size_on_disk: bytes,
            capacity: None,
            headroom: None,
        })
    }

    fn backend(&self) -> Backend {
        Backend::Tikv
    }
}

impl Drop for TikvStorage {
    fn drop(&mut self) {
        // Hand the store over at once instead of after the lease.
        let release = self.owner.release(&self.client);
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(2), release).await });
    }
}
