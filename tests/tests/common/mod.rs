//! Raw access to a closed store's backend files, behind shredkv's back: the
//! sled tree or redb table named like shredkv's trees (`meta`, `data`,
//! `vault`, ...), in `<dir>/sled/` or `<dir>/store.redb`.

#![allow(dead_code, reason = "each scenario uses the part it needs")]

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use shredkv::Backend;
use shredkv_tests::Store;

/// A raw tree: key → value.
pub(crate) type Raw = BTreeMap<Vec<u8>, Vec<u8>>;

/// Opens `open` with retries for up to 3 s: a just-closed store's lock can
/// stay taken for a moment (sled releases it from a background thread), as
/// the engine's own open allows for.
fn open_retrying<T, E: std::fmt::Debug>(what: &str, mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match open() {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(err) => panic!("open {what} directly: {err:?}"),
        }
    }
}

fn open_redb(store: &Store) -> redb::Database {
    open_retrying("redb", || redb::Database::open(store.backend_path()))
}

fn open_sled(store: &Store) -> sled::Db {
    open_retrying("sled", || sled::open(store.backend_path()))
}

fn redb_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Every entry of a raw tree (the store must be closed).
pub(crate) fn raw_read(store: &Store, tree: &str) -> Raw {
    let mut out = Raw::new();
    match store.backend() {
        Backend::Redb => {
            let db = open_redb(store);
            let txn = db.begin_read().expect("read transaction");
            let table = txn.open_table(redb_table(tree)).expect("open table");
            for entry in table.iter().expect("iterate") {
                let (k, v) = entry.expect("entry");
                out.insert(k.value().to_vec(), v.value().to_vec());
            }
        }
        _ => {
            let db = open_sled(store);
            let tree = db.open_tree(tree).expect("open tree");
            for entry in tree.iter() {
                let (k, v) = entry.expect("entry");
                out.insert(k.to_vec(), v.to_vec());
            }
        }
    }
    out
}

/// Overwrites entries of a raw tree, durably (the store must be closed).
pub(crate) fn raw_write(store: &Store, tree: &str, changes: &Raw) {
    match store.backend() {
        Backend::Redb => {
            let db = open_redb(store);
            let txn = db.begin_write().expect("write transaction");
            {
                let mut table = txn.open_table(redb_table(tree)).expect("open table");
                for (k, v) in changes {
                    table.insert(k.as_slice(), v.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        _ => {
            let db = open_sled(store);
            let tree = db.open_tree(tree).expect("open tree");
            for (k, v) in changes {
                tree.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
            db.flush().expect("flush");
        }
    }
}

/// Removes entries of a raw tree, durably (the store must be closed).
pub(crate) fn raw_remove(store: &Store, tree: &str, keys: &[Vec<u8>]) {
    match store.backend() {
        Backend::Redb => {
            let db = open_redb(store);
            let txn = db.begin_write().expect("write transaction");
            {
                let mut table = txn.open_table(redb_table(tree)).expect("open table");
                for k in keys {
                    table.remove(k.as_slice()).expect("remove");
                }
            }
            txn.commit().expect("commit");
        }
        _ => {
            let db = open_sled(store);
            let tree = db.open_tree(tree).expect("open tree");
            for k in keys {
                tree.remove(k.as_slice()).expect("remove");
            }
            db.flush().expect("flush");
        }
    }
}

/// The number the store gave `class` (meta key `class/<name>`: u16
/// big-endian, then the class's key mode byte).
pub(crate) fn class_number(store: &Store, class: &str) -> [u8; 2] {
    let meta = raw_read(store, "meta");
    let bytes = meta
        .get(format!("class/{class}").as_bytes())
        .expect("the class has a number");
    bytes
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .expect("a u16 class number")
}

/// The raw data entries of one scope (subject tag ‖ class), in key order.
pub(crate) fn scope_entries(data: &Raw, tag: &[u8; 16], class: [u8; 2]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut prefix = tag.to_vec();
    prefix.extend_from_slice(&class);
    data.iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Vault entry states (byte 1 of a vault entry).
pub(crate) const KEY_ACTIVE: u8 = 1;
/// A retired key: decrypts, seals no more.
pub(crate) const KEY_RETIRED: u8 = 2;
/// A destroyed key: a tombstone without key material.
pub(crate) const KEY_DESTROYED: u8 = 3;

/// Every vault entry by key id: tree `vault` (key ids) and the day lane,
/// tree `vault_days`, whose keys are key ids with the bucket first:
/// `bucket (4) ‖ subject tag (16) ‖ class (2) ‖ version (4)`, turned back
/// into `tag ‖ class ‖ bucket ‖ version` here (docs/design.md).
pub(crate) fn vault_by_key_id(store: &Store) -> Raw {
    let mut entries = raw_read(store, "vault");
    for (lane, value) in raw_read(store, "vault_days") {
        assert_eq!(lane.len(), 26, "a day-lane key is 26 bytes");
        let mut id = lane[4..22].to_vec();
        id.extend_from_slice(&lane[..4]);
        id.extend_from_slice(&lane[22..]);
        assert!(
            entries.insert(id, value).is_none(),
            "a key both in `vault` and in the day lane"
        );
    }
    entries
}

/// The states of a subject's vault entries (key id starts with its tag),
/// by key id, wherever they are kept.
pub(crate) fn key_states(store: &Store, tag: &[u8; 16]) -> Vec<(Vec<u8>, u8)> {
    vault_by_key_id(store)
        .into_iter()
        .filter(|(k, _)| k.starts_with(tag))
        .map(|(k, v)| (k, v.get(1).copied().unwrap_or(0)))
        .collect()
}

/// CRC-32 (IEEE), as the envelope's trailer: lets a test forge a
/// consistent checksum the way an attacker would.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}
