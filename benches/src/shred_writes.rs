//! What a shred writes, as a floor: the entries of a whole-subject shred's
//! commit on redb, for the erase group's `*-shred-writes` floors, and the
//! test that keeps them in step with the engine.

use crate::TreeEntry;

/// What the commit of a whole-subject shred (one class, one bucket)
/// writes on a redb store: tree, key length, value length, as stored
/// (sealed). These are the ledger entry, the subject's state, the erased
/// data's removal deadline and two re-key debts, two key tombstones, the
/// audit entry and the retry receipt; the test below checks them against
/// what a shredkv-redb store hands its backend.
pub const SHRED_WRITES: [(&str, usize, usize); 9] = [
    ("ledger", 18, 42),
    ("deadlines", 27, 29),
    ("subjects", 17, 89),
    ("deadlines", 35, 29),
    ("vault", 26, 24),
    ("deadlines", 35, 29),
    ("vault", 26, 24),
    ("audit", 8, 139),
    ("meta", 24, 120),
];

/// One shred's entries of `SHRED_WRITES`, keyed by the subject (so each
/// shred writes new keys, as the engine's do).
pub struct ShredWrites {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

impl ShredWrites {
    /// The entries of one shred of `subject`.
    pub fn new(subject: &[u8]) -> Self {
        let (keys, values) = SHRED_WRITES
            .iter()
            .enumerate()
            .map(|(i, &(_, key_len, value_len))| {
                let index = u8::try_from(i).unwrap_or(u8::MAX);
                let mut key: Vec<u8> = subject.iter().copied().chain([index]).collect();
                key.resize(key_len.max(key.len()), 0);
                (key, vec![0xA5; value_len])
            })
            .unzip();
        Self { keys, values }
    }

    /// The entries, each with its tree, for [`crate::Store::commit_to_trees`].
    pub fn entries(&self) -> Vec<TreeEntry<'_>> {
        SHRED_WRITES
            .iter()
            .zip(self.keys.iter().zip(&self.values))
            .map(|(&(tree, _, _), (key, value))| TreeEntry { tree, key, value })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use shredkv::internal::{Tape, TestStore, open_with_tape};
    use shredkv::{Backend, Batch, Classes};

    use super::{SHRED_WRITES, ShredWrites};
    use crate::peers::{CLASS, Peer, shredkv_config};
    use crate::workload::value;

    /// The trees and sizes a shredkv-redb store, configured as the bench's
    /// peer, hands its backend when it shreds a subject of 100 records:
    /// the floor must write what the engine writes, or it bounds nothing.
    #[test]
    fn the_floor_writes_what_a_shred_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let tape = Tape::new();
        let (db, _) = open_with_tape(
            shredkv_config(dir.path(), Backend::Redb),
            &TestStore::Configured,
            &tape,
        )
        .expect("open");
        db.register_account("victim").expect("register");
        let mut batch = Batch::new();
        for r in 0..100u32 {
            batch.put("victim", CLASS, &r.to_be_bytes(), &value(u64::from(r)));
        }
        db.apply(batch).expect("load");
        db.flush().expect("flush");
        let _ = tape.take();
        db.shred("victim", Classes::All).expect("shred");
        let mut written: Vec<(String, usize, usize)> = tape
            .take()
            .into_iter()
            .map(|e| (e.tree, e.key.len(), e.value.len()))
            .collect();
        let mut floor: Vec<(String, usize, usize)> = SHRED_WRITES
            .iter()
            .map(|&(tree, key, value)| (tree.to_string(), key, value))
            .collect();
        written.sort();
        floor.sort();
        assert_eq!(
            written, floor,
            "SHRED_WRITES no longer matches a shred's commit"
        );
    }

    /// The plain peers' floor lands every entry in the tree it names, where
    /// a reopened store finds it: a floor that dropped entries would be
    /// quicker than the writes it stands for.
    #[test]
    fn the_plain_backends_commit_every_entry() {
        for peer in [Peer::Sled, Peer::Redb] {
            let dir = tempfile::tempdir().expect("dir");
            let writes = ShredWrites::new(b"subj00000001");
            let store = peer.open(dir.path()).expect("open");
            store
                .commit_to_trees(&writes.entries())
                .expect("commit to trees");
            drop(store);
            let mut found = Vec::new();
            if peer == Peer::Sled {
                let db = sled::open(dir.path().join("sled")).expect("reopen sled");
                for entry in writes.entries() {
                    let tree = db.open_tree(entry.tree).expect("tree");
                    found.push(tree.get(entry.key).expect("get").map(|v| v.to_vec()));
                }
            } else {
                use redb::{ReadableDatabase, TableDefinition};
                let db = redb::Database::open(dir.path().join("store.redb")).expect("reopen redb");
                let txn = db.begin_read().expect("read");
                for entry in writes.entries() {
                    let table = txn
                        .open_table(TableDefinition::<&[u8], &[u8]>::new(entry.tree))
                        .expect("table");
                    found.push(
                        table
                            .get(entry.key)
                            .expect("get")
                            .map(|v| v.value().to_vec()),
                    );
                }
            }
            let expected: Vec<Option<Vec<u8>>> = writes
                .entries()
                .iter()
                .map(|e| Some(e.value.to_vec()))
                .collect();
            assert_eq!(found, expected, "{peer}");
        }
    }
}
