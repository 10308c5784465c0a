//! The scope gate: the one lock protocol between reads, writes and erasure.
//!
//! Every read or write of a subject holds its stripe's read lock from the
//! state check until its storage write is applied. Erasure holds the write
//! locks of every subject it erases (an account and its end users) while it
//! destroys keys, records the erasure and evicts cached keys. So:
//!
//! - an operation that began before an erasure finishes before it (and its
//!   keys are then destroyed by it);
//! - an operation that begins after the erasure returned sees the subject
//!   erased and fails; it cannot create a fresh key for an erased scope,
//!   because key creation happens under the read lock after the state check.
//!
//! Stripes bound memory: subjects hash onto a fixed number of locks, so two
//! subjects may share one (erasing one briefly blocks the other).
//!
//! Writers of one record are serialised by [`RecordLocks`], taken after the
//! gate's read lock: a write reads the value it replaces and writes the new
//! one in a single batch with the re-key debt the old one owes, and two
//! writers between those steps would each miss the other's value. Order:
//! gate stripes, then record stripes, then the vault's and caches' own
//! short-lived locks; nothing takes them the other way round.

use std::hash::{Hash, Hasher};
#[cfg(not(feature = "loom"))]
use std::sync::TryLockError;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use shredkv_crypto::SubjectTag;

use crate::storage::pauses::{PausePoint, Pauses};
use crate::sync::{self, AtomicU64, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Striped read-write locks keyed by subject tag.
#[derive(Debug)]
pub struct ScopeGate {
    stripes: Vec<RwLock<()>>,
    /// Per stripe, how many times it was taken exclusively: a reader that
    /// noted the count under its read lock knows, by reading it again,
    /// whether an erasure or a state change of its subjects may have run
    /// since, without taking the lock ([`ScopeGate::changes`]).
    changes: Vec<AtomicU64>,
    /// Pause points of a fault-injected store (tests only).
    pauses: OnceLock<Arc<Pauses>>,
}

/// Held while reading or writing one subject.
#[derive(Debug)]
pub struct ReadGuard<'a> {
    _guards: Vec<RwLockReadGuard<'a, ()>>,
}

/// Held while erasing subjects.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    _guards: Vec<RwLockWriteGuard<'a, ()>>,
}

impl ScopeGate {
    /// A gate with `stripes` locks (at least one).
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| RwLock::new(())).collect(),
            changes: (0..stripes.max(1)).map(|_| AtomicU64::new(0)).collect(),
            pauses: OnceLock::new(),
        }
    }

    /// The stripe `tag` hashes onto.
    pub fn stripe_of(&self, tag: &SubjectTag) -> usize {
        let mut index = [0u8; 8];
        index.copy_from_slice(&tag.0[..8]);
        let n = u64::try_from(self.stripes.len()).unwrap_or(1);
        usize::try_from(u64::from_be_bytes(index) % n).unwrap_or(0)
    }

    fn stripes_of(&self, tags: &[SubjectTag]) -> Vec<usize> {
        // Sorted and deduplicated: every caller takes locks in the same order,
        // so two multi-subject holders cannot deadlock.
        let mut indices: Vec<usize> = tags.iter().map(|t| self.stripe_of(t)).collect();
        indices.sort_unstable();
        indices.dedup();
        indices
    }

    /// Shared access to the given subjects (for reads and writes, also a
    /// batch touching several subjects).
    pub fn read(&self, tags: &[SubjectTag]) -> ReadGuard<'_> {
        let guards = self
            .stripes_of(tags)
            .into_iter()
            .filter_map(|i| self.stripes.get(i))
            .map(sync::read)
            .collect();
        ReadGuard { _guards: guards }
    }

    /// How many times `tag`'s stripe has been taken exclusively. Noted
    /// under the read lock, it tells a reader later whether anything that
    /// needs the write lock (an erasure, a state change) ran since.
    pub fn changes(&self, tag: &SubjectTag) -> u64 {
        self.changes
            .get(self.stripe_of(tag))
            .map_or(0, |count| count.load(Ordering::SeqCst))
    }

    /// Counts an exclusive hold of stripe `index` (called holding it).
    fn count_change(&self, index: usize) {
        if let Some(count) = self.changes.get(index) {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Exclusive access to every subject (for a consistent backup).
    pub fn write_all(&self) -> WriteGuard<'_> {
        let guards = self.stripes.iter().map(sync::write).collect();
        (0..self.stripes.len()).for_each(|i| self.count_change(i));
        WriteGuard { _guards: guards }
    }

    /// Exclusive access to the given subjects (for erasure and state changes).
    pub fn write(&self, tags: &[SubjectTag]) -> WriteGuard<'_> {
        let pauses = self.pauses.get();
        if let Some(pauses) = pauses {
            pauses.reached(PausePoint::GateWrite);
        }
        let indices = self.stripes_of(tags);
        let guards = indices
            .iter()
            .filter_map(|&i| self.stripes.get(i))
            .map(|stripe| match pauses {
                Some(pauses) => Self::write_observed(stripe, pauses),
                None => sync::write(stripe),
            })
            .collect();
        indices.into_iter().for_each(|i| self.count_change(i));
        WriteGuard { _guards: guards }
    }

    /// Stops at the pause points of a fault-injected store from now on.
    pub(crate) fn attach_pauses(&self, pauses: Arc<Pauses>) {
        let _ = self.pauses.set(pauses);
    }

    /// A stripe's write lock, stopping at [`PausePoint::GateWriteContended`]
    /// first if another thread holds it.
    #[cfg(not(feature = "loom"))]
    fn write_observed<'a>(stripe: &'a RwLock<()>, pauses: &Pauses) -> RwLockWriteGuard<'a, ()> {
        if pauses.is_armed(PausePoint::GateWriteContended) {
            match stripe.try_write() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => pauses.reached(PausePoint::GateWriteContended),
            }
        }
        sync::write(stripe)
    }

    #[cfg(feature = "loom")]
    fn write_observed<'a>(stripe: &'a RwLock<()>, _: &Pauses) -> RwLockWriteGuard<'a, ()> {
        sync::write(stripe)
    }
}

/// Striped mutexes keyed by record (subject, class, record key): held by a
/// write from reading what it replaces until its batch is applied.
#[derive(Debug)]
pub(crate) struct RecordLocks {
    stripes: Vec<Mutex<()>>,
}

/// Held while writing records.
#[derive(Debug)]
pub(crate) struct RecordGuard<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

impl RecordLocks {
    /// `stripes` locks (at least one).
    pub(crate) fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    fn stripe_of(&self, subject: &SubjectTag, class: u16, key: &[u8]) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        subject.0.hash(&mut hasher);
        class.hash(&mut hasher);
        key.hash(&mut hasher);
        let n = u64::try_from(self.stripes.len()).unwrap_or(1);
        usize::try_from(hasher.finish() % n).unwrap_or(0)
    }

    /// Exclusive access to the given records, locked in stripe order so two
    /// writers of several records cannot deadlock.
    pub(crate) fn lock<'k>(
        &self,
        records: impl IntoIterator<Item = (&'k SubjectTag, u16, &'k [u8])>,
    ) -> RecordGuard<'_> {
        let mut indices: Vec<usize> = records
            .into_iter()
            .map(|(subject, class, key)| self.stripe_of(subject, class, key))
            .collect();
        indices.sort_unstable();
        indices.dedup();
        RecordGuard {
            _guards: indices
                .into_iter()
                .filter_map(|i| self.stripes.get(i))
                .map(sync::lock)
                .collect(),
        }
    }
}
