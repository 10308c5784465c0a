//! An in-memory backend: the reference behaviour of the seam, used by unit
//! tests and as the base of fault-injecting wrappers. Not durable.

use crate::sync::{self, Mutex};
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use super::{Backend, Durability, Op, Order, Space, Storage, StorageError, Tree, WriteBatch};

type Trees = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Trees held in `BTreeMap`s behind one lock, so a batch is atomic. The
/// lock is one of `crate::sync`'s: under loom, the model sees every tree
/// access, so races through the stored state are explored too. A mutex,
/// not a read-write lock: loom's `RwLock` cannot model a writer that
/// readers overtake, and this backend serves tests, where reads in
/// parallel buy nothing.
#[derive(Debug)]
pub(crate) struct MemoryStorage {
    trees: Mutex<Trees>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self {
            trees: Mutex::new(Trees::new()),
        }
    }
}

impl MemoryStorage {
    /// An empty store.
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let trees = sync::lock(&self.trees);
        Ok(trees.get(&tree).and_then(|t| t.get(key)).cloned())
    }

    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        if super::range_is_empty(start, end) {
            return Ok(());
        }
        // Copy the range out and visit without the lock held, so `visit` may
        // call back into the store (as it may on sled and redb).
        // Copied out a page at a time, so the lock is not held while the
        // visitor runs and a prefix scan (whose end is unbounded) does not
        // copy the rest of the tree.
        const PAGE: usize = 64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page: Vec<(Vec<u8>, Vec<u8>)> = {
                let trees = sync::lock(&self.trees);
                let Some(map) = trees.get(&tree) else {
                    return Ok(());
                };
                match order {
                    Order::Ascending => {
                        let from = after.as_deref().map_or(start, Bound::Excluded);
                        if super::range_is_empty(from, end) {
                            return Ok(());
                        }
                        map.range::<[u8], _>((from, end))
                            .take(PAGE)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    }
                    Order::Descending => {
                        let to = after.as_deref().map_or(end, Bound::Excluded);
                        if super::range_is_empty(start, to) {
                            return Ok(());
                        }
                        map.range::<[u8], _>((start, to))
                            .rev()
                            .take(PAGE)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    }
                }
            };
            for (k, v) in &page {
                if visit(k, v).is_break() {
                    return Ok(());
                }
            }
            if page.len() < PAGE {
                return Ok(());
            }
            after = page.last().map(|(k, _)| k.clone());
        }
    }

    fn apply(&self, batch: &WriteBatch, _durability: Durability) -> Result<(), StorageError> {
        let mut trees = sync::lock(&self.trees);
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } => {
                    trees
                        .entry(*tree)
                        .or_default()
                        .insert(key.to_vec(), value.clone());
                }
                Op::Remove { tree, key } => {
                    if let Some(map) = trees.get_mut(tree) {
                        map.remove(key.as_slice());
                    }
                }
            }
        }
        Ok(())
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
        let mut trees = sync::lock(&self.trees);
        let map = trees.entry(tree).or_default();
        if map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_vec(), value.to_vec());
        Ok(true)
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn space(&self) -> Result<Space, StorageError> {
        Ok(Space::default())
    }

    fn backend(&self) -> Backend {
        Backend::Sled
    }
}
