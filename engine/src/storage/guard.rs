//! A panic inside a backend becomes a typed error at the seam.
//!
//! sled panics on some damaged files ("tried to serialize Uninitialized"),
//! while opening or later while reading. A storage engine must answer bad
//! data with an error that names the store, never by unwinding through the
//! application (or exiting 101 from the CLI). Every call into a backend goes
//! through [`catch`]; after a panic the backend's state is unknown, so the
//! guarded store refuses every later call with the same kind of error until
//! it is reopened.

use std::ops::{Bound, ControlFlow};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    Backend, Durability, Order, Space, Storage, StorageError, StorageErrorKind, Tree, WriteBatch,
};

/// The text of a panic payload (`panic!` with a literal or a format).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// The error for a panic of `backend` while doing `action` at `path`.
fn panic_error(
    backend: Backend,
    action: &'static str,
    path: &Path,
    payload: &(dyn std::any::Any + Send),
) -> StorageError {
    StorageError {
        backend,
        action,
        path: path.to_path_buf(),
        kind: StorageErrorKind::Corrupt,
        source: format!(
            "the backend panicked ({}); its files are likely damaged: run `shredkv verify`, \
             or restore the latest backup",
            panic_text(payload)
        )
        .into(),
    }
}

/// Runs `f`; a panic inside it becomes a [`StorageErrorKind::Corrupt`] error
/// for `action` on `backend` at `path`.
pub(crate) fn catch<T>(
    backend: Backend,
    action: &'static str,
    path: &Path,
    f: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(panic_error(backend, action, path, payload.as_ref())))
}

/// A backend whose panics are caught (see the module docs).
pub(crate) struct Guarded {
    inner: Arc<dyn Storage>,
    path: PathBuf,
    panicked: AtomicBool,
    /// Marks the directory open in this process; dropped after `inner`.
    _open_here: super::open_stores::OpenStore,
}

impl Guarded {
    pub(crate) fn new(
        inner: Arc<dyn Storage>,
        path: PathBuf,
        open_here: super::open_stores::OpenStore,
    ) -> Self {
        Self {
            inner,
            path,
            panicked: AtomicBool::new(false),
            _open_here: open_here,
        }
    }

    fn call<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&dyn Storage) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let backend = self.inner.backend();
        if self.panicked.load(Ordering::Acquire) {
            return Err(StorageError {
                backend,
                action,
                path: self.path.clone(),
                kind: StorageErrorKind::Corrupt,
                source: "the backend panicked earlier in this process; reopen the store".into(),
            });
        }
        let inner = self.inner.as_ref();
        catch_unwind(AssertUnwindSafe(|| f(inner))).unwrap_or_else(|payload| {
            self.panicked.store(true, Ordering::Release);
            Err(panic_error(backend, action, &self.path, payload.as_ref()))
        })
    }
}

impl Storage for Guarded {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.call("read", |s| s.get(tree, key))
    }

    fn get_many(&self, tree: Tree, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.call("read", |s| s.get_many(tree, keys))
    }

    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        self.call("scan", |s| s.scan(tree, start, end, order, visit))
    }

    fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StorageError> {
        self.call("write", |s| s.apply(batch, durability))
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
        self.call("write", |s| s.insert_new(tree, key, value, durability))
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.call("flush", |s| s.flush())
    }

    fn space(&self) -> Result<Space, StorageError> {
        self.call("read", |s| s.space())
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    /// A backend that panics on every read, as sled does on some damage.
    struct Panicking(MemoryStorage);

    impl Storage for Panicking {
        fn get(&self, _: Tree, _: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            panic!("tried to serialize Uninitialized")
        }
        fn scan(
            &self,
            tree: Tree,
            start: Bound<&[u8]>,
            end: Bound<&[u8]>,
            order: Order,
            visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
        ) -> Result<(), StorageError> {
            self.0.scan(tree, start, end, order, visit)
        }
        fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StorageError> {
            self.0.apply(batch, durability)
        }
        fn flush(&self) -> Result<(), StorageError> {
            self.0.flush()
        }
        fn space(&self) -> Result<Space, StorageError> {
            self.0.space()
        }
        fn backend(&self) -> Backend {
            Backend::Sled
        }
    }

    #[test]
    fn a_panic_in_the_backend_is_a_corruption_error_and_fences_the_store() {
        let dir = tempfile::tempdir().expect("dir");
        let guarded = Guarded::new(
            Arc::new(Panicking(MemoryStorage::new())),
            PathBuf::from("/stores/a"),
            crate::storage::open_stores::mark_open(dir.path(), std::time::Duration::ZERO)
                .expect("not open"),
        );
        let err = guarded
            .get(Tree::Data, b"k")
            .expect_err("a panic is an error");
        assert!(err.is_corruption(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("/stores/a") && text.contains("Uninitialized"),
            "{text}"
        );
        // Calls that would not panic are refused too: the state is unknown.
        let err = guarded
            .apply(&WriteBatch::new(), Durability::Buffered)
            .expect_err("fenced");
        assert!(
            err.is_corruption() && err.to_string().contains("reopen"),
            "{err}"
        );
    }
}
