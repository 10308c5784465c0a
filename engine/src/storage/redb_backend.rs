//! The redb backend (being built; see the storage seam).

use std::ops::{Bound, ControlFlow};
use std::path::Path;

use super::{
    Backend, Durability, Order, Storage, StorageError, StorageErrorKind, Tree, WriteBatch,
};

pub(crate) struct RedbStorage;

impl RedbStorage {
    pub(crate) fn open(dir: &Path) -> Result<Self, StorageError> {
        Err(StorageError {
            backend: Backend::Redb,
            action: "open",
            path: dir.to_path_buf(),
            kind: StorageErrorKind::Other,
            source: "the redb backend is not built yet".into(),
        })
    }
}

impl Storage for RedbStorage {
    fn get(&self, _: Tree, _: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        unreachable!()
    }
    fn scan(
        &self,
        _: Tree,
        _: Bound<&[u8]>,
        _: Bound<&[u8]>,
        _: Order,
        _: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        unreachable!()
    }
    fn apply(&self, _: &WriteBatch, _: Durability) -> Result<(), StorageError> {
        unreachable!()
    }
    fn flush(&self) -> Result<(), StorageError> {
        unreachable!()
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        unreachable!()
    }
    fn backend(&self) -> Backend {
        Backend::Redb
    }
}
