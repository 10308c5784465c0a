//! The etcd backend: a store kept in an etcd cluster (v3 API) instead of
//! local files (feature `etcd`).
//!
//! Layout: every entry of tree `t` under key `k` is the etcd key
//! `namespace ‖ t's name ‖ 0x00 ‖ k` (`storage::cluster_keys`), so one
//! store is one key range of the cluster and each tree one sub-range.
//!
//! - **get**: a linearizable range read of one key; **get_many** reads a
//!   page of keys in one guarded transaction per `--max-txn-ops` of them.
//! - **scan**: pages of [`SCAN_PAGE`] keys, all read at the revision of the
//!   first page, so a scan sees one committed state, ascending or
//!   descending; the visitor runs between pages, outside the client's
//!   runtime, so it may use the store. A page too large for one answer
//!   ([`ANSWER_LIMIT`]) is read again in halves.
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
//! **Members down.** etcd-client's own balancing does not route around a
//! member that refuses connections (its issue 39) nor one that hangs (a
//! paused member: the failure tests saw every attempt time out while it
//! was stopped). So the store keeps one client per member and sends every
//! request to one member until it fails to answer (refused, unavailable,
//! or no answer within [`ATTEMPT_TIMEOUT`], or the connection broken under
//! the request), then to the next. A request that never left this process
//! (connection refused) is sent again, writes included, until
//! [`REQUEST_TIMEOUT`]; reads are also sent again after any transient
//! failure. A write whose outcome is unknown (sent, no answer) is never
//! resent: the caller sees an error that says it may have been applied and
//! to retry, and the engine re-reads what it caches.
//!
//! **Ownership.** One node serves a store at a time, and every request is
//! guarded on its ownership (`storage::etcd_owner`).

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, GetResponse, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::cluster_keys::{Namespace, held_by_another_node, successor};
use super::etcd_owner::{LEASE_TTL, Owner, TakeError};

use super::{
    Backend, Durability, Op, Order, Space, Storage, StorageError, StorageErrorKind, Tree,
    WriteBatch, range_is_empty,
};

/// Keys read per request of a scan, at most: a page whose answer is over
/// [`ANSWER_LIMIT`] (large values) is read again in halves.
const SCAN_PAGE: i64 = 512;
/// The largest answer this client accepts, above the gRPC default of
/// 4 MiB: one value may be as large as the cluster's `--max-request-bytes`
/// (1.5 MiB by default), and a page holds many.
const ANSWER_LIMIT: usize = 32 << 20;
/// How long a request may take, resends included, before it fails (a
/// cluster without quorum does not answer writes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one attempt may wait for its member's answer: a member paused
/// or cut off accepts the request and never answers, so the next attempt
/// goes to the next member.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The cluster's `--max-request-bytes`.
    pub(crate) max_request_bytes: usize,
}

/// etcd's own default `--max-request-bytes` (1.5 MiB).
pub(crate) const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;

/// A store in an etcd cluster.
pub(crate) struct EtcdStorage {
    runtime: tokio::runtime::Runtime,
    /// One client per member, each talking to its member only (the
    /// client's own balancing keeps sending to a member that hangs).
    clients: Vec<Client>,
    /// The member requests go to, until one fails to answer.
    current: AtomicUsize,
    /// This node's ownership (`storage::etcd_owner`): every request is
    /// guarded on it.
    owner: Owner,
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
            .with_connect_timeout(ATTEMPT_TIMEOUT)
            .with_timeout(ATTEMPT_TIMEOUT);
        // Connections are made lazily: a member down now is reached later.
        let clients = target
            .endpoints
            .iter()
            .map(|endpoint| {
                runtime
                    .block_on(Client::connect([endpoint], Some(options.clone())))
                    .map_err(|e| fail(Box::new(e)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err(fail("no etcd endpoint given".into()));
        }
        // A crashed owner's lease lapses within one lease: wait that long.
        let take = Owner::take(
            &clients,
            &target.namespace,
            LEASE_TTL + Duration::from_secs(2),
        );
        let owner = match runtime.block_on(take) {
            Ok(owner) => owner,
            Err(TakeError::Cluster(e)) => return Err(fail(Box::new(e))),
            Err(TakeError::Held(holder)) => {
                return Err(held_by_another_node(
                    Backend::Etcd,
                    path.clone(),
                    &target.namespace,
                    &holder,
                    LEASE_TTL,
                ));
            }
        };
        Ok(Self {
            runtime,
            clients,
            current: AtomicUsize::new(0),
            owner,
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

    /// The error of a write that reached a member and was not answered (a
    /// connection broken, a member that stopped answering): it may have
    /// been applied.
    fn outcome_unknown(&self, action: &'static str, error: etcd_client::Error) -> StorageError {
        StorageError {
            backend: Backend::Etcd,
            action,
            path: self.path.clone(),
            kind: StorageErrorKind::Io,
            source: format!(
                "no answer came for the write ({error}): it may or may not have been \
                 applied. Retry the operation: a put writes the same value again, a \
                 registration is a no-op once it landed, and a shred's retry answers with \
                 the receipt of the erasure that landed"
            )
            .into(),
        }
    }

    /// The error of a request the fence refused: this node no longer owns
    /// the store.
    fn fenced(&self, action: &'static str) -> StorageError {
        StorageError {
            backend: Backend::Etcd,
            action,
            path: self.path.clone(),
            kind: StorageErrorKind::Fenced,
            source: "this node no longer owns the etcd store (its lease on the owner key \
                     lapsed while it was paused or cut off, or another node took the store \
                     over): nothing was read or written. Close the store and open it again \
                     to serve it"
                .into(),
        }
    }

    /// Runs `txn` guarded by this node's ownership; a refused guard is
    /// [`EtcdStorage::fenced`].
    fn guarded(
        &self,
        action: &'static str,
        resend: Resend,
        ops: Vec<TxnOp>,
    ) -> Result<TxnResponse, StorageError> {
        let txn = Txn::new().when([self.owner.fence()]).and_then(ops);
        let answer = self.request(action, resend, |client| {
            let mut kv = client.kv_client().max_decoding_message_size(ANSWER_LIMIT);
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        if answer.succeeded() {
            Ok(answer)
        } else {
            Err(self.fenced(action))
        }
    }

    /// A guarded range read: its answer and the revision it was read at.
    fn guarded_get(
        &self,
        action: &'static str,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<(GetResponse, i64), StorageError> {
        let answer = self.guarded(action, Resend::Read, vec![TxnOp::get(key, options)])?;
        let revision = answer.header().map_or(0, |h| h.revision());
        answer
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => Some((get, revision)),
                _ => None,
            })
            .ok_or_else(|| StorageError {
                backend: Backend::Etcd,
                action,
                path: self.path.clone(),
                kind: StorageErrorKind::Other,
                source: "the cluster answered a read without its range".into(),
            })
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
        F: Fn(&Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            let at = self.current.load(Ordering::Relaxed) % self.clients.len();
            match self.runtime.block_on(send(&self.clients[at])) {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    // The member did not answer: the next request, this
                    // one's resend included, goes to the next member.
                    if transient(&error) || never_sent(&error) {
                        let next = (at + 1) % self.clients.len();
                        let _ = self.current.compare_exchange(
                            at,
                            next,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    let send_again =
                        never_sent(&error) || (resend == Resend::Read && transient(&error));
                    if !send_again || Instant::now() + pause >= deadline {
                        if resend == Resend::Write && transient(&error) && !never_sent(&error) {
                            return Err(self.outcome_unknown(action, error));
                        }
                        return Err(self.fail(action)(error));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// The store's key layout in the cluster.
    fn keys(&self) -> Namespace<'_> {
        Namespace(&self.target.namespace)
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

/// Whether `error` is a cluster that cannot answer now (and may soon),
/// a member that did not answer within [`ATTEMPT_TIMEOUT`], or a
/// connection that broke while a request was in flight (the client reports
/// it as status `Unknown`, "transport error", with the I/O error as its
/// source: the wire test of `engine/tests/etcd_cluster.rs` cuts one).
fn transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            let code = i32::from(status.code());
            matches!(code, GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED)
                || (code == GRPC_CANCELLED && status.message() == "Timeout expired")
                || (code == GRPC_UNKNOWN
                    && status.message() == "transport error"
                    && std::error::Error::source(status).is_some())
        }
        _ => false,
    }
}

/// gRPC status codes (the gRPC specification's numbers) of a cluster that
/// cannot answer now: no leader, no quorum, a member down.
const GRPC_UNAVAILABLE: i32 = 14;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
/// What the client reports when a connection broke under a request.
const GRPC_UNKNOWN: i32 = 2;
/// What the client reports when an attempt's timeout expired.
const GRPC_CANCELLED: i32 = 1;
/// The code of etcd's "database space exceeded" (its quota is reached).
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;

/// The cluster's quota (`--quota-backend-bytes`), read from the metrics of
/// the member at `endpoint` (`etcd_server_quota_backend_bytes`): no gRPC
/// call reports it. `None` for a member that does not answer in time, and
/// for a TLS endpoint (this plain HTTP read does not speak TLS).
fn quota_of(endpoint: &str) -> Option<u64> {
    use std::io::{Read as _, Write as _};
    use std::net::ToSocketAddrs as _;
    let address = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    let socket = address.to_socket_addrs().ok()?.next()?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, ATTEMPT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(ATTEMPT_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(ATTEMPT_TIMEOUT)).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut metrics = String::new();
    stream.take(16 << 20).read_to_string(&mut metrics).ok()?;
    let value: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("etcd_server_quota_backend_bytes "))?
        .trim()
        .parse()
        .ok()?;
    // Prometheus prints the gauge as a float ("4.194304e+06").
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked: a whole number of bytes within u64"
    )]
    let bytes = value as u64;
    (0.0..1.8e19).contains(&value).then_some(bytes)
}

/// Whether a request failed because its answer was larger than the
/// client accepts ([`ANSWER_LIMIT`]).
fn answer_too_large(error: &StorageError) -> bool {
    error
        .source
        .downcast_ref::<etcd_client::Error>()
        .is_some_and(|e| {
            matches!(e, etcd_client::Error::GRpcStatus(status)
                if i32::from(status.code()) == GRPC_OUT_OF_RANGE
                    && status.message().contains("message length too large"))
        })
}

/// The gRPC status of an answer over the client's size limit.
const GRPC_OUT_OF_RANGE: i32 = 11;

impl Storage for EtcdStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let (response, _) = self.guarded_get("read", self.keys().full_key(tree, key), None)?;
        Ok(response.kvs().first().map(|entry| entry.value().to_vec()))
    }

    fn get_many(&self, tree: Tree, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        // One guarded transaction of range reads per chunk: a page of
        // lookups in one round trip instead of one each. A chunk stays within
        // --max-txn-ops, and within one answer even if every value is as
        // large as a write may make it.
        let per_answer = ANSWER_LIMIT / self.max_value_bytes().unwrap_or(ANSWER_LIMIT).max(1);
        let per_txn = self.target.max_txn_ops.min(per_answer).max(1);
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(per_txn) {
            let ops = chunk
                .iter()
                .map(|key| TxnOp::get(self.keys().full_key(tree, key), None))
                .collect();
            let answer = self.guarded("read", Resend::Read, ops)?;
            let before = out.len();
            for op in answer.op_responses() {
                if let TxnOpResponse::Get(found) = op {
                    out.push(found.kvs().first().map(|entry| entry.value().to_vec()));
                }
            }
            if out.len() - before != chunk.len() {
                return Err(StorageError {
                    backend: Backend::Etcd,
                    action: "read",
                    path: self.path.clone(),
                    kind: StorageErrorKind::Other,
                    source: format!(
                        "the cluster answered {} of {} reads of one transaction",
                        out.len() - before,
                        chunk.len()
                    )
                    .into(),
                });
            }
        }
        Ok(out)
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
        let sort = match order {
            Order::Ascending => SortOrder::Ascend,
            Order::Descending => SortOrder::Descend,
        };
        let mut revision = 0;
        let mut page = SCAN_PAGE;
        loop {
            if low >= high {
                return Ok(());
            }
            let mut options = GetOptions::new()
                .with_range(high.clone())
                .with_limit(page)
                .with_sort(SortTarget::Key, sort);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let (mut response, read_at) = match self.guarded_get("scan", low.clone(), Some(options))
            {
                Ok(read) => read,
                // Large values: the same page again, half as long.
                Err(error) if page > 1 && answer_too_large(&error) => {
                    page /= 2;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if revision == 0 {
                revision = read_at;
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
                    last.insert(self.keys().full_key(*tree, key), Some(value.as_slice()));
                }
                Op::Remove { tree, key } => {
                    last.insert(self.keys().full_key(*tree, key), None);
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
        self.guarded("write", Resend::Write, ops)?;
        Ok(())
    }

    fn has_insert_new(&self) -> bool {
        true
    }

    fn max_batch_ops(&self) -> Option<usize> {
        Some(self.target.max_txn_ops)
    }

    fn max_value_bytes(&self) -> Option<usize> {
        // Half a request: the rest of a chunk (at most --max-txn-ops small
        // operations) takes the other half.
        Some(self.target.max_request_bytes / 2)
    }

    fn insert_new(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
        _durability: Durability,
    ) -> Result<bool, StorageError> {
        // Both guards at the top level, not a nested transaction: etcd
        // 3.4 counts only a transaction's own puts against its quota, so a
        // put nested one level down would be let past a full cluster (the
        // full-cluster test caught it). On failure, the owner key read in
        // the other branch tells a fenced node from a key that exists.
        let key = self.keys().full_key(tree, key);
        let txn = Txn::new()
            .when([
                self.owner.fence(),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([self.owner.read()]);
        let action = "insert a new key";
        let answer = self.request(action, Resend::Write, |client| {
            let mut kv = client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        if answer.succeeded() {
            return Ok(true);
        }
        let owned = answer.op_responses().into_iter().any(|op| match op {
            TxnOpResponse::Get(found) => self.owner.still_held(&found),
            _ => false,
        });
        if owned {
            Ok(false)
        } else {
            Err(self.fenced(action))
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        // Acknowledged transactions are on a quorum's disks already.
        Ok(())
    }

    fn space(&self) -> Result<Space, StorageError> {
        // Every member's database: their sizes differ (each lays out its
        // own pages), and the member a write reaches refuses it once its
        // own database and the write pass the quota. The largest counts.
        let mut largest: Option<u64> = None;
        let mut failure = None;
        for client in &self.clients {
            let mut maintenance = client.maintenance_client();
            let status = self.runtime.block_on(async {
                tokio::time::timeout(ATTEMPT_TIMEOUT, maintenance.status()).await
            });
            match status {
                Ok(Ok(status)) => {
                    let size = u64::try_from(status.db_size()).unwrap_or(0);
                    largest = Some(largest.map_or(size, |l| l.max(size)));
                }
                Ok(Err(error)) => failure = Some(error),
                // A member that does not answer (down, paused): the others do.
                Err(_) => {}
            }
        }
        let size = match (largest, failure) {
            (Some(size), _) => size,
            (None, Some(error)) => return Err(self.fail("read the cluster's status")(error)),
            (None, None) => {
                return Err(StorageError {
                    backend: Backend::Etcd,
                    action: "read the cluster's status",
                    path: self.path.clone(),
                    kind: StorageErrorKind::Io,
                    source: format!("no member answered within {ATTEMPT_TIMEOUT:?}").into(),
                });
            }
        };
        // The quota is the same on every member; ask from the one in use on.
        let first = self.current.load(Ordering::Relaxed);
        let endpoints = &self.target.endpoints;
        let capacity =
            (0..endpoints.len()).find_map(|i| quota_of(&endpoints[(first + i) % endpoints.len()]));
        Ok(Space {
            size_on_disk: size,
            capacity,
            // etcd raises NOSPACE once a database outgrows the quota.
            headroom: capacity.map(|quota| quota.saturating_sub(size)),
        })
    }

    fn backend(&self) -> Backend {
        Backend::Etcd
    }
}

impl Drop for EtcdStorage {
    fn drop(&mut self) {
        // Hand the store over at once instead of after the lease.
        let at = self.current.load(Ordering::Relaxed) % self.clients.len();
        let release = self.owner.release(&self.clients[at]);
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(2), release).await });
    }
}
