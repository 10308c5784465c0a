//! The sealed view of a store: a MAC over every control-plane value.
//!
//! The records (AES-GCM), the wrapped keys (AES-GCM) and the audit chain
//! (its own keyed chain) authenticate themselves. Everything else the engine
//! keeps — subject records, the deadline index, holds, the ledger, seal
//! counts, re-key debts, parked erasures, set-aside items and most of meta —
//! would otherwise be protected by a CRC only, which anyone can recompute.
//! This view appends to each such value
//!
//! ```text
//! stored = value ‖ HMAC-SHA256(control key, tree name ‖ 0 ‖ len(key) u32 ‖ key ‖ value)[..16]
//!   control key = HKDF-SHA256(store secret, "shredkv/v1/control-plane")
//! ```
//!
//! and checks it on every read, so whoever can write the files but lacks the
//! store's keys cannot add a value (a hold, a restriction), edit one (push a
//! deadline out), or move one to another key or tree. A value that fails is
//! never handed up as it is:
//!
//! - **meta** (class numbering, policy digest, epoch times, markers): the read
//!   fails — the store refuses to serve on a tampered configuration;
//! - **decoded trees** (subjects, holds, ledger, seals, poisoned): the decoder
//!   receives [`UNAUTHENTICATED`] and reports [`FormatError::Unauthenticated`]
//!   wherever it reports damage today (`Error::Corrupt` naming the location);
//! - **schedule trees** (deadlines, blocked, debts: the key is the content,
//!   and an entry only ever makes the engine erase, re-key or destroy
//!   sooner): the entry is acted on all the same. Ignoring it would let
//!   damage drop an erasure; obeying a forged one can only hasten what the
//!   forger, able to delete the files, could do anyway. The engine errs on
//!   the side of erasure, as it does for a damaged ledger entry.
//!
//! [`SealedStorage::sweep`] lists every value that fails, for `Db::verify`.
//! A MAC cannot show that a value was *removed*; docs/threat-model.md says
//! what deletion can and cannot do.
//!
//! [`FormatError::Unauthenticated`]: shredkv_crypto::FormatError::Unauthenticated

use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::sync::Arc;

use shredkv_crypto::TagKey;

use super::{
    Backend, Durability, Op, Order, Space, Storage, StorageError, StorageErrorKind, Tree,
    WriteBatch,
};
use crate::codec::UNAUTHENTICATED;

/// Length of the MAC appended to each control value.
pub(crate) const MAC_LEN: usize = 16;
/// Entries per page when sealing an existing store or sweeping one.
const PAGE: usize = 1024;

/// How a tree's values are guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Authenticated by its own format (records, wrapped keys, audit) or
    /// read before the store secret is known (meta's identity keys).
    Own,
    /// Meta: a failure fails the read.
    Strict,
    /// Decoded values: a failure reaches the decoder as [`UNAUTHENTICATED`].
    Decoded,
    /// Key-only entries that schedule work: a failure is still acted on
    /// (reported by the sweep).
    Schedule,
}

/// A [`Storage`] that seals and checks the control-plane values of `inner`.
pub(crate) struct SealedStorage {
    inner: Arc<dyn Storage>,
    key: TagKey,
    /// Meta keys left unsealed: read before the store secret is known.
    identity_keys: &'static [&'static [u8]],
    path: PathBuf,
}

/// A control value that failed its MAC, found by [`SealedStorage::sweep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unauthenticated {
    pub(crate) tree: Tree,
    pub(crate) key: Vec<u8>,
}

impl SealedStorage {
    /// What a read of `key` returns, given what the backend holds there
    /// (see the module docs for each guard's rule).
    fn unseal(
        &self,
        tree: Tree,
        key: &[u8],
        stored: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        let guard = self.guard(tree, key);
        if guard == Guard::Own {
            return Ok(Some(stored));
        }
        // The value is the stored bytes' prefix: kept in place, not copied.
        match (self.open(tree, key, &stored).map(<[u8]>::len), guard) {
            (Some(len), _) => {
                let mut value = stored;
                value.truncate(len);
                Ok(Some(value))
            }
            (None, Guard::Strict) => Err(self.refused(tree, key)),
            (None, Guard::Decoded) => Ok(Some(UNAUTHENTICATED.to_vec())),
            (None, _) => Ok(Some(unsealed_anyway(&stored).to_vec())),
        }
    }

    /// A sealed view of `inner`, keyed by `key` (derived from the store
    /// secret under `Label::ControlPlane`). `identity_keys` are the meta keys
    /// read before the secret is known; they stay as they are.
    pub(crate) fn new(
        inner: Arc<dyn Storage>,
        key: TagKey,
        identity_keys: &'static [&'static [u8]],
        path: PathBuf,
    ) -> Self {
        Self {
            inner,
            key,
            identity_keys,
            path,
        }
    }

    /// The storage underneath, whose control values carry their MACs (a
    /// backup copies these bytes as they are).
    pub(crate) fn raw(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    fn guard(&self, tree: Tree, key: &[u8]) -> Guard {
        match tree {
            Tree::Data | Tree::Vault | Tree::VaultDays | Tree::KeyNodes | Tree::Audit => Guard::Own,
            Tree::Meta if self.identity_keys.contains(&key) => Guard::Own,
            Tree::Meta => Guard::Strict,
            Tree::Deadlines | Tree::Blocked | Tree::Debts => Guard::Schedule,
            Tree::Subjects | Tree::Holds | Tree::Ledger | Tree::Seals | Tree::Poisoned => {
                Guard::Decoded
            }
        }
    }

    fn mac(&self, tree: Tree, key: &[u8], value: &[u8]) -> [u8; MAC_LEN] {
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes();
        let full = self
            .key
            .mac(&[tree.name().as_bytes(), &[0], &len, key, value]);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Whether a value written under `key` in `tree` carries this layer's
    /// MAC (every control value but those that authenticate themselves).
    fn needs_mac(&self, tree: Tree, key: &[u8]) -> bool {
        self.guard(tree, key) != Guard::Own
    }

    fn seal(&self, tree: Tree, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.len() + MAC_LEN);
        out.extend_from_slice(value);
        out.extend_from_slice(&self.mac(tree, key, value));
        out
    }

    /// The value inside `stored`, if its MAC holds. Constant-time compare:
    /// the MAC is the only secret-dependent thing here.
    fn open<'v>(&self, tree: Tree, key: &[u8], stored: &'v [u8]) -> Option<&'v [u8]> {
        let (value, mac) = stored.split_last_chunk::<MAC_LEN>()?;
        let expected = self.mac(tree, key, value);
        let diff = expected
            .iter()
            .zip(mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(value)
    }

    fn refused(&self, tree: Tree, key: &[u8]) -> StorageError {
        StorageError {
            backend: self.inner.backend(),
            action: "authenticate a control value",
            path: self.path.clone(),
            kind: StorageErrorKind::Tampered,
            source: format!(
                "the value under key {} in tree `{}` fails its MAC under the store secret: it was written, edited or moved by someone without the store's keys (tampering); run `shredkv verify` and restore from a backup",
                key_text(key),
                tree.name()
            )
            .into(),
        }
    }

    /// Seals every control value of the store that is not sealed yet (a
    /// store made before control values were sealed). Idempotent: a value
    /// that already carries a valid MAC is left alone, so an interrupted
    /// run is finished by the next one. Returns the values sealed.
    pub(crate) fn seal_existing(&self) -> Result<u64, StorageError> {
        let mut sealed = 0u64;
        for tree in Tree::ALL {
            if matches!(
                tree,
                Tree::Data | Tree::Vault | Tree::VaultDays | Tree::KeyNodes | Tree::Audit
            ) {
                continue;
            }
            let mut after: Option<Vec<u8>> = None;
            loop {
                let mut batch = WriteBatch::new();
                let mut seen = 0usize;
                let mut last = None;
                let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                self.inner.scan(
                    tree,
                    start,
                    Bound::Unbounded,
                    Order::Ascending,
                    &mut |k, v| {
                        seen += 1;
                        last = Some(k.to_vec());
                        if self.guard(tree, k) != Guard::Own && self.open(tree, k, v).is_none() {
                            batch.put(tree, k, self.seal(tree, k, v));
                        }
                        if seen >= PAGE {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    },
                )?;
                after = last;
                sealed += u64::try_from(batch.ops.len()).unwrap_or(u64::MAX);
                if !batch.is_empty() {
                    self.inner.apply(&batch, Durability::Buffered)?;
                }
                if seen < PAGE {
                    break;
                }
            }
        }
        self.inner.flush()?;
        Ok(sealed)
    }

    /// Every control value that fails its MAC (at most `limit`), for
    /// `Db::verify`.
    pub(crate) fn sweep(&self, limit: usize) -> Result<(Vec<Unauthenticated>, u64), StorageError> {
        let mut found = Vec::new();
        let mut checked = 0u64;
        for tree in Tree::ALL {
            if matches!(
                tree,
                Tree::Data | Tree::Vault | Tree::VaultDays | Tree::KeyNodes | Tree::Audit
            ) {
                continue;
            }
            self.inner.scan(
                tree,
                Bound::Unbounded,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, v| {
                    if self.guard(tree, k) == Guard::Own {
                        return ControlFlow::Continue(());
                    }
                    checked += 1;
                    if self.open(tree, k, v).is_none() && found.len() < limit {
                        found.push(Unauthenticated {
                            tree,
                            key: k.to_vec(),
                        });
                    }
                    ControlFlow::Continue(())
                },
            )?;
        }
        Ok((found, checked))
    }
}

/// A schedule entry's value without what would be its MAC (these values
/// are never decoded for decisions: the key is the content).
fn unsealed_anyway(stored: &[u8]) -> &[u8] {
    stored
        .len()
        .checked_sub(MAC_LEN)
        .and_then(|end| stored.get(..end))
        .unwrap_or_default()
}

/// A key for an error message: text if it is printable ASCII (meta keys),
/// else hex (tags and ids: no personal data either way).
fn key_text(key: &[u8]) -> String {
    if !key.is_empty() && key.iter().all(|b| b.is_ascii_graphic() || *b == b'/') {
        format!("`{}`", String::from_utf8_lossy(key))
    } else {
        shredkv_crypto::hex::encode(key)
    }
}

impl Storage for SealedStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let stored = self.inner.get(tree, key)?;
        self.unseal(tree, key, stored)
    }

    fn get_many(&self, tree: Tree, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let stored = self.inner.get_many(tree, keys)?;
        keys.iter()
            .zip(stored)
            .map(|(key, stored)| self.unseal(tree, key, stored))
            .collect()
    }

    fn scan(
        &self,
        tree: Tree,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let mut refused: Option<StorageError> = None;
        self.inner.scan(
            tree,
            start,
            end,
            order,
            &mut |k, v| match self.guard(tree, k) {
                Guard::Own => visit(k, v),
                guard => match (self.open(tree, k, v), guard) {
                    (Some(value), _) => visit(k, value),
                    (None, Guard::Strict) => {
                        refused = Some(self.refused(tree, k));
                        ControlFlow::Break(())
                    }
                    (None, Guard::Decoded) => visit(k, UNAUTHENTICATED),
                    (None, _) => visit(k, unsealed_anyway(v)),
                },
            },
        )?;
        refused.map_or(Ok(()), Err)
    }

    fn apply(&self, batch: &WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let covered = |op: &Op| match op {
            Op::Put { tree, key, .. } => self.needs_mac(*tree, key),
            Op::Remove { .. } => false,
        };
        // The hot path (records, keys) needs no copy.
        if !batch.ops.iter().any(covered) {
            return self.inner.apply(batch, durability);
        }
        // Op for op: the runs of removals stay where they were.
        let mut sealed = WriteBatch::with_capacity(batch.ops.len());
        sealed.neighbour_runs.clone_from(&batch.neighbour_runs);
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } if covered(op) => {
                    sealed.put(*tree, key.clone(), self.seal(*tree, key, value));
                }
                other => sealed.ops.push(other.clone()),
            }
        }
        self.inner.apply(&sealed, durability)
    }

    fn apply_owned(
        &self,
        mut batch: WriteBatch,
        durability: Durability,
    ) -> Result<(), StorageError> {
        for op in &mut batch.ops {
            if let Op::Put { tree, key, value } = op
                && self.needs_mac(*tree, key)
            {
                let mac = self.mac(*tree, key, value);
                value.extend_from_slice(&mac);
            }
        }
        self.inner.apply(&batch, durability)
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
        if self.guard(tree, key) == Guard::Own {
            self.inner.insert_new(tree, key, value, durability)
        } else {
            let sealed = self.seal(tree, key, value);
            self.inner.insert_new(tree, key, &sealed, durability)
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }

    fn space(&self) -> Result<Space, StorageError> {
        self.inner.space()
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use shredkv_crypto::Label;

    const IDENTITY: &[&[u8]] = &[b"format"];

    fn view(raw: &Arc<dyn Storage>, secret: u8) -> SealedStorage {
        SealedStorage::new(
            Arc::clone(raw),
            TagKey::derive(&[secret; 32], Label::ControlPlane),
            IDENTITY,
            PathBuf::from("/store"),
        )
    }

    fn put(s: &dyn Storage, tree: Tree, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::new();
        batch.put(tree, key, value.to_vec());
        s.apply(&batch, Durability::Durable).expect("apply");
    }

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn scanned(s: &dyn Storage, tree: Tree) -> Result<Entries, StorageError> {
        let mut out = Vec::new();
        s.scan(
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                ControlFlow::Continue(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn control_values_round_trip_and_carry_a_mac_on_disk() {
        let raw: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let sealed = view(&raw, 1);
        put(&sealed, Tree::Holds, b"h", b"hold");
        put(&sealed, Tree::Data, b"d", b"record");
        put(&sealed, Tree::Meta, b"format", b"\x02");
        assert_eq!(
            sealed.get(Tree::Holds, b"h").expect("get"),
            Some(b"hold".to_vec())
        );
        let stored = raw.get(Tree::Holds, b"h").expect("get").expect("present");
        assert_eq!(stored.len(), 4 + MAC_LEN);
        assert_eq!(&stored[..4], b"hold");
        // Own-authenticated and identity values are stored as given.
        assert_eq!(
            raw.get(Tree::Data, b"d").expect("get"),
            Some(b"record".to_vec())
        );
        assert_eq!(
            raw.get(Tree::Meta, b"format").expect("get"),
            Some(b"\x02".to_vec())
        );
        assert_eq!(
            scanned(&sealed, Tree::Holds).expect("scan"),
            vec![(b"h".to_vec(), b"hold".to_vec())]
        );
    }

    #[test]
    fn an_owned_batch_is_sealed_in_place_exactly_as_a_borrowed_one() {
        let batch = || {
            let mut batch = WriteBatch::new();
            batch.put(Tree::Audit, b"a", b"entry".to_vec());
            batch.put(Tree::Holds, b"h", b"hold".to_vec());
            batch.put(Tree::Data, b"d", b"record".to_vec());
            batch.put(Tree::Meta, b"format", b"\x02".to_vec());
            batch.remove(Tree::Deadlines, b"gone");
            batch
        };
        let (borrowed, owned): (Arc<dyn Storage>, Arc<dyn Storage>) = (
            Arc::new(MemoryStorage::new()),
            Arc::new(MemoryStorage::new()),
        );
        view(&borrowed, 1)
            .apply(&batch(), Durability::Durable)
            .expect("apply");
        view(&owned, 1)
            .apply_owned(batch(), Durability::Durable)
            .expect("apply owned");
        for tree in [Tree::Audit, Tree::Holds, Tree::Data, Tree::Meta] {
            let on_disk = scanned(owned.as_ref(), tree).expect("scan raw");
            assert_eq!(on_disk, scanned(borrowed.as_ref(), tree).expect("scan raw"));
            assert_eq!(on_disk.len(), 1, "{tree:?}");
        }
        // The MACs are real: the sealed view opens them, and an edited value
        // reads as unauthenticated.
        let sealed = view(&owned, 1);
        assert_eq!(
            sealed.get(Tree::Holds, b"h").expect("get"),
            Some(b"hold".to_vec())
        );
        let mut stored = owned.get(Tree::Holds, b"h").expect("get").expect("present");
        stored[0] ^= 1;
        put(owned.as_ref(), Tree::Holds, b"h", &stored);
        assert_eq!(
            sealed.get(Tree::Holds, b"h").expect("get"),
            Some(UNAUTHENTICATED.to_vec())
        );
    }

    #[test]
    fn forged_edited_and_moved_values_are_refused_by_kind() {
        let raw: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let sealed = view(&raw, 1);
        put(&sealed, Tree::Subjects, b"s1", b"subject one");
        put(&sealed, Tree::Deadlines, b"d1", b"");
        put(&sealed, Tree::Meta, b"class/x", b"\x00\x01");
        // Forged: written without the key (CRC-only formats can be forged).
        put(
            raw.as_ref(),
            Tree::Holds,
            b"forged",
            b"a hold nobody placed",
        );
        put(raw.as_ref(), Tree::Deadlines, b"d2", b"");
        // Moved: a valid sealed value under another key.
        let moved = raw
            .get(Tree::Subjects, b"s1")
            .expect("get")
            .expect("present");
        put(raw.as_ref(), Tree::Subjects, b"s2", &moved);
        // Sealed under another store's secret.
        put(&view(&raw, 2), Tree::Ledger, b"l", b"erased");

        assert_eq!(
            sealed.get(Tree::Holds, b"forged").expect("get"),
            Some(UNAUTHENTICATED.to_vec())
        );
        assert_eq!(
            sealed.get(Tree::Subjects, b"s2").expect("get"),
            Some(UNAUTHENTICATED.to_vec())
        );
        assert_eq!(
            sealed.get(Tree::Ledger, b"l").expect("get"),
            Some(UNAUTHENTICATED.to_vec())
        );
        // Schedule entries are acted on all the same (the sweep reports them).
        assert_eq!(
            sealed.get(Tree::Deadlines, b"d2").expect("get"),
            Some(Vec::new())
        );
        assert_eq!(
            scanned(&sealed, Tree::Deadlines).expect("scan"),
            vec![(b"d1".to_vec(), Vec::new()), (b"d2".to_vec(), Vec::new())]
        );
        // Meta: an edited class number fails the read and the scan.
        let mut edited = raw
            .get(Tree::Meta, b"class/x")
            .expect("get")
            .expect("present");
        edited[1] ^= 1;
        put(raw.as_ref(), Tree::Meta, b"class/x", &edited);
        let err = sealed.get(Tree::Meta, b"class/x").expect_err("refused");
        assert!(
            err.to_string()
                .contains("`class/x` in tree `meta` fails its MAC"),
            "{err}"
        );
        assert!(scanned(&sealed, Tree::Meta).is_err());
        assert!(
            sealed.get_many(Tree::Meta, &[b"class/x"]).is_err(),
            "a read of many keys refuses what a read of one does"
        );
        // Reads of many keys follow each key's rule, in order.
        let keys: [&[u8]; 4] = [b"s1", b"s2", b"none", b"s1"];
        let one_by_one: Vec<_> = keys
            .iter()
            .map(|k| sealed.get(Tree::Subjects, k).expect("get"))
            .collect();
        assert_eq!(
            sealed.get_many(Tree::Subjects, &keys).expect("get_many"),
            one_by_one
        );
        assert_eq!(one_by_one[0].as_deref(), Some(&b"subject one"[..]));
        assert_eq!(one_by_one[1].as_deref(), Some(UNAUTHENTICATED));
        assert_eq!(one_by_one[2], None);

        let (found, checked) = sealed.sweep(100).expect("sweep");
        let mut names: Vec<(&str, Vec<u8>)> = found
            .iter()
            .map(|u| (u.tree.name(), u.key.clone()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("deadlines", b"d2".to_vec()),
                ("holds", b"forged".to_vec()),
                ("ledger", b"l".to_vec()),
                ("meta", b"class/x".to_vec()),
                ("subjects", b"s2".to_vec()),
            ]
        );
        assert_eq!(checked, 7);
    }

    #[test]
    fn sealing_an_existing_store_is_idempotent() {
        let raw: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        for i in 0..2500u32 {
            put(raw.as_ref(), Tree::Subjects, &i.to_be_bytes(), b"legacy");
        }
        put(raw.as_ref(), Tree::Meta, b"format", b"\x01");
        put(raw.as_ref(), Tree::Meta, b"policy_digest", b"digest");
        put(raw.as_ref(), Tree::Data, b"r", b"record");
        let sealed = view(&raw, 7);
        assert_eq!(sealed.seal_existing().expect("seal"), 2501);
        assert_eq!(sealed.seal_existing().expect("again"), 0);
        assert_eq!(sealed.sweep(10).expect("sweep").0, Vec::new());
        assert_eq!(
            sealed
                .get(Tree::Subjects, &7u32.to_be_bytes())
                .expect("get"),
            Some(b"legacy".to_vec())
        );
        assert_eq!(
            raw.get(Tree::Data, b"r").expect("get"),
            Some(b"record".to_vec())
        );
    }
}
