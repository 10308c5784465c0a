//! The design's floor: shredkv's layout and cryptography on a plain backend,
//! without the engine.
//!
//! What any store keeping shredkv's at-rest properties must do per record,
//! and nothing more: the tree key is a keyed subject tag (HMAC-SHA256 under a
//! store key) ‖ class (u16) ‖ the record key blinded under the subject's own
//! HMAC key, 34 bytes as shredkv's; the value is the record key and value in
//! shredkv's envelope, sealed under the subject's own AES-256-GCM key with
//! the store id and tree key as associated data. Keys live in a map in
//! memory, made at registration (so a floor store cannot be reopened: it is
//! a throughput reference, not a store); erasing a subject drops its keys
//! and makes one durable commit.
//!
//! Left out, because they are the engine's and not the layout's: the key
//! vault and its caches, subject states and the access check, the erasure
//! ledger, record locks, the purge bookkeeping of overwritten records (the
//! read before a write and its re-key debt), expiry buckets, and the MACs of
//! the control plane. A shredkv peer's distance from its floor is what the
//! engine costs; the floor's distance from the plain backend is what the
//! design costs, whatever the engine does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use shredkv_crypto::{DataKey, Envelope, KeyRef, Label, SubjectTag, TagKey, ValueCipher, seal};

use crate::peers::{Peer, REDB_TABLE};
use crate::{Record, Result, Store};

/// The class number every record is written under (one class, as the
/// shredkv peers use).
const CLASS_NUMBER: u16 = 1;
/// The envelope's key reference (the open bucket's first key, as shredkv's).
const KEY_REF: KeyRef = KeyRef {
    bucket: 1,
    version: 1,
};

/// Called with each entry of a scan (tree key, stored value).
type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// The plain backend under the floor: byte keys to byte values.
pub(crate) trait RawKv {
    /// Writes every entry as one atomic batch (buffered, not synced).
    fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()>;
    /// Calls `found` with the value under `key`, if any; returns whether.
    fn get(&self, key: &[u8], found: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool>;
    /// Visits every entry whose key starts with `prefix`.
    fn scan_prefix(&self, prefix: &[u8], visit: &mut Visit<'_>) -> Result<()>;
    /// Writes one entry and makes it, and everything before it, durable.
    fn put_durable(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;
}

impl RawKv for sled::Db {
    fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        if let [(key, value)] = entries.as_slice() {
            self.insert(key.as_slice(), value.as_slice())?;
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in entries {
            batch.insert(key, value);
        }
        Ok(self.apply_batch(batch)?)
    }

    fn get(&self, key: &[u8], found: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        match sled::Tree::get(self, key)? {
            Some(value) => found(&value).map(|()| true),
            None => Ok(false),
        }
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut Visit<'_>) -> Result<()> {
        for entry in sled::Tree::scan_prefix(self, prefix) {
            let (k, v) = entry?;
            visit(&k, &v)?;
        }
        Ok(())
    }

    fn put_durable(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert(key, value)?;
        sled::Tree::flush(self)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        sled::Tree::flush(self)?;
        Ok(())
    }
}

/// redb with its defaults, opened with the one table of the plain peers:
/// buffered commits (`Durability::None`), durable ones `Durability::Immediate`
/// (plain redb's peer uses it too).
pub(crate) struct RedbKv(redb::Database);

impl RedbKv {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::create(dir.join("store.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_TABLE)?;
        txn.commit()?;
        Ok(Self(db))
    }

    /// The database, for reads.
    pub(crate) fn database(&self) -> &redb::Database {
        &self.0
    }

    /// A write transaction, committing durably or buffered.
    pub(crate) fn write(&self, durable: bool) -> Result<redb::WriteTransaction> {
        let mut txn = self.0.begin_write()?;
        txn.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        Ok(txn)
    }
}

impl RawKv for RedbKv {
    fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let txn = self.write(false)?;
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            for (key, value) in &entries {
                table.insert(key.as_slice(), value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn get(&self, key: &[u8], found: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        use redb::ReadableDatabase;
        let txn = self.0.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        match table.get(key)? {
            Some(value) => found(value.value()).map(|()| true),
            None => Ok(false),
        }
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut Visit<'_>) -> Result<()> {
        use redb::ReadableDatabase;
        let txn = self.0.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        let end = crate::peers::prefix_end(prefix).unwrap_or_default();
        for entry in table.range::<&[u8]>(prefix..end.as_slice())? {
            let (k, v) = entry?;
            visit(k.value(), v.value())?;
        }
        Ok(())
    }

    fn put_durable(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let txn = self.write(true)?;
        txn.open_table(REDB_TABLE)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.write(true)?.commit()?;
        Ok(())
    }
}

/// One subject's keys: the record-key blinding key and the value key.
struct SubjectKeys {
    blind: TagKey,
    cipher: ValueCipher,
}

/// A fresh random 32-byte key as an HMAC key for `label`.
fn fresh_tag_key(label: Label) -> TagKey {
    TagKey::derive(DataKey::generate().expose_secret(), label)
}

/// The floor peer over a plain backend (see the module documentation).
pub(crate) struct FloorStore {
    peer: Peer,
    kv: Box<dyn RawKv>,
    store_id: [u8; 16],
    subject_tags: TagKey,
    keys: RwLock<HashMap<SubjectTag, Arc<SubjectKeys>>>,
}

impl FloorStore {
    pub(crate) fn new(peer: Peer, kv: Box<dyn RawKv>) -> Self {
        let mut store_id = [0u8; 16];
        store_id.copy_from_slice(&DataKey::generate().expose_secret()[..16]);
        Self {
            peer,
            kv,
            store_id,
            subject_tags: fresh_tag_key(Label::SubjectTag),
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// The subject's tag and keys; an unknown (or erased) subject is an error.
    fn subject(&self, subject: &str) -> Result<(SubjectTag, Arc<SubjectKeys>)> {
        let tag = self.subject_tags.subject_tag(subject.as_bytes());
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        match keys.get(&tag) {
            Some(found) => Ok((tag, Arc::clone(found))),
            None => Err(format!("subject {subject} is not registered (or was erased)").into()),
        }
    }

    fn scope_prefix(tag: &SubjectTag) -> [u8; 18] {
        let mut prefix = [0u8; 18];
        prefix[..16].copy_from_slice(&tag.0);
        prefix[16..].copy_from_slice(&CLASS_NUMBER.to_be_bytes());
        prefix
    }

    fn tree_key(tag: &SubjectTag, keys: &SubjectKeys, record_key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(34);
        out.extend_from_slice(&Self::scope_prefix(tag));
        out.extend_from_slice(&keys.blind.blind(record_key));
        out
    }

    fn aad(&self, tree_key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + tree_key.len());
        aad.extend_from_slice(&self.store_id);
        aad.extend_from_slice(tree_key);
        aad
    }

    /// The stored form of a record: `len ‖ record key ‖ value`, sealed.
    fn sealed(
        &self,
        keys: &SubjectKeys,
        tree_key: &[u8],
        record_key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>> {
        let mut payload = Vec::with_capacity(4 + record_key.len() + value.len());
        payload.extend_from_slice(&u32::try_from(record_key.len())?.to_be_bytes());
        payload.extend_from_slice(record_key);
        payload.extend_from_slice(value);
        Ok(seal(
            &keys.cipher,
            KEY_REF,
            None,
            &self.aad(tree_key),
            &payload,
        )?)
    }

    /// Opens a stored record into `plain`; returns the record key's length
    /// (the value follows it at `4 + len`).
    fn open(
        &self,
        keys: &SubjectKeys,
        tree_key: &[u8],
        stored: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<usize> {
        Envelope::parse(stored)?.open_into(&keys.cipher, &self.aad(tree_key), plain)?;
        let len = plain
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or("a stored record shorter than its length prefix")?;
        let len = usize::try_from(len)?;
        if plain.len() < 4 + len {
            return Err("a stored record shorter than its record key".into());
        }
        Ok(len)
    }
}

impl Store for FloorStore {
    fn peer(&self) -> Peer {
        self.peer
    }

    fn register(&self, subject: &str) -> Result<()> {
        let tag = self.subject_tags.subject_tag(subject.as_bytes());
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.entry(tag).or_insert_with(|| {
            Arc::new(SubjectKeys {
                blind: fresh_tag_key(Label::RecordKeyBlinding),
                cipher: ValueCipher::new(&DataKey::generate()),
            })
        });
        Ok(())
    }

    fn write_batch(&self, records: &[Record<'_>]) -> Result<()> {
        let mut entries = Vec::with_capacity(records.len());
        for r in records {
            let (tag, keys) = self.subject(r.subject)?;
            let tree_key = Self::tree_key(&tag, &keys, r.key);
            let stored = self.sealed(&keys, &tree_key, r.key, r.value)?;
            entries.push((tree_key, stored));
        }
        self.kv.put_all(entries)
    }

    fn put(&self, subject: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let (tag, keys) = self.subject(subject)?;
        let tree_key = Self::tree_key(&tag, &keys, key);
        let stored = self.sealed(&keys, &tree_key, key, value)?;
        self.kv.put_all(vec![(tree_key, stored)])
    }

    fn get(&self, subject: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let (tag, keys) = self.subject(subject)?;
        let tree_key = Self::tree_key(&tag, &keys, key);
        self.kv.get(&tree_key, &mut |stored| {
            let mut plain = Vec::new();
            let len = self.open(&keys, &tree_key, stored, &mut plain)?;
            if plain.get(4..4 + len) != Some(key) {
                return Err("a record stored under another record's key".into());
            }
            plain.drain(..4 + len);
            *out = plain;
            Ok(())
        })
    }

    fn scan(&self, subject: &str, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let (tag, keys) = self.subject(subject)?;
        let mut n = 0;
        let mut plain = Vec::new();
        self.kv
            .scan_prefix(&Self::scope_prefix(&tag), &mut |tree_key, stored| {
                let len = self.open(&keys, tree_key, stored, &mut plain)?;
                let (record_key, value) = plain.split_at(4 + len);
                visit(record_key.get(4..).unwrap_or_default(), value);
                n += 1;
                Ok(())
            })?;
        Ok(n)
    }

    fn erase(&self, subject: &str) -> Result<()> {
        let tag = self.subject_tags.subject_tag(subject.as_bytes());
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tag);
        // The erasure's durable record, outside every scope's key range.
        let mut marker = vec![0xff; 1];
        marker.extend_from_slice(&tag.0);
        self.kv.put_durable(&marker, b"erased")
    }

    fn flush(&self) -> Result<()> {
        self.kv.flush()
    }
}
