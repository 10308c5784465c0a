//! A fault-injectable in-memory store for the race tests. Apart from
//! `support/mod.rs` because the `engine_ops` fuzz target includes that file
//! by path, and this one needs `tempfile`, a dev-dependency of the engine
//! only.

use std::sync::Arc;

use shredkv::{Config, Db, ManualClock};

/// A fault-injectable in-memory store whose trees and keys survive
/// reopening, on a manual clock: the store of the race tests, which stop a
/// thread at a pause point (`FaultControl::pause_at`) to force one
/// interleaving.
pub(crate) struct PausableStore {
    dir: tempfile::TempDir,
    trees: shredkv::internal::MemoryStore,
    keys: Arc<shredkv::internal::MemoryKeyProvider>,
    pub(crate) clock: Arc<ManualClock>,
}

impl PausableStore {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            trees: shredkv::internal::MemoryStore::new(),
            keys: Arc::new(shredkv::internal::MemoryKeyProvider::new()),
            clock: Arc::new(ManualClock::new(
                "2026-03-01T09:17:00Z".parse().expect("timestamp"),
            )),
        }
    }

    /// Opens (or reopens: the key cache starts empty) the store.
    pub(crate) fn open(&self) -> (Db, shredkv::internal::FaultControl) {
        let config = Config::new(self.dir.path())
            .key_provider(self.keys.clone())
            .clock(self.clock.clone())
            .maintenance_every(None);
        shredkv::internal::open_with_faults(
            config,
            &shredkv::internal::TestStore::Memory(self.trees.clone()),
            shredkv::internal::FaultPlan::none(),
        )
        .expect("open")
    }
}
