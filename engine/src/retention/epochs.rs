//! Epochs: rotating the key-encryption key and destroying old ones (G2).
//!
//! The key tree's root and the store secret are wrapped under the current
//! epoch key (and, in a store older than the tree until its first rotation,
//! data keys too). Compaction rotates the epoch every period P (see
//! [`Timeline`]): it creates a new epoch key, re-wraps the store secret and
//! the root under it (and moves any data key still under an epoch under the
//! tree), and records when the old epoch retired. A retired epoch key is
//! destroyed once the timeline's epoch lifetime L has passed since it
//! *started*, and never while the root or a live entry is still wrapped
//! under it.
//!
//! Why that bound: a data key destroyed at `d` has wrapped copies in the
//! backend's old pages and in backups under its bottom node's generation,
//! which opens through the generations above it up to a root generation
//! wrapped under the epoch current when its path was last re-keyed. The
//! path is re-keyed by the first compaction after `d` (`Due::RekeyNode`),
//! at `d' ≥ d`, before that compaction touches epochs; the epoch current at
//! `d'` started at `s ≤ d'` and is destroyed at the first compaction after
//! `s + L ≤ d' + L`. Compaction processes due erasures and node re-keys
//! before it rotates, so a root generation that opens a destroyed key is
//! never re-wrapped under the new epoch first. A backup stays restorable
//! for at least `L − P`; older backups cannot be decrypted, by design.
//!
//! A store destroys only epochs it started or inherited (recorded in its
//! meta): a key provider shared with another store holds that store's too.
//!
//! [`Timeline`]: crate::retention::timeline::Timeline

use std::collections::BTreeSet;
use std::ops::{Bound, ControlFlow};

use jiff::Timestamp;
use shredkv_crypto::{EpochId, KeyId, WrapContext, WrappedKey};

use crate::audit::{AuditEvent, PendingEntry};
use crate::db::{Db, DbInner, meta, meta_get};
use crate::error::{Error, Result};
use crate::retention::compaction::CompactionReport;
use crate::retention::poisoned::{self, FailureKind, Poisoned};
use crate::storage::{Durability, Order, Tree, WriteBatch};
use crate::vault::tree::NewNodes;
use crate::vault::{KeyState, VaultEntry, Wrapped};

/// Vault entries re-wrapped per batch.
const REWRAP_PAGE: usize = 512;

/// What an epoch rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochReport {
    /// The epoch created, if one was.
    pub created: Option<u32>,
    /// Vault entries re-wrapped under the current epoch.
    pub keys_rewrapped: u64,
    /// Epoch keys destroyed.
    pub epochs_destroyed: u64,
}

fn epoch_meta_key(prefix: &[u8], epoch: EpochId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&epoch.0.to_be_bytes());
    key
}

impl DbInner {
    pub(crate) fn epoch_time(&self, prefix: &[u8], epoch: EpochId) -> Result<Option<i64>> {
        let key = epoch_meta_key(prefix, epoch);
        Ok(meta_get(self.storage.as_ref(), &key)?
            .and_then(|b| b.as_slice().try_into().ok())
            .map(i64::from_be_bytes))
    }

    fn record_epoch_time(&self, prefix: &[u8], epoch: EpochId, at: i64) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            Tree::Meta,
            epoch_meta_key(prefix, epoch),
            at.to_be_bytes().to_vec(),
        );
        Ok(self.storage.apply(&batch, Durability::Durable)?)
    }

    /// Rotates when the period has passed, finishes an interrupted re-wrap,
    /// and destroys epochs that no purge window needs any more.
    pub(crate) fn maintain_epochs(
        &self,
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let current = self.vault.current_epoch();
        let started = match self.epoch_time(meta::EPOCH_STARTED, current)? {
            Some(at) => at,
            None => {
                self.record_epoch_time(meta::EPOCH_STARTED, current, now.as_second())?;
                now.as_second()
            }
        };
        if now.as_second().saturating_sub(started) >= self.timeline.rotation {
            self.rotate_locked(now, report)?;
        } else if meta_get(self.storage.as_ref(), meta::REWRAP_PENDING)?.is_some() {
            report.keys_rewrapped += self.rewrap_all(now)?;
        }
        self.destroy_retired_epochs(now, report)
    }

    /// Creates a new epoch and re-wraps the store secret and the key tree's
    /// root under it (and moves any key still under an epoch under the tree).
    pub(crate) fn rotate_locked(
        &self,
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<EpochId> {
        let provider = self.vault.provider();
        let old = self.vault.current_epoch();
        let new = provider.create_epoch()?;
        let wrapped = meta_get(self.storage.as_ref(), meta::STORE_SECRET)?.unwrap_or_default();
        let wrapped = WrappedKey::from_bytes(&wrapped).map_err(|source| Error::Corrupt {
            location: crate::db::meta_location(meta::STORE_SECRET),
            source,
        })?;
        let secret = provider.unwrap(&WrapContext::StoreSecret, &wrapped)?;
        let rewrapped = provider.wrap(new, &WrapContext::StoreSecret, &secret)?;
        drop(secret);
        let mut batch = WriteBatch::new();
        batch.put(Tree::Meta, meta::EPOCH, new.0.to_be_bytes().to_vec());
        batch.put(
            Tree::Meta,
            meta::STORE_SECRET,
            rewrapped.as_bytes().to_vec(),
        );
        batch.put(
            Tree::Meta,
            epoch_meta_key(meta::EPOCH_STARTED, new),
            now.as_second().to_be_bytes().to_vec(),
        );
        batch.put(
            Tree::Meta,
            epoch_meta_key(meta::EPOCH_RETIRED, old),
            now.as_second().to_be_bytes().to_vec(),
        );
        batch.put(
            Tree::Meta,
            meta::REWRAP_PENDING,
            new.0.to_be_bytes().to_vec(),
        );
        let entry = PendingEntry::new(
            AuditEvent::EpochCreated,
            None,
            None,
            format!("{new} created; {old} retired"),
        );
        if let Err(err) = self.audit.commit(
            self.storage.as_ref(),
            batch,
            &[entry],
            now,
            Durability::Durable,
        ) {
            // The batch may have landed (a sync can fail after the write
            // did): take the current epoch from the store, not from memory.
            if let Ok(Some(stored)) = meta_get(self.storage.as_ref(), meta::EPOCH)
                && let Ok(bytes) = <[u8; 4]>::try_from(stored.as_slice())
            {
                self.vault
                    .set_current_epoch(EpochId(u32::from_be_bytes(bytes)));
            }
            return Err(err);
        }
        self.vault.set_current_epoch(new);
        report.epochs_created += 1;
        report.keys_rewrapped += self.rewrap_all(now)?;
        Ok(new)
    }

    /// Re-wraps the key tree's root under the current epoch and, until the
    /// tree holds every key, moves every live vault entry still under an
    /// epoch under the tree. Each page of those holds the gate's write lock
    /// over its subjects, so no erasure can tombstone an entry between its
    /// read and its re-wrapped write.
    fn rewrap_all(&self, now: Timestamp) -> Result<u64> {
        let current = self.vault.current_epoch();
        let mut total = self.rewrap_roots(current, now)?;
        let mut batch = WriteBatch::new();
        if meta_get(self.storage.as_ref(), meta::KEY_TREE_WHOLE)?.is_none() {
            // Per key: its moved entry, the removal of any lost mark, and
            // the nodes its path lacks (a few, shared by every key).
            let page_size = self.batch_page(REWRAP_PAGE, 3);
            for tree in crate::vault::layout::TREES {
                total += self.rewrap_tree(tree, current, page_size, now)?;
            }
            batch.put(Tree::Meta, meta::KEY_TREE_WHOLE, Vec::new());
        }
        batch.remove(Tree::Meta, meta::REWRAP_PENDING);
        let entry = PendingEntry::new(
            AuditEvent::EpochCreated,
            None,
            None,
            format!("{total} keys re-wrapped under {current}"),
        );
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &[entry],
            now,
            Durability::Durable,
        )?;
        Ok(total)
    }

    /// Re-wraps the key tree's roots under `current`, once no node debt is
    /// pending and no erasure is under way (every gate stripe held): a root
    /// generation that opens a destroyed key is never wrapped under an
    /// epoch newer than the destruction, so the epoch a ledger entry names
    /// bounds every copy of what it erased (certificates rely on it). Debts
    /// that arrive meanwhile are paid first; after `ROOT_TRIES` rounds of
    /// them the rotation is left for the next pass.
    fn rewrap_roots(&self, current: EpochId, now: Timestamp) -> Result<u64> {
        const ROOT_TRIES: usize = 16;
        for _ in 0..ROOT_TRIES {
            let everyone = self.gate.write_all();
            if !self.node_debts_pending(now)? {
                let _creating = self.vault.creation_lock();
                let _rekeying = self.vault.tree().write_lock();
                // One root per live day forest: in batches the backend takes.
                let limit = self.storage.max_batch_ops().unwrap_or(usize::MAX).max(1);
                let mut rewrapped = 0;
                loop {
                    let mut batch = WriteBatch::new();
                    let page = self.vault.tree().rewrap_roots(current, limit, &mut batch)?;
                    if page == 0 {
                        return Ok(rewrapped);
                    }
                    self.storage.apply(&batch, Durability::Durable)?;
                    rewrapped += page;
                }
            }
            drop(everyone);
            self.pay_node_debts(now, &mut CompactionReport::default())?;
        }
        Err(Error::InvalidArgument {
            what: "epoch rotation",
            detail: format!(
                "erasures kept owing key tree re-keys through {ROOT_TRIES} rounds; the root's \
                 re-wrap is left for the next compaction pass"
            ),
        })
    }

    /// [`DbInner::rewrap_all`]'s move of one of the vault's trees.
    fn rewrap_tree(
        &self,
        tree: Tree,
        current: EpochId,
        page_size: usize,
        now: Timestamp,
    ) -> Result<u64> {
        let mut total = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut page: Vec<KeyId> = Vec::new();
            let mut last = None;
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            self.storage.scan(
                tree,
                start,
                Bound::Unbounded,
                Order::Ascending,
                &mut |k, v| {
                    last = Some(k.to_vec());
                    if let (Some(id), Ok(entry)) =
                        (crate::vault::layout::id_at(tree, k), VaultEntry::decode(v))
                        && entry.state == KeyState::Active
                        && matches!(entry.wrapped, Some(Wrapped::Epoch(_)))
                    {
                        page.push(id);
                    }
                    if page.len() >= page_size {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
            let Some(last) = last else { break };
            after = Some(last);
            if page.is_empty() {
                continue;
            }
            let tags: Vec<_> = page
                .iter()
                .map(|id| id.subject)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let _exclusive = self.gate.write(&tags);
            let _creating = self.vault.creation_lock();
            let mut batch = WriteBatch::new();
            let mut made = NewNodes::default();
            let mut lost = Vec::new();
            for id in &page {
                match self
                    .vault
                    .move_under_tree(id, current, &mut batch, &mut made)
                {
                    Ok(true) => {
                        total += 1;
                        batch.remove(Tree::Poisoned, poisoned::lost_key(id));
                    }
                    Ok(false) => {}
                    // An entry that no longer authenticates cannot be
                    // re-wrapped, and must not keep its epoch alive (G2).
                    Err(err) if poisoned::is_item_failure(&err) => lost.push((*id, err)),
                    Err(err) => return Err(err),
                }
            }
            if let Err(err) = self.storage.apply(&batch, Durability::Buffered) {
                self.vault.tree().failed(made);
                return Err(err.into());
            }
            self.vault.tree().landed(made);
            for (id, err) in lost {
                self.set_aside_lost_key(&id, &err, now)?;
            }
        }
        Ok(total)
    }

    /// Records a vault entry that failed authentication when it was to be
    /// re-wrapped: set aside as lost (audited the first time). Its data is
    /// unreadable already; its epoch is destroyed on schedule all the same.
    pub(crate) fn set_aside_lost_key(&self, id: &KeyId, err: &Error, now: Timestamp) -> Result<()> {
        let key = poisoned::lost_key(id);
        let previous = self
            .storage
            .get(Tree::Poisoned, &key)?
            .and_then(|v| Poisoned::decode(&v).ok());
        let record = Poisoned::failed(
            previous,
            now.as_second(),
            FailureKind::of(err),
            now.as_second(),
        );
        let mut batch = WriteBatch::new();
        batch.put(Tree::Poisoned, key, record.encode());
        let audit = if previous.is_none() {
            vec![PendingEntry::new(
                AuditEvent::ItemSetAside,
                Some(id.subject),
                Some(id.class),
                format!(
                    "data key bucket {} v{} lost: its vault entry cannot be re-wrapped ({err}); its epoch is destroyed on schedule, and records under it read as tampered",
                    id.bucket, id.version
                ),
            )]
        } else {
            Vec::new()
        };
        self.audit.commit(
            self.storage.as_ref(),
            batch,
            &audit,
            now,
            Durability::Buffered,
        )
    }

    /// Epochs the key tree's root or some live vault entry is still wrapped
    /// under. Entries set aside as lost (they fail authentication) do not
    /// count: G2 wins. Once the tree holds every key, the root alone is
    /// read, not the vault.
    fn epochs_in_use(&self) -> Result<BTreeSet<EpochId>> {
        let mut used: BTreeSet<EpochId> = self.vault.tree().root_epochs()?;
        if meta_get(self.storage.as_ref(), meta::KEY_TREE_WHOLE)?.is_some() {
            return Ok(used);
        }
        let mut lost = BTreeSet::new();
        crate::storage::scan_prefix(
            self.storage.as_ref(),
            Tree::Poisoned,
            &[poisoned::LOST_KEY],
            &mut |k, _| {
                lost.insert(k.get(1..).unwrap_or_default().to_vec());
                ControlFlow::Continue(())
            },
        )?;
        // A lost key destroyed since (its subject erased) is no longer lost.
        let mut settled = WriteBatch::new();
        for id in lost.iter().filter_map(|k| KeyId::from_bytes(k)) {
            if let Ok(Some(entry)) = self.vault.read_entry(&id)
                && entry.state == KeyState::Destroyed
            {
                settled.remove(Tree::Poisoned, poisoned::lost_key(&id));
            }
        }
        if !settled.is_empty() {
            self.storage.apply(&settled, Durability::Buffered)?;
        }
        crate::vault::layout::scan_all(self.storage.as_ref(), &mut |tree, k, v| {
            if let Ok(VaultEntry {
                state: KeyState::Active,
                wrapped: Some(Wrapped::Epoch(w)),
                ..
            }) = VaultEntry::decode(v)
            {
                // Lost marks name key ids; an entry whose key does not
                // decode keeps its epoch alive (it is not known lost).
                let is_lost = crate::vault::layout::id_at(tree, k)
                    .is_some_and(|id| lost.contains(id.to_bytes().as_slice()));
                if !is_lost {
                    used.insert(w.epoch());
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(used)
    }

    fn destroy_retired_epochs(&self, now: Timestamp, report: &mut CompactionReport) -> Result<()> {
        if meta_get(self.storage.as_ref(), meta::REWRAP_PENDING)?.is_some() {
            return Ok(());
        }
        let current = self.vault.current_epoch();
        // Keys destroyed while an epoch was current may have been wrapped by
        // it from the moment it started; destroying it by `started + L`
        // bounds every copy's life (see the timeline).
        let delay = self.timeline.epoch_lifetime;
        let mut candidates = Vec::new();
        for epoch in self.vault.provider().live_epochs()? {
            if epoch >= current {
                continue;
            }
            // Only epochs this store started (or inherited with its data) are
            // its to destroy: a key provider shared with another store (a
            // restored copy, say) holds that store's epochs too.
            if let Some(started) = self.epoch_time(meta::EPOCH_STARTED, epoch)?
                && now.as_second().saturating_sub(started) >= delay
            {
                candidates.push(epoch);
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        let mut in_use = self.epochs_in_use()?;
        if candidates.iter().any(|e| in_use.contains(e)) {
            self.rewrap_all(now)?;
            in_use = self.epochs_in_use()?;
        }
        for epoch in candidates {
            if in_use.contains(&epoch) {
                continue;
            }
            self.vault.provider().destroy_epoch(epoch)?;
            let entry = PendingEntry::new(
                AuditEvent::EpochDestroyed,
                None,
                None,
                format!("{epoch} destroyed"),
            );
            self.audit.commit(
                self.storage.as_ref(),
                WriteBatch::new(),
                &[entry],
                now,
                Durability::Durable,
            )?;
            report.epochs_destroyed += 1;
        }
        Ok(())
    }
}

impl Db {
    /// Rotates the epoch now (also done by compaction on schedule): the
    /// paths of destroyed keys are re-keyed first, then a new epoch key wraps
    /// the store secret and the key tree's root (a store older than the tree
    /// also has its data keys moved under it, once); epochs past their wait
    /// are destroyed. Its cost does not grow with the number of keys.
    ///
    /// # Errors
    /// Key provider and storage failures; an interrupted re-wrap resumes at
    /// the next compaction, and no epoch is destroyed until it completes.
    pub fn rotate_epoch(&self) -> Result<EpochReport> {
        let inner = &self.inner;
        let _single = inner
            .compaction
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = inner.clock.now();
        let mut report = CompactionReport::default();
        // Destroyed keys' paths first, as compaction does.
        inner.pay_node_debts(now, &mut report)?;
        let created = inner.rotate_locked(now, &mut report)?;
        inner.destroy_retired_epochs(now, &mut report)?;
        Ok(EpochReport {
            created: Some(created.0),
            keys_rewrapped: report.keys_rewrapped,
            epochs_destroyed: report.epochs_destroyed,
        })
    }
}
