//! Fault injection for tests: a [`Storage`] and a [`KeyProvider`] wrapper
//! that fail on command.
//!
//! [`FaultyStorage`] wraps any backend. It can fail the n-th write (any
//! `apply`), the n-th durable `apply`, or the n-th `flush` (a countdown that
//! fires once), and it can simulate a full disk: every `apply` and `flush`
//! fails with an I/O error of kind [`io::ErrorKind::StorageFull`] until the
//! disk is "freed". A failed apply either leaves nothing behind
//! ([`ApplyFailure::NothingApplied`]: the write never happened) or leaves the
//! batch applied but unsynced ([`ApplyFailure::AppliedNotSynced`]: what sled
//! does when its log write succeeds and the fsync fails), so callers must
//! treat a failed write as "maybe applied".
//!
//! [`FaultyProvider`] wraps any key provider. It can be made unavailable
//! (every call fails with [`ProviderError::Unavailable`]) or fail the n-th
//! call of one kind, e.g. the first `wrap` after a `create_epoch`, which
//! interrupts an epoch rotation half-way.
//!
//! Both stop at pause points a test arms (`storage::pauses`), and so does
//! the scope gate of a store opened with faults.
//!
//! Both share one [`FaultControl`], handed to tests through
//! `shredkv::internal::open_with_faults`; it also counts what went through,
//! so a test can first run a workload clean, then inject a fault at every
//! n up to the count.

use std::fmt;
use std::io;
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use shredkv_crypto::{DataKey, EpochId, KeyProvider, ProviderError, WrapContext, WrappedKey};

use super::pauses::{Pause, PausePoint, Pauses};
use super::{
    Backend, Durability, Op, Order, Space, Storage, StorageError, StorageErrorKind, Tree,
    WriteBatch,
};

/// Which calls a storage countdown counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Every `apply`, buffered or durable.
    Write,
    /// Only `apply` calls that must be durable before they return.
    DurableApply,
    /// Every `flush` (explicit, background or at close).
    Flush,
}

/// What a failed `apply` leaves in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplyFailure {
    /// Nothing: the batch never reached the backend.
    NothingApplied,
    /// The batch is applied (buffered, visible to reads) but the call fails
    /// as if the sync had: the caller cannot tell whether it landed.
    AppliedNotSynced,
}

/// The calls of a key provider, for provider countdowns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderCall {
    /// `create_epoch`.
    CreateEpoch,
    /// `live_epochs`.
    LiveEpochs,
    /// `wrap`.
    Wrap,
    /// `unwrap`.
    Unwrap,
    /// `destroy_epoch`.
    DestroyEpoch,
    /// `advance_anchor`.
    AdvanceAnchor,
}

impl ProviderCall {
    fn action(self) -> &'static str {
        match self {
            ProviderCall::CreateEpoch => "create an epoch",
            ProviderCall::LiveEpochs => "list live epochs",
            ProviderCall::Wrap => "wrap a key",
            ProviderCall::Unwrap => "unwrap a key",
            ProviderCall::DestroyEpoch => "destroy an epoch",
            ProviderCall::AdvanceAnchor => "advance the anchor",
        }
    }
}

/// A storage countdown: fail the `remaining`-th matching call, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StorageCountdown {
    point: FaultPoint,
    remaining: u64,
    failure: ApplyFailure,
}

/// A provider countdown: fail the `remaining`-th call of `call`, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProviderCountdown {
    call: ProviderCall,
    remaining: u64,
}

/// Faults to arm before a store is opened (so faults can hit the open too).
/// Built with chained setters; [`FaultPlan::default`] arms nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    storage: Option<StorageCountdown>,
    disk_full: bool,
    provider_unavailable: bool,
    provider: Option<ProviderCountdown>,
    batch_limit: Option<usize>,
    request_limit: Option<usize>,
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Fail the `n`-th call (1 = the next) counted by `point`, once.
    pub fn fail_nth(mut self, point: FaultPoint, n: u64, failure: ApplyFailure) -> Self {
        self.storage = Some(StorageCountdown {
            point,
            remaining: n.max(1),
            failure,
        });
        self
    }

    /// Refuse, whole, every batch of more than `ops` ops, and report that
    /// limit to the engine: a local store behaving as an etcd cluster with
    /// `--max-txn-ops ops` does, so chunked erasures run on any backend.
    pub fn batch_limit(mut self, ops: usize) -> Self {
        self.batch_limit = Some(ops);
        self
    }

    /// Refuse, whole, every batch whose keys and values add up to more than
    /// `bytes`, and report half of it as the largest value the engine may
    /// write: a local store behaving as an etcd cluster with
    /// `--max-request-bytes bytes` does (the store's `max_request_bytes`).
    pub fn request_limit(mut self, bytes: usize) -> Self {
        self.request_limit = Some(bytes);
        self
    }

    /// Start with a full disk.
    pub fn disk_full(mut self) -> Self {
        self.disk_full = true;
        self
    }

    /// Start with the key provider unavailable.
    pub fn provider_unavailable(mut self) -> Self {
        self.provider_unavailable = true;
        self
    }

    /// Fail the `n`-th (1 = the next) provider call of kind `call`, once.
    pub fn fail_provider_nth(mut self, call: ProviderCall, n: u64) -> Self {
        self.provider = Some(ProviderCountdown {
            call,
            remaining: n.max(1),
        });
        self
    }
}

/// What went through the fault layer since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// `apply` calls (buffered and durable).
    pub writes: u64,
    /// `apply` calls with durable semantics.
    pub durable_applies: u64,
    /// `flush` calls.
    pub flushes: u64,
    /// Changes (puts and removals) in the batches that reached `apply`.
    pub ops_written: u64,
    /// `get` calls.
    pub reads: u64,
    /// Entries visited by scans.
    pub entries_scanned: u64,
    /// Key provider calls of any kind.
    pub provider_calls: u64,
    /// Faults injected (a full disk or unavailable provider counts every failed call).
    pub injected: u64,
}

impl FaultCounts {
    /// What went through since `earlier`, a reading of the same store.
    pub fn since(self, earlier: FaultCounts) -> FaultCounts {
        FaultCounts {
            writes: self.writes - earlier.writes,
            durable_applies: self.durable_applies - earlier.durable_applies,
            flushes: self.flushes - earlier.flushes,
            ops_written: self.ops_written - earlier.ops_written,
            reads: self.reads - earlier.reads,
            entries_scanned: self.entries_scanned - earlier.entries_scanned,
            provider_calls: self.provider_calls - earlier.provider_calls,
            injected: self.injected - earlier.injected,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    plan: FaultPlan,
    counts: FaultCounts,
}

/// Shared, lock-protected fault state, and the store's pause points.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    state: Mutex<State>,
    pauses: Arc<Pauses>,
}

impl Faults {
    /// The store's pause points (the gate stops at them too).
    pub(crate) fn pauses(&self) -> Arc<Pauses> {
        Arc::clone(&self.pauses)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call at `point` (and at `Write` for a durable apply) and
    /// returns the failure to inject, if any.
    fn storage_call(&self, durable_apply: bool, flush: bool) -> Option<Injected> {
        let mut state = self.lock();
        if flush {
            state.counts.flushes += 1;
        } else {
            state.counts.writes += 1;
            if durable_apply {
                state.counts.durable_applies += 1;
            }
        }
        if state.plan.disk_full {
            state.counts.injected += 1;
            return Some(Injected::DiskFull);
        }
        let countdown = state.plan.storage.as_mut()?;
        let counted = match countdown.point {
            FaultPoint::Write => !flush,
            FaultPoint::DurableApply => durable_apply,
            FaultPoint::Flush => flush,
        };
        if !counted {
            return None;
        }
        countdown.remaining -= 1;
        if countdown.remaining > 0 {
            return None;
        }
        let failure = countdown.failure;
        state.plan.storage = None;
        state.counts.injected += 1;
        Some(Injected::Countdown(failure))
    }

    /// Counts a provider call and returns whether to fail it.
    fn provider_call(&self, call: ProviderCall) -> bool {
        let mut state = self.lock();
        state.counts.provider_calls += 1;
        if state.plan.provider_unavailable {
            state.counts.injected += 1;
            return true;
        }
        let Some(countdown) = state.plan.provider.as_mut() else {
            return false;
        };
        if countdown.call != call {
            return false;
        }
        countdown.remaining -= 1;
        if countdown.remaining > 0 {
            return false;
        }
        state.plan.provider = None;
        state.counts.injected += 1;
        true
    }
}

/// A fault to inject into one storage call.
#[derive(Debug, Clone, Copy)]
enum Injected {
    DiskFull,
    Countdown(ApplyFailure),
}

/// Arms, clears and counts the faults of one store (see the module docs).
/// Cloning shares the same faults.
#[derive(Clone, Default)]
pub struct FaultControl {
    faults: Arc<Faults>,
}

impl fmt::Debug for FaultControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.faults.lock();
        f.debug_struct("FaultControl")
            .field("plan", &state.plan)
            .field("counts", &state.counts)
            .finish()
    }
}

impl FaultControl {
    /// A control with `plan` armed.
    pub fn new(plan: FaultPlan) -> Self {
        let control = Self::default();
        control.faults.lock().plan = plan;
        control
    }

    /// Fail the `n`-th call (1 = the next) counted by `point`, once,
    /// replacing any armed storage countdown.
    pub fn fail_nth(&self, point: FaultPoint, n: u64, failure: ApplyFailure) {
        let mut state = self.faults.lock();
        state.plan = state.plan.clone().fail_nth(point, n, failure);
    }

    /// Fills (`true`) or frees (`false`) the simulated disk.
    pub fn set_disk_full(&self, full: bool) {
        self.faults.lock().plan.disk_full = full;
    }

    /// Makes the key provider unavailable (`true`) or reachable again.
    pub fn set_provider_unavailable(&self, unavailable: bool) {
        self.faults.lock().plan.provider_unavailable = unavailable;
    }

    /// Fail the `n`-th (1 = the next) provider call of kind `call`, once,
    /// replacing any armed provider countdown.
    pub fn fail_provider_nth(&self, call: ProviderCall, n: u64) {
        let mut state = self.faults.lock();
        state.plan = state.plan.clone().fail_provider_nth(call, n);
    }

    /// Disarms every fault (counts, a batch limit and a request limit are
    /// kept).
    pub fn clear(&self) {
        let mut state = self.faults.lock();
        state.plan = FaultPlan {
            batch_limit: state.plan.batch_limit,
            request_limit: state.plan.request_limit,
            ..FaultPlan::none()
        };
    }

    /// Whether a countdown is still armed (it has not fired yet).
    pub fn armed(&self) -> bool {
        let state = self.faults.lock();
        state.plan.storage.is_some() || state.plan.provider.is_some()
    }

    /// What went through so far.
    pub fn counts(&self) -> FaultCounts {
        self.faults.lock().counts
    }

    /// Arms `point` once: the first thread of this store to reach it stops
    /// there, runs `on_arrival`, and waits until the returned [`Pause`] is
    /// resumed or dropped (see `storage::pauses`).
    pub fn pause_at(
        &self,
        point: PausePoint,
        on_arrival: impl Fn() + Send + Sync + 'static,
    ) -> Pause {
        self.faults.pauses.arm(point, Box::new(on_arrival))
    }

    pub(crate) fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.faults)
    }
}

/// A backend that fails on command (see the module docs).
pub(crate) struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Arc<Faults>,
    /// Where the store lives, for error messages.
    path: PathBuf,
}

impl FaultyStorage {
    /// Wraps `inner`; `path` names the store in error messages.
    pub(crate) fn new(inner: Arc<dyn Storage>, faults: Arc<Faults>, path: PathBuf) -> Self {
        Self {
            inner,
            faults,
            path,
        }
    }

    fn error(&self, action: &'static str, kind: io::ErrorKind, what: &str) -> StorageError {
        let source = io::Error::new(kind, format!("injected fault: {what}"));
        StorageError {
            backend: self.inner.backend(),
            action,
            path: self.path.clone(),
            kind: StorageErrorKind::of_io(&source),
            source: Box::new(source),
        }
    }

    /// Runs one write (`write`, given the durability to write with) as a
    /// backend call that the plan may fail: a full disk or a countdown's
    /// failure, before the write or after it was applied but not synced.
    fn write_with_faults<T>(
        &self,
        durability: Durability,
        write: impl FnOnce(Durability) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let durable = durability == Durability::Durable;
        match self.faults.storage_call(durable, false) {
            None => write(durability),
            Some(Injected::DiskFull) => Err(self.error(
                "write",
                io::ErrorKind::StorageFull,
                "no space left on device",
            )),
            Some(Injected::Countdown(ApplyFailure::NothingApplied)) => Err(self.error(
                "write",
                io::ErrorKind::Other,
                "the write failed before reaching the backend",
            )),
            Some(Injected::Countdown(ApplyFailure::AppliedNotSynced)) => {
                write(Durability::Buffered)?;
                Err(self.error(
                    "write",
                    io::ErrorKind::Other,
                    "the batch was applied but syncing it failed",
                ))
            }
        }
    }
}

impl Storage for FaultyStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.faults.lock().counts.reads += 1;
        self.inner.get(tree, key)
    }

    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let mut visited = 0u64;
        let result = self.inner.scan(tree, start, end, order, &mut |k, v| {
            visited += 1;
            visit(k, v)
        });
        self.faults.lock().counts.entries_scanned += visited;
        result
    }

    fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StorageError> {
        if let Some(limit) = self.faults.lock().plan.batch_limit
            && batch.ops.len() > limit
        {
            return Err(self.error(
                "write",
                io::ErrorKind::InvalidInput,
                &format!(
                    "a batch of {} ops is over the limit of {limit}; nothing was written",
                    batch.ops.len()
                ),
            ));
        }
        if let Some(limit) = self.faults.lock().plan.request_limit {
            let bytes: usize = batch
                .ops
                .iter()
                .map(|op| match op {
                    Op::Put { key, value, .. } => key.len() + value.len(),
                    Op::Remove { key, .. } => key.len(),
                })
                .sum();
            if bytes > limit {
                return Err(self.error(
                    "write",
                    io::ErrorKind::InvalidInput,
                    &format!(
                        "a batch of {bytes} bytes is over the request limit of {limit}; \
                         nothing was written"
                    ),
                ));
            }
        }
        self.faults.pauses.reached(PausePoint::StorageApply);
        self.faults.lock().counts.ops_written += batch.ops.len() as u64;
        self.write_with_faults(durability, |d| self.inner.apply(batch, d))
    }

    fn has_insert_new(&self) -> bool {
        self.inner.has_insert_new()
    }

    fn max_value_bytes(&self) -> Option<usize> {
        match (
            self.faults.lock().plan.request_limit.map(|bytes| bytes / 2),
            self.inner.max_value_bytes(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn max_batch_ops(&self) -> Option<usize> {
        match (
            self.faults.lock().plan.batch_limit,
            self.inner.max_batch_ops(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn insert_new(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<bool, StorageError> {
        self.faults.lock().counts.ops_written += 1;
        self.write_with_faults(durability, |d| self.inner.insert_new(tree, key, value, d))
    }

    fn flush(&self) -> Result<(), StorageError> {
        match self.faults.storage_call(false, true) {
            None => self.inner.flush(),
            Some(Injected::DiskFull) => Err(self.error(
                "flush",
                io::ErrorKind::StorageFull,
                "no space left on device",
            )),
            Some(Injected::Countdown(_)) => {
                Err(self.error("flush", io::ErrorKind::Other, "the sync failed"))
            }
        }
    }

    fn space(&self) -> Result<Space, StorageError> {
        self.inner.space()
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }
}

/// A key provider that fails on command (see the module docs).
pub(crate) struct FaultyProvider {
    inner: Arc<dyn KeyProvider>,
    faults: Arc<Faults>,
}

impl fmt::Debug for FaultyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyProvider")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl FaultyProvider {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn KeyProvider>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }

    fn check(&self, call: ProviderCall) -> Result<(), ProviderError> {
        if self.faults.provider_call(call) {
            return Err(ProviderError::Unavailable {
                action: call.action(),
                location: PathBuf::from("<fault-injecting key provider>"),
                source: io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "injected fault: the key provider is unreachable",
                ),
            });
        }
        Ok(())
    }
}

impl KeyProvider for FaultyProvider {
    fn create_epoch(&self) -> Result<EpochId, ProviderError> {
        self.check(ProviderCall::CreateEpoch)?;
        self.inner.create_epoch()
    }

    fn live_epochs(&self) -> Result<Vec<EpochId>, ProviderError> {
        self.check(ProviderCall::LiveEpochs)?;
        self.inner.live_epochs()
    }

    fn wrap(
        &self,
        epoch: EpochId,
        context: &WrapContext,
        key: &DataKey,
    ) -> Result<WrappedKey, ProviderError> {
        self.check(ProviderCall::Wrap)?;
        self.inner.wrap(epoch, context, key)
    }

    fn unwrap(
        &self,
        context: &WrapContext,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, ProviderError> {
        self.faults.pauses.reached(PausePoint::ProviderUnwrap);
        self.check(ProviderCall::Unwrap)?;
        self.inner.unwrap(context, wrapped)
    }

    fn destroy_epoch(&self, epoch: EpochId) -> Result<(), ProviderError> {
        self.check(ProviderCall::DestroyEpoch)?;
        self.inner.destroy_epoch(epoch)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn keeps_anchor(&self) -> bool {
        self.inner.keeps_anchor()
    }

    fn anchor(&self) -> Result<Option<shredkv_crypto::Anchor>, ProviderError> {
        self.inner.anchor()
    }

    fn advance_anchor(&self, anchor: &shredkv_crypto::Anchor) -> Result<(), ProviderError> {
        self.check(ProviderCall::AdvanceAnchor)?;
        self.inner.advance_anchor(anchor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn store(plan: FaultPlan) -> (FaultyStorage, FaultControl, Arc<MemoryStorage>) {
        let memory = Arc::new(MemoryStorage::new());
        let control = FaultControl::new(plan);
        let inner: Arc<dyn Storage> = Arc::clone(&memory) as Arc<dyn Storage>;
        let storage = FaultyStorage::new(inner, control.faults(), PathBuf::from("mem"));
        (storage, control, memory)
    }

    fn batch(key: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(Tree::Data, key, b"v");
        batch
    }

    fn io_kind(err: &StorageError) -> Option<io::ErrorKind> {
        err.source.downcast_ref::<io::Error>().map(io::Error::kind)
    }

    #[test]
    fn countdown_fails_the_nth_write_once() {
        let (storage, control, memory) =
            store(FaultPlan::none().fail_nth(FaultPoint::Write, 3, ApplyFailure::NothingApplied));
        storage
            .apply(&batch(b"1"), Durability::Buffered)
            .expect("first");
        storage
            .apply(&batch(b"2"), Durability::Durable)
            .expect("second");
        let err = storage
            .apply(&batch(b"3"), Durability::Buffered)
            .expect_err("third fails");
        assert_eq!(err.kind, StorageErrorKind::Io);
        assert_eq!(memory.get(Tree::Data, b"3").expect("get"), None);
        storage
            .apply(&batch(b"4"), Durability::Buffered)
            .expect("fires once");
        let counts = control.counts();
        assert_eq!((counts.writes, counts.durable_applies), (4, 1));
        assert_eq!(counts.injected, 1);
        assert!(!control.armed());
    }

    #[test]
    fn applied_not_synced_leaves_the_batch_applied() {
        let (storage, _, memory) = store(FaultPlan::none().fail_nth(
            FaultPoint::DurableApply,
            2,
            ApplyFailure::AppliedNotSynced,
        ));
        storage
            .apply(&batch(b"a"), Durability::Buffered)
            .expect("buffered ones are not counted");
        storage
            .apply(&batch(b"b"), Durability::Durable)
            .expect("first durable");
        storage
            .apply(&batch(b"c"), Durability::Durable)
            .expect_err("second durable fails");
        assert_eq!(
            memory.get(Tree::Data, b"c").expect("get"),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn full_disk_fails_every_write_and_flush_until_freed() {
        let (storage, control, memory) = store(FaultPlan::none().disk_full());
        for key in [&b"x"[..], b"y"] {
            let err = storage
                .apply(&batch(key), Durability::Durable)
                .expect_err("disk full");
            assert_eq!(io_kind(&err), Some(io::ErrorKind::StorageFull));
        }
        let err = storage.flush().expect_err("flush fails too");
        assert_eq!(io_kind(&err), Some(io::ErrorKind::StorageFull));
        assert_eq!(memory.get(Tree::Data, b"x").expect("get"), None);
        control.set_disk_full(false);
        storage
            .apply(&batch(b"x"), Durability::Durable)
            .expect("freed");
        storage.flush().expect("flush");
        assert_eq!(control.counts().injected, 3);
    }

    #[test]
    fn flush_countdown_counts_only_flushes() {
        let (storage, _, _) =
            store(FaultPlan::none().fail_nth(FaultPoint::Flush, 2, ApplyFailure::NothingApplied));
        storage.flush().expect("first flush");
        storage
            .apply(&batch(b"a"), Durability::Durable)
            .expect("writes are not counted");
        storage.flush().expect_err("second flush fails");
        storage.flush().expect("once");
    }

    #[test]
    fn provider_unavailable_and_countdowns() {
        let dir = tempfile::tempdir().expect("dir");
        let file: Arc<dyn KeyProvider> = Arc::new(
            shredkv_crypto::FileKeyProvider::open_or_create(dir.path().join("keys"))
                .expect("key file"),
        );
        let control = FaultControl::new(FaultPlan::none().fail_provider_nth(ProviderCall::Wrap, 2));
        let provider = FaultyProvider::new(file, control.faults());
        let epoch = provider.create_epoch().expect("create");
        let key = DataKey::generate();
        let wrapped = provider
            .wrap(epoch, &WrapContext::StoreSecret, &key)
            .expect("first wrap");
        let err = provider
            .wrap(epoch, &WrapContext::StoreSecret, &key)
            .expect_err("second wrap fails");
        assert!(matches!(err, ProviderError::Unavailable { .. }), "{err}");
        control.set_provider_unavailable(true);
        for result in [
            provider.live_epochs().map(drop),
            provider
                .unwrap(&WrapContext::StoreSecret, &wrapped)
                .map(drop),
            provider.destroy_epoch(epoch),
        ] {
            assert!(
                matches!(result, Err(ProviderError::Unavailable { .. })),
                "{result:?}"
            );
        }
        control.clear();
        provider
            .unwrap(&WrapContext::StoreSecret, &wrapped)
            .expect("reachable again");
        assert_eq!(control.counts().injected, 4);
    }
}
