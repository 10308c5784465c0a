//! The key layout of a store kept in a cluster (etcd, TiKV): the entry of
//! tree `t` under key `k` is the cluster key `namespace ‖ t's name ‖ 0x00 ‖
//! k`, so one store is one key range of the cluster and each tree one
//! sub-range (tree names hold no zero byte).

use std::ops::Bound;
use std::path::PathBuf;
use std::time::Duration;

use super::{Backend, StorageError, StorageErrorKind, Tree};

/// The error of an open refused because another node owns the store
/// `namespace` (its description: `holder`); free once that node closes it,
/// or one lease (`lease`) after it stopped.
pub(crate) fn held_by_another_node(
    backend: Backend,
    path: PathBuf,
    namespace: &[u8],
    holder: &str,
    lease: Duration,
) -> StorageError {
    StorageError {
        backend,
        action: "open",
        path,
        kind: StorageErrorKind::Locked,
        source: format!(
            "the store `{}` is served by another node ({holder}); one node serves a store at a \
             time. It is free once that node closes it, or {} s after it stopped",
            String::from_utf8_lossy(namespace),
            lease.as_secs()
        )
        .into(),
    }
}

/// A store's namespace in a cluster.
#[derive(Debug, Clone)]
pub(crate) struct Namespace<'a>(pub(crate) &'a [u8]);

impl Namespace<'_> {
    /// `namespace ‖ tree name ‖ 0x00`.
    pub(crate) fn tree_prefix(&self, tree: Tree) -> Vec<u8> {
        let mut prefix = self.0.to_vec();
        prefix.extend_from_slice(tree.name().as_bytes());
        prefix.push(0);
        prefix
    }

    /// The cluster key of `key` in `tree`.
    pub(crate) fn full_key(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        let mut full = self.tree_prefix(tree);
        full.extend_from_slice(key);
        full
    }

    /// The cluster keys `[low, high)` of the range `(start, end)` of `tree`.
    pub(crate) fn range(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> (Vec<u8>, Vec<u8>) {
        let low = match start {
            Bound::Unbounded => self.tree_prefix(tree),
            Bound::Included(k) => self.full_key(tree, k),
            Bound::Excluded(k) => successor(self.full_key(tree, k)),
        };
        // The tree prefix ends in 0x00, so its end is the same prefix
        // ending in 0x01.
        let high = match end {
            Bound::Unbounded => {
                let mut after = self.tree_prefix(tree);
                if let Some(last) = after.last_mut() {
                    *last = 1;
                }
                after
            }
            Bound::Excluded(k) => self.full_key(tree, k),
            Bound::Included(k) => successor(self.full_key(tree, k)),
        };
        (low, high)
    }
}

/// `key ‖ 0x00`: the first key after `key`.
pub(crate) fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_inside_their_tree() {
        let ns = Namespace(b"ns/");
        let (low, high) = ns.range(Tree::Data, Bound::Unbounded, Bound::Unbounded);
        assert_eq!(low, b"ns/data\0".to_vec());
        assert_eq!(high, b"ns/data\x01".to_vec());
        assert!(ns.full_key(Tree::Data, &[0xFF; 8]) < high);
        let (low, high) = ns.range(Tree::Data, Bound::Excluded(b"a"), Bound::Included(b"b"));
        assert_eq!(low, b"ns/data\0a\0".to_vec());
        assert_eq!(high, b"ns/data\0b\0".to_vec());
    }
}
