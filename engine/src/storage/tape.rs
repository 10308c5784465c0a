//! A recording storage wrapper for forensic tests: every key and value the
//! engine ever hands to the backend lands on a [`Tape`], also those a later
//! write overwrites or removes, so a test can ask what an attacker holding
//! every old page, log segment and backup could still decrypt (G2).
//!
//! The tape keeps each distinct (tree, key, value) once; it counts every
//! byte it was handed. Tests add bytes written elsewhere (backups read from
//! disk) with [`Tape::record`].

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Backend, Durability, Op, Order, Space, Storage, StorageError, Tree, WriteBatch};

/// One distinct write on a [`Tape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeEntry {
    /// The tree's name as on disk (`data`, `vault`, `meta`, ...).
    pub tree: String,
    /// The tree key.
    pub key: Vec<u8>,
    /// The value written.
    pub value: Vec<u8>,
}

#[derive(Default)]
struct TapeState {
    /// Entries not yet taken by [`Tape::take`].
    entries: Vec<TapeEntry>,
    seen: HashSet<u64>,
    bytes: u64,
    writes: u64,
}

/// Every (tree, key, value) ever written through a store opened with
/// `internal::open_with_tape`, or
/// recorded by hand, in order of first appearance; a reader takes what is
/// new with [`Tape::take`] (so the tape itself does not grow with the
/// history). Clones share the tape.
#[derive(Clone, Default)]
pub struct Tape {
    state: Arc<Mutex<TapeState>>,
}

impl fmt::Debug for Tape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Tape")
            .field("distinct", &state.seen.len())
            .field("bytes", &state.bytes)
            .finish()
    }
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, TapeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one write of `value` under `key` in tree `tree`.
    pub fn record(&self, tree: &str, key: &[u8], value: &[u8]) {
        let mut hasher = DefaultHasher::new();
        (tree, key, value).hash(&mut hasher);
        let digest = hasher.finish();
        let mut state = self.lock();
        state.writes += 1;
        state.bytes += (key.len() + value.len()) as u64;
        if state.seen.insert(digest) {
            state.entries.push(TapeEntry {
                tree: tree.to_string(),
                key: key.to_vec(),
                value: value.to_vec(),
            });
        }
    }

    /// Distinct entries recorded so far (taken or not).
    pub fn distinct(&self) -> usize {
        self.lock().seen.len()
    }

    /// The distinct entries recorded since the last call, oldest first.
    pub fn take(&self) -> Vec<TapeEntry> {
        std::mem::take(&mut self.lock().entries)
    }

    /// Bytes (keys and values) handed to the tape in all, duplicates included.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Writes handed to the tape in all, duplicates included.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }
}

/// A backend that records every write on a [`Tape`] before passing it on.
pub(crate) struct TapeStorage {
    inner: Arc<dyn Storage>,
    tape: Tape,
}

impl TapeStorage {
    /// Wraps `inner`, recording onto `tape`.
    pub(crate) fn new(inner: Arc<dyn Storage>, tape: Tape) -> Self {
        Self { inner, tape }
    }
}

impl Storage for TapeStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
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
        self.inner.scan(tree, start, end, order, visit)
    }

    fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StorageError> {
        // Recorded before the write: a failed write may still reach the disk.
        for op in &batch.ops {
            if let Op::Put { tree, key, value } = op {
                self.tape.record(tree.name(), key, value);
            }
        }
        self.inner.apply(batch, durability)
    }

    fn has_insert_new(&self) -> bool {
        self.inner.has_insert_new()
    }

    fn max_batch_ops(&self) -> Option<usize> {
        self.inner.max_batch_ops()
    }

    fn max_value_bytes(&self) -> Option<usize> {
        self.inner.max_value_bytes()
    }

    fn insert_new(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<bool, StorageError> {
        self.tape.record(tree.name(), key, value);
        self.inner.insert_new(tree, key, value, durability)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }

    fn space(&self) -> Result<Space, StorageError> {
        self.inner.space()
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[test]
    fn tape_keeps_overwritten_values_once_each() {
        let tape = Tape::new();
        let storage = TapeStorage::new(Arc::new(MemoryStorage::new()), tape.clone());
        for value in [&b"v1"[..], b"v2", b"v1"] {
            let mut batch = WriteBatch::new();
            batch.put(Tree::Data, b"k", value.to_vec());
            batch.remove(Tree::Vault, b"x");
            storage.apply(&batch, Durability::Buffered).expect("apply");
        }
        assert!(
            storage
                .insert_new(Tree::Vault, b"n", b"w", Durability::Buffered)
                .expect("insert")
        );
        let entries = tape.take();
        let seen: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|e| (e.tree.as_str(), e.value.as_slice()))
            .collect();
        assert_eq!(
            seen,
            vec![("data", &b"v1"[..]), ("data", b"v2"), ("vault", b"w")]
        );
        assert_eq!((tape.writes(), tape.bytes()), (4, 3 * 3 + 2));
        assert_eq!(tape.distinct(), 3);
        assert!(tape.take().is_empty(), "taken once");
        tape.record("data", b"k", b"v1");
        assert!(
            tape.take().is_empty(),
            "a value seen before is not recorded again"
        );
    }
}
