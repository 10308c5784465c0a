//! Loom model of the erasure protocol between writers, shred and cache
//! eviction, run over the engine's own `ScopeGate` and `KeyCache` (compiled
//! against loom's primitives by the `loom` feature):
//!
//! `cargo test -p shredkv --features loom --release --test loom_protocol`
//!
//! The vault is modelled by a list of key versions; the protocol steps are
//! the engine's (`Db::put` → `Vault::current_for_write`, `Db::shred` →
//! `erase_locked`): a writer takes the gate's read lock, checks the erased
//! state, takes the bucket's current key from the cache or creates the next
//! version under the creation lock, and seals with it; shred takes the write
//! lock, marks the scope erased, destroys every version and evicts.
#![cfg(feature = "loom")]

use loom::sync::{Arc, Mutex};
use loom::thread;
use shredkv::SubjectTag;
use shredkv::internal::{BucketId, KeyCache, ScopeGate};
use shredkv_crypto::KeyId;

const TAG: SubjectTag = SubjectTag([7; 16]);
const BUCKET: BucketId = BucketId {
    subject: TAG,
    class: 1,
    bucket: 1,
};

#[derive(Default)]
struct Vault {
    erased: bool,
    /// (version, destroyed)
    keys: Vec<(u32, bool)>,
}

struct Store {
    gate: ScopeGate,
    cache: KeyCache<u32>,
    vault: Mutex<Vault>,
    create: Mutex<()>,
}

impl Store {
    fn new() -> Self {
        Self {
            gate: ScopeGate::new(2),
            cache: KeyCache::new(1 << 20),
            vault: Mutex::new(Vault::default()),
            create: Mutex::new(()),
        }
    }

    /// A write: the key version it sealed with, or `None` if the scope is erased.
    fn write(&self) -> Option<u32> {
        let _shared = self.gate.read(&[TAG]);
        if self.vault.lock().expect("vault").erased {
            return None;
        }
        if let Some((_, version)) = self.cache.current(&BUCKET) {
            return Some(*version);
        }
        let _creating = self.create.lock().expect("create");
        if let Some((_, version)) = self.cache.current(&BUCKET) {
            return Some(*version);
        }
        let mut vault = self.vault.lock().expect("vault");
        let version = u32::try_from(vault.keys.len()).expect("small") + 1;
        vault.keys.push((version, false));
        drop(vault);
        let id = KeyId {
            subject: TAG,
            class: 1,
            bucket: 1,
            version,
        };
        self.cache.insert(id, std::sync::Arc::new(version), 1, true);
        Some(version)
    }

    fn shred(&self) {
        let _exclusive = self.gate.write(&[TAG]);
        let mut vault = self.vault.lock().expect("vault");
        vault.erased = true;
        for key in &mut vault.keys {
            key.1 = true;
        }
        drop(vault);
        self.cache.evict_subject(&TAG, None);
    }
}

#[test]
fn a_writer_racing_shred_never_leaves_a_live_key_for_the_erased_scope() {
    loom::model(|| {
        let store = Arc::new(Store::new());
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let store = Arc::clone(&store);
                thread::spawn(move || store.write())
            })
            .collect();
        let shredder = {
            let store = Arc::clone(&store);
            thread::spawn(move || store.shred())
        };
        let results: Vec<_> = writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect();
        shredder.join().expect("shredder");

        let vault = store.vault.lock().expect("vault");
        assert!(vault.erased);
        assert!(
            vault.keys.iter().all(|(_, destroyed)| *destroyed),
            "a key outlived the shred"
        );
        assert!(
            vault.keys.len() <= 1,
            "racing writers created {} keys for one bucket",
            vault.keys.len()
        );
        for version in results.iter().flatten() {
            assert!(
                vault.keys.iter().any(|(v, d)| v == version && *d),
                "a write sealed with a key shred did not destroy"
            );
        }
        assert!(store.cache.current(&BUCKET).is_none());
    });
}

#[test]
fn an_operation_begun_after_shred_returned_fails() {
    loom::model(|| {
        let store = Arc::new(Store::new());
        let writer = {
            let store = Arc::clone(&store);
            thread::spawn(move || store.write())
        };
        store.shred();
        assert_eq!(store.write(), None);
        let _ = writer.join().expect("writer");
        let vault = store.vault.lock().expect("vault");
        assert!(vault.keys.iter().all(|(_, destroyed)| *destroyed));
    });
}
