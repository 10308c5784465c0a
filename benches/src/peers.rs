//! The stores compared, each behind [`Store`].
//!
//! The plain peers store a record under `subject ‖ record key`; subject ids
//! have a fixed width (see [`crate::workload::subject_id`]), so a subject's
//! records are exactly the keys starting with its id, and erasing it is
//! removing that key range.

use std::ops::ControlFlow;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use shredkv::{Backend, Batch, Classes, Config, Db};
use shredkv_crypto::{DataKey, Envelope, KeyRef, ValueCipher};

use crate::floor::{FloorStore, RedbKv};
use crate::{Record, Result, Store, TreeEntry};

/// The retention class every shredkv record is written in (blinded keys,
/// no expiry: records live in their scope's open bucket).
pub const CLASS: &str = "message_content";

/// The stores the benchmarks compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// shredkv on sled 0.34.7.
    ShredkvSled,
    /// shredkv on redb.
    ShredkvRedb,
    /// sled 0.34.7, no encryption.
    Sled,
    /// redb, no encryption.
    Redb,
    /// sled with one store-wide AES-256-GCM key (shredkv's envelope format).
    SledAes,
    /// shredkv's layout and cryptography on plain sled, without the engine
    /// (see [`crate::floor`]).
    SledFloor,
    /// The same on plain redb.
    RedbFloor,
    /// SQLite (bundled) with `secure_delete=ON`, WAL, an index on subject.
    Sqlite,
}

impl Peer {
    /// Every peer, in report order.
    pub const ALL: [Peer; 8] = [
        Peer::ShredkvSled,
        Peer::ShredkvRedb,
        Peer::SledFloor,
        Peer::RedbFloor,
        Peer::Sled,
        Peer::Redb,
        Peer::SledAes,
        Peer::Sqlite,
    ];

    /// The peer's name in benchmark ids and reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::ShredkvSled => "shredkv-sled",
            Peer::ShredkvRedb => "shredkv-redb",
            Peer::Sled => "sled",
            Peer::Redb => "redb",
            Peer::SledAes => "sled-aes",
            Peer::SledFloor => "sled-floor",
            Peer::RedbFloor => "redb-floor",
            Peer::Sqlite => "sqlite",
        }
    }

    /// The peer named `name`, if any.
    pub fn from_name(name: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the peer can be closed and opened again on its files. The
    /// design's floors keep their keys in memory only, so they cannot.
    #[must_use]
    pub fn reopens(self) -> bool {
        !matches!(self, Peer::SledFloor | Peer::RedbFloor)
    }

    /// The plain store of the same backend: the ceiling this peer is held to.
    pub fn baseline(self) -> Peer {
        match self {
            Peer::ShredkvSled | Peer::Sled | Peer::SledAes | Peer::SledFloor => Peer::Sled,
            Peer::ShredkvRedb | Peer::Redb | Peer::RedbFloor => Peer::Redb,
            Peer::Sqlite => Peer::Sqlite,
        }
    }

    /// Opens (creating) this peer's store in the directory `dir`.
    ///
    /// # Errors
    /// The store failing to open.
    pub fn open(self, dir: &Path) -> Result<Box<dyn Store>> {
        Ok(match self {
            Peer::ShredkvSled => Box::new(ShredkvStore::open(dir, Backend::Sled, self)?),
            Peer::ShredkvRedb => Box::new(ShredkvStore::open(dir, Backend::Redb, self)?),
            Peer::Sled => Box::new(SledStore::open(dir, None)?),
            Peer::SledAes => Box::new(SledStore::open(
                dir,
                Some(ValueCipher::new(&DataKey::generate())),
            )?),
            Peer::Redb => Box::new(RedbStore::open(dir)?),
            Peer::SledFloor => Box::new(FloorStore::new(
                self,
                Box::new(sled::Config::new().path(dir.join("sled")).open()?),
            )),
            Peer::RedbFloor => Box::new(FloorStore::new(self, Box::new(RedbKv::open(dir)?))),
            Peer::Sqlite => Box::new(SqliteStore::open(dir)?),
        })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `subject ‖ key`: the plain peers' tree key.
fn tree_key(subject: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(subject.len() + key.len());
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(key);
    out
}

/// The first key after every key starting with `prefix` (`None`: unbounded).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// shredkv with its defaults, except the background flush: every peer's
/// writes become durable at the same points (an explicit flush, or an
/// erasure), so none pays for syncs the others skip.
struct ShredkvStore {
    db: Db,
    peer: Peer,
}

impl ShredkvStore {
    fn open(dir: &Path, backend: Backend, peer: Peer) -> Result<Self> {
        let db = Db::open(shredkv_config(dir, backend))?;
        Ok(Self { db, peer })
    }
}

/// The configuration of the shredkv peers.
pub(crate) fn shredkv_config(dir: &Path, backend: Backend) -> Config {
    Config::new(dir)
        .allow_key_file_in_store(true)
        .backend(backend)
        .flush_every(None)
        .maintenance_every(None)
}

impl Store for ShredkvStore {
    fn peer(&self) -> Peer {
        self.peer
    }

    fn register(&self, subject: &str) -> Result<()> {
        self.db.register_account(subject)?;
        Ok(())
    }

    fn write_batch(&self, records: &[Record<'_>]) -> Result<()> {
        let mut batch = Batch::new();
        for r in records {
            batch.put(r.subject, CLASS, r.key, r.value);
        }
        self.db.apply(batch)?;
        Ok(())
    }

    fn put(&self, subject: &str, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put(subject, CLASS, key, value)?)
    }

    fn get(&self, subject: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        match self.db.get(subject, CLASS, key)? {
            Some(value) => {
                *out = value;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan(&self, subject: &str, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let mut n = 0;
        self.db.scan_with(subject, CLASS, &mut |record| {
            visit(record.key, record.value);
            n += 1;
            ControlFlow::Continue(())
        })?;
        Ok(n)
    }

    fn erase(&self, subject: &str) -> Result<()> {
        self.db.shred(subject, Classes::All)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(self.db.flush()?)
    }
}

/// sled 0.34.7 with its defaults (the same configuration shredkv opens),
/// plain or with one store-wide key.
struct SledStore {
    db: sled::Db,
    /// The store-wide key; `None` stores values in plaintext.
    cipher: Option<ValueCipher>,
}

impl SledStore {
    fn open(dir: &Path, cipher: Option<ValueCipher>) -> Result<Self> {
        let db = sled::Config::new().path(dir.join("sled")).open()?;
        Ok(Self { db, cipher })
    }

    /// The stored form of a value: itself, or an envelope bound to its key.
    fn stored(&self, tree_key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        match &self.cipher {
            None => Ok(value.to_vec()),
            Some(cipher) => Ok(shredkv_crypto::seal(
                cipher,
                KeyRef {
                    bucket: 0,
                    version: 0,
                },
                None,
                tree_key,
                value,
            )?),
        }
    }

    /// The value of a stored form, into `out`.
    fn value(&self, tree_key: &[u8], stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match &self.cipher {
            None => {
                out.clear();
                out.extend_from_slice(stored);
            }
            Some(cipher) => Envelope::parse(stored)?.open_into(cipher, tree_key, out)?,
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn peer(&self) -> Peer {
        if self.cipher.is_some() {
            Peer::SledAes
        } else {
            Peer::Sled
        }
    }

    fn register(&self, _subject: &str) -> Result<()> {
        Ok(())
    }

    fn write_batch(&self, records: &[Record<'_>]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for r in records {
            let key = tree_key(r.subject, r.key);
            let value = self.stored(&key, r.value)?;
            batch.insert(key, value);
        }
        Ok(self.db.apply_batch(batch)?)
    }

    fn put(&self, subject: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let key = tree_key(subject, key);
        let value = self.stored(&key, value)?;
        self.db.insert(key, value)?;
        Ok(())
    }

    fn get(&self, subject: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let key = tree_key(subject, key);
        match self.db.get(&key)? {
            Some(stored) => {
                self.value(&key, &stored, out)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan(&self, subject: &str, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let mut n = 0;
        let mut value = Vec::new();
        for entry in self.db.scan_prefix(subject.as_bytes()) {
            let (k, v) = entry?;
            self.value(&k, &v, &mut value)?;
            visit(k.get(subject.len()..).unwrap_or_default(), &value);
            n += 1;
        }
        Ok(n)
    }

    fn erase(&self, subject: &str) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.db.scan_prefix(subject.as_bytes()).keys() {
            batch.remove(key?);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// sled commits across trees atomically only in a transaction, and an
    /// erasure's entries must land together (G1): one batch per tree, the
    /// batches in one transaction, as shredkv's sled backend commits them,
    /// then the flush.
    fn commit_to_trees(&self, entries: &[TreeEntry<'_>]) -> Result<()> {
        use sled::transaction::{ConflictableTransactionResult, Transactional, TransactionalTree};
        let mut per_tree: std::collections::BTreeMap<&str, sled::Batch> =
            std::collections::BTreeMap::new();
        for entry in entries {
            per_tree
                .entry(entry.tree)
                .or_default()
                .insert(entry.key, entry.value);
        }
        let mut trees = Vec::with_capacity(per_tree.len());
        let mut batches = Vec::with_capacity(per_tree.len());
        for (tree, batch) in per_tree {
            trees.push(self.db.open_tree(tree)?);
            batches.push(batch);
        }
        trees
            .as_slice()
            .transaction(
                |views: &Vec<TransactionalTree>| -> ConflictableTransactionResult<(), ()> {
                    for (view, batch) in views.iter().zip(&batches) {
                        view.apply_batch(batch)?;
                    }
                    Ok(())
                },
            )
            .map_err(|e| format!("the sled transaction failed: {e:?}"))?;
        self.db.flush()?;
        Ok(())
    }
}

/// The one table of the plain redb peer.
pub(crate) const REDB_TABLE: redb::TableDefinition<'static, &'static [u8], &'static [u8]> =
    redb::TableDefinition::new("records");

/// redb with its defaults. Writes commit with `Durability::None` (as
/// shredkv's buffered writes do); erasures and flushes commit with
/// `Durability::Immediate`, which also persists every earlier commit.
struct RedbStore {
    db: RedbKv,
}

impl RedbStore {
    fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            db: RedbKv::open(dir)?,
        })
    }

    fn write(&self, durable: bool) -> Result<redb::WriteTransaction> {
        self.db.write(durable)
    }
}

impl Store for RedbStore {
    fn peer(&self) -> Peer {
        Peer::Redb
    }

    fn register(&self, _subject: &str) -> Result<()> {
        Ok(())
    }

    fn write_batch(&self, records: &[Record<'_>]) -> Result<()> {
        let txn = self.write(false)?;
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            for r in records {
                table.insert(tree_key(r.subject, r.key).as_slice(), r.value)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn put(&self, subject: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let txn = self.write(false)?;
        txn.open_table(REDB_TABLE)?
            .insert(tree_key(subject, key).as_slice(), value)?;
        txn.commit()?;
        Ok(())
    }

    fn get(&self, subject: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        use redb::ReadableDatabase;
        let txn = self.db.database().begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        match table.get(tree_key(subject, key).as_slice())? {
            Some(value) => {
                out.clear();
                out.extend_from_slice(value.value());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan(&self, subject: &str, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        use redb::ReadableDatabase;
        let txn = self.db.database().begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        let start = subject.as_bytes();
        let end = prefix_end(start).unwrap_or_default();
        let mut n = 0;
        for entry in table.range::<&[u8]>(start..end.as_slice())? {
            let (k, v) = entry?;
            visit(k.value().get(start.len()..).unwrap_or_default(), v.value());
            n += 1;
        }
        Ok(n)
    }

    fn erase(&self, subject: &str) -> Result<()> {
        let start = subject.as_bytes();
        let end = prefix_end(start).unwrap_or_default();
        let txn = self.write(true)?;
        txn.open_table(REDB_TABLE)?
            .retain_in::<&[u8], _>(start..end.as_slice(), |_, _| false)?;
        txn.commit()?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.write(true)?.commit()?;
        Ok(())
    }

    fn commit_to_trees(&self, entries: &[TreeEntry<'_>]) -> Result<()> {
        let txn = self.write(true)?;
        // Each table opened once, as shredkv's commit does.
        let mut tables = std::collections::BTreeMap::new();
        for entry in entries {
            let table = match tables.entry(entry.tree) {
                std::collections::btree_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => slot.insert(
                    txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new(entry.tree))?,
                ),
            };
            table.insert(entry.key, entry.value)?;
        }
        drop(tables);
        txn.commit()?;
        Ok(())
    }
}

/// SQLite, as an engineer would set it up for erasure: `secure_delete=ON`
/// (deleted content is overwritten), WAL with `synchronous=NORMAL` (commits
/// are not synced, like the other peers' buffered writes), an index on
/// subject, and `DELETE ... WHERE subject = ?` committed with
/// `synchronous=FULL` (synced before it returns).
struct SqliteStore {
    conn: Connection,
}

const SQLITE_UPSERT: &str = "INSERT INTO records (subject, key, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (subject, key) DO UPDATE SET value = excluded.value";

impl SqliteStore {
    fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("store.sqlite"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite refused WAL mode (got {mode})").into());
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA secure_delete = ON;
             CREATE TABLE IF NOT EXISTS records (
                 id INTEGER PRIMARY KEY,
                 subject TEXT NOT NULL,
                 key BLOB NOT NULL,
                 value BLOB NOT NULL
             );
             CREATE UNIQUE INDEX IF NOT EXISTS records_by_subject ON records (subject, key);",
        )?;
        Ok(Self { conn })
    }
}

impl Store for SqliteStore {
    fn peer(&self) -> Peer {
        Peer::Sqlite
    }

    fn register(&self, _subject: &str) -> Result<()> {
        Ok(())
    }

    fn write_batch(&self, records: &[Record<'_>]) -> Result<()> {
        let txn = self.conn.unchecked_transaction()?;
        {
            let mut stmt = txn.prepare_cached(SQLITE_UPSERT)?;
            for r in records {
                stmt.execute(params![r.subject, r.key, r.value])?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn put(&self, subject: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached(SQLITE_UPSERT)?
            .execute(params![subject, key, value])?;
        Ok(())
    }

    fn get(&self, subject: &str, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM records WHERE subject = ?1 AND key = ?2")?;
        let found = stmt
            .query_row(params![subject, key], |row| {
                out.clear();
                out.extend_from_slice(row.get_ref(0)?.as_blob()?);
                Ok(())
            })
            .optional()?;
        Ok(found.is_some())
    }

    fn scan(&self, subject: &str, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<usize> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM records WHERE subject = ?1")?;
        let mut rows = stmt.query(params![subject])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            visit(row.get_ref(0)?.as_blob()?, row.get_ref(1)?.as_blob()?);
            n += 1;
        }
        Ok(n)
    }

    fn erase(&self, subject: &str) -> Result<()> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let deleted = self
            .conn
            .prepare_cached("DELETE FROM records WHERE subject = ?1")
            .and_then(|mut stmt| stmt.execute(params![subject]));
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        deleted?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // Syncs the WAL, copies it into the database file, syncs that.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every peer honours the trait's contract on a few records.
    #[test]
    fn every_peer_stores_scans_and_erases() {
        for peer in Peer::ALL {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = peer.open(dir.path()).expect("open");
            assert_eq!(store.peer(), peer);
            for subject in ["subj00000001", "subj00000002"] {
                store.register(subject).expect("register");
            }
            let records: Vec<Record<'_>> = (0..3u8)
                .map(|i| Record {
                    subject: "subj00000001",
                    key: [b"key-a", b"key-b", b"key-c"][usize::from(i)],
                    value: b"value",
                })
                .collect();
            store.write_batch(&records).expect("batch");
            store.put("subj00000002", b"key-a", b"other").expect("put");
            store
                .put("subj00000001", b"key-a", b"new value")
                .expect("overwrite");
            store.flush().expect("flush");

            let mut out = Vec::new();
            assert!(store.get("subj00000001", b"key-a", &mut out).expect("get"));
            assert_eq!(out, b"new value", "{peer}");
            assert!(!store.get("subj00000001", b"key-z", &mut out).expect("get"));
            let mut keys = Vec::new();
            let n = store
                .scan("subj00000001", &mut |k, _| keys.push(k.to_vec()))
                .expect("scan");
            keys.sort();
            assert_eq!(n, 3, "{peer}");
            assert_eq!(keys, [b"key-a", b"key-b", b"key-c"], "{peer}");

            store.erase("subj00000001").expect("erase");
            let left = if matches!(
                peer,
                Peer::ShredkvSled | Peer::ShredkvRedb | Peer::SledFloor | Peer::RedbFloor
            ) {
                // An erased subject is refused, not empty.
                assert!(store.get("subj00000001", b"key-a", &mut out).is_err());
                0
            } else {
                assert!(!store.get("subj00000001", b"key-a", &mut out).expect("get"));
                store.scan("subj00000001", &mut |_, _| {}).expect("scan")
            };
            assert_eq!(left, 0, "{peer}");
            assert!(store.get("subj00000002", b"key-a", &mut out).expect("get"));
            assert_eq!(out, b"other", "{peer}");
        }
    }

    #[test]
    fn prefix_end_skips_every_extension() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
