//! Paying the key tree's node debts: the path re-key (`vault::tree`).
//!
//! A destroyed data key's tombstone leaves a debt on its bottom node, due at
//! once (`Due::RekeyNode`). Every compaction pass, after its due erasures
//! and before it touches epochs, re-keys each node on the union of the
//! debtors' paths once, bottom up, then removes the debts (durably). A crash
//! part way leaves the debts, and the next pass re-keys the whole union
//! again: a node re-keyed twice only costs its children's re-wraps.
//!
//! A day's expiry leaves one debt on each forest it touched
//! (`Due::RetireForest`) instead of one per key. A day forest (the keys
//! expiring on one day) whose debts are paid once it holds no live key is
//! removed whole instead of re-keyed: its nodes are deleted,
//! nothing is re-wrapped, and the copies of its keys die with the epochs
//! its root was wrapped under, as a re-keyed path's would. That is a day's
//! expiry: a cost of the day's keys and the forest's nodes, not of the
//! store.
//!
//! Why before the epochs: a root generation that opens a destroyed key must
//! not be re-wrapped under a new epoch, which would outlive the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Bound, ControlFlow};

use jiff::Timestamp;
use shredkv_crypto::{KeyId, NodeId, NodeWrapped, SubjectTag};

use crate::audit::{AuditEvent, PendingEntry};
use crate::db::DbInner;
use crate::error::{Error, Result};
use crate::retention::compaction::CompactionReport;
use crate::retention::deadlines::{self, Due};
use crate::storage::pauses::PausePoint;
use crate::storage::{Durability, Order, Tree, WriteBatch};
use crate::vault::layout::{self, Slot};
use crate::vault::tree::{
    NewNodes, SUBJECTS_FOREST, bottom_of, forest_of, is_bottom, node_location,
};
use crate::vault::{KeyState, VaultEntry, Wrapped};

/// A bottom node's live data keys under the tree: id, where the entry is,
/// the entry, and its wrap.
type DataChild = (KeyId, Slot, VaultEntry, NodeWrapped);

/// Nodes above the bottom re-keyed per batch (each writes itself and up to
/// 16 children).
const NODE_PAGE: usize = 64;
/// Ops per batch of bottom nodes on a backend without a batch limit.
const BOTTOM_BATCH_OPS: usize = 4096;

impl DbInner {
    /// Re-keys the paths of every node debt due at `now`, then removes
    /// those debts. The caller holds the compaction lock.
    pub(crate) fn pay_node_debts(
        &self,
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let end = deadlines::upper_bound(now.as_second());
        let mut debts: Vec<Vec<u8>> = Vec::new();
        let mut debtors: Vec<KeyId> = Vec::new();
        let mut retiring: BTreeSet<u32> = BTreeSet::new();
        self.storage.scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Excluded(&end),
            Order::Ascending,
            &mut |k, _| {
                match deadlines::decode_key(k) {
                    Some((_, Due::RekeyNode(id))) => {
                        debts.push(k.to_vec());
                        debtors.push(id);
                    }
                    Some((_, Due::RetireForest(forest))) => {
                        debts.push(k.to_vec());
                        retiring.insert(forest);
                    }
                    _ => {}
                }
                ControlFlow::Continue(())
            },
        )?;
        if debts.is_empty() {
            return Ok(());
        }
        let day_forests: BTreeSet<u32> = debtors
            .iter()
            .map(forest_of)
            .filter(|forest| *forest != SUBJECTS_FOREST)
            .chain(retiring.iter().copied())
            .collect();
        let removed = self.remove_dead_forests(&day_forests, report)?;
        // Every node on a path still to re-key, by depth.
        let mut levels: BTreeMap<u8, BTreeSet<NodeId>> = BTreeMap::new();
        for id in debtors
            .iter()
            .filter(|id| !removed.contains(&forest_of(id)))
        {
            let mut on_path = Some(bottom_of(id));
            while let Some(node) = on_path {
                levels.entry(node.depth).or_default().insert(node);
                on_path = node.parent();
            }
        }
        // A day forest whose expiry left live keys in it (a hold, a pass cut
        // short by its budget): which of its keys died is not recorded, so
        // all of it is re-keyed, a cost bounded by the forest's nodes.
        for forest in retiring.difference(&removed) {
            for node in self.vault.tree().forest_nodes(*forest)? {
                levels.entry(node.depth).or_default().insert(node);
            }
        }
        // Deepest first, so a node's children are re-keyed before it; a
        // day forest's bottom nodes share a depth with forest 0's uppers.
        for nodes in levels.values().rev() {
            let (bottoms, uppers): (Vec<NodeId>, Vec<NodeId>) =
                nodes.iter().copied().partition(|node| is_bottom(*node));
            if !bottoms.is_empty() {
                self.rekey_bottom_nodes(&bottoms, now, report)?;
            }
            for page in uppers.chunks(self.batch_page(NODE_PAGE, 17)) {
                self.rekey_upper_nodes(page, now, report)?;
            }
        }
        // Durable: a debt that reappeared after a crash would only cost a
        // second re-key, but the pass's re-keys must be on disk before the
        // epochs that follow rely on them. In batches the backend takes.
        let limit = self.storage.max_batch_ops().unwrap_or(usize::MAX).max(1);
        for page in debts.chunks(limit) {
            let mut paid = WriteBatch::new();
            for key in page {
                paid.remove(Tree::Deadlines, key.clone());
            }
            self.storage.apply(&paid, Durability::Durable)?;
        }
        Ok(())
    }

    /// Whether any node debt is due at `now` (every debt is due when its
    /// key died, so at or before the store's time).
    pub(crate) fn node_debts_pending(&self, now: Timestamp) -> Result<bool> {
        self.any_debt_due(now, |due| {
            matches!(due, Due::RekeyNode(_) | Due::RetireForest(_))
        })
    }

    /// Whether a debt over a key of `subject` is waiting (for certificates):
    /// one of its keys' own, or a whole forest's that holds one of its keys
    /// (an expiry's, or a restore's re-key of the whole tree; forest 0 holds
    /// every subject's scope keys).
    pub(crate) fn node_debt_pending_for(&self, subject: &SubjectTag) -> Result<bool> {
        let mut forests = BTreeSet::new();
        let own = self.any_debt_due(self.clock.now(), |due| match due {
            Due::RekeyNode(id) => id.subject == *subject,
            Due::RetireForest(forest) => {
                forests.insert(*forest);
                false
            }
            _ => false,
        })?;
        if own || forests.contains(&SUBJECTS_FOREST) {
            return Ok(true);
        }
        for forest in forests {
            let mut holds = false;
            layout::scan_day_values(
                self.storage.as_ref(),
                forest,
                &subject.0,
                &subject.0,
                &mut |_, _| {
                    holds = true;
                    ControlFlow::Break(())
                },
            )?;
            if holds {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether an item due by `now` satisfies `wanted`. Debts are due when
    /// their key died, so only the items due by now are read.
    fn any_debt_due(&self, now: Timestamp, mut wanted: impl FnMut(&Due) -> bool) -> Result<bool> {
        let end = deadlines::upper_bound(now.as_second());
        let mut found = false;
        self.storage.scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Excluded(&end),
            Order::Ascending,
            &mut |k, _| {
                found = deadlines::decode_key(k).is_some_and(|(_, due)| wanted(&due));
                if found {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        Ok(found)
    }

    /// Re-keys nodes above the bottom, one batch for `page`, under the
    /// vault's creation lock and the tree's write lock. Their children (one
    /// level down) were re-keyed before, in batches that landed.
    fn rekey_upper_nodes(
        &self,
        page: &[NodeId],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let epoch = self.vault.current_epoch();
        let creating = self.vault.creation_lock();
        let rekeying = self.vault.tree().write_lock();
        let mut batch = WriteBatch::new();
        let mut made = NewNodes::default();
        let mut lost = Vec::new();
        for node in page {
            let rekeyed = self.vault.tree().rekey(*node, epoch, &[], &mut batch)?;
            made.extend(rekeyed.made);
            lost.extend(rekeyed.lost_nodes);
        }
        if let Err(err) = self.storage.apply(&batch, Durability::Buffered) {
            self.vault.tree().failed(made);
            return Err(err.into());
        }
        self.vault.tree().landed(made);
        drop((rekeying, creating));
        report.nodes_rekeyed += page.len() as u64;
        for child in lost {
            self.audit_lost_node(child, now)?;
        }
        Ok(())
    }

    /// Re-keys bottom nodes, in batches of as many as the backend's batch
    /// limit takes with their live keys (at least one node a batch).
    fn rekey_bottom_nodes(
        &self,
        nodes: &[NodeId],
        now: Timestamp,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let room = self
            .storage
            .max_batch_ops()
            .unwrap_or(BOTTOM_BATCH_OPS)
            .saturating_sub(16)
            .max(1);
        let mut rest = nodes;
        while !rest.is_empty() {
            let mut page = Vec::new();
            let mut subjects = BTreeSet::new();
            let mut ops = 0usize;
            for node in rest {
                let (children, node_subjects) = self.data_children(*node)?;
                let cost = children.len() + 1;
                if !page.is_empty() && ops + cost > room {
                    break;
                }
                ops += cost;
                page.push(*node);
                subjects.extend(node_subjects);
            }
            rest = rest.get(page.len()..).unwrap_or_default();
            self.rekey_bottom_page(&page, subjects, now)?;
            report.nodes_rekeyed += page.len() as u64;
        }
        Ok(())
    }

    /// One batch of [`DbInner::rekey_bottom_nodes`], under the gate's write
    /// locks of the subjects whose keys the page wraps (so no erasure
    /// tombstones a key between its read here and its re-wrapped write),
    /// the vault's creation lock and the tree's write lock. `subjects` are
    /// those of the page's keys when it was read.
    fn rekey_bottom_page(
        &self,
        page: &[NodeId],
        mut subjects: BTreeSet<SubjectTag>,
        now: Timestamp,
    ) -> Result<()> {
        let epoch = self.vault.current_epoch();
        loop {
            let held: Vec<SubjectTag> = subjects.iter().copied().collect();
            let exclusive = self.gate.write(&held);
            let creating = self.vault.creation_lock();
            let rekeying = self.vault.tree().write_lock();
            let mut per_node = Vec::with_capacity(page.len());
            let mut now_subjects = BTreeSet::new();
            for node in page {
                let (children, node_subjects) = self.data_children(*node)?;
                now_subjects.extend(node_subjects);
                per_node.push(children);
            }
            if !now_subjects.is_subset(&subjects) {
                // A subject's first key was made under a node meanwhile:
                // take its lock too, and read again.
                subjects.extend(now_subjects);
                continue;
            }
            let mut batch = WriteBatch::new();
            let mut made = NewNodes::default();
            let mut lost = Vec::new();
            for (node, children) in page.iter().zip(&per_node) {
                let wraps: Vec<(KeyId, NodeWrapped)> = children
                    .iter()
                    .map(|(id, _, _, wrapped)| (*id, wrapped.clone()))
                    .collect();
                let rekeyed = self.vault.tree().rekey(*node, epoch, &wraps, &mut batch)?;
                for (id, rewrapped) in rekeyed.data {
                    if let Some((_, slot, entry, _)) = children.iter().find(|(c, ..)| *c == id) {
                        let entry = VaultEntry {
                            wrapped: Some(Wrapped::Node(rewrapped)),
                            ..entry.clone()
                        };
                        batch.put(slot.tree, slot.key.clone(), entry.encode());
                    }
                }
                made.extend(rekeyed.made);
                lost.extend(rekeyed.lost_data);
            }
            if let Err(err) = self.storage.apply(&batch, Durability::Buffered) {
                self.vault.tree().failed(made);
                return Err(err.into());
            }
            self.vault.tree().landed(made);
            drop((rekeying, creating, exclusive));
            for id in lost {
                let err = Error::Tampered {
                    location: crate::vault::vault_location(&id),
                };
                self.set_aside_lost_key(&id, &err, now)?;
            }
            return Ok(());
        }
    }

    /// The live data keys wrapped under bottom node `node`, and their
    /// subjects: one range read, of `vault` for forest 0 and of the day
    /// lane for a day forest.
    fn data_children(&self, node: NodeId) -> Result<(Vec<DataChild>, BTreeSet<SubjectTag>)> {
        let (first, last) = node.tag_range();
        let mut children = Vec::new();
        let mut subjects = BTreeSet::new();
        let mut visit = |id: KeyId, slot: Slot| {
            // A damaged entry is not a live key: nothing to re-wrap.
            if bottom_of(&id) == node
                && let Ok(entry) = VaultEntry::decode(&slot.value)
                && entry.state == KeyState::Active
                && let Some(Wrapped::Node(wrapped)) = entry.wrapped.clone()
            {
                subjects.insert(id.subject);
                children.push((id, slot, entry, wrapped));
            }
            ControlFlow::Continue(())
        };
        let storage = self.storage.as_ref();
        if node.forest == SUBJECTS_FOREST {
            layout::scan_vault_subjects(storage, &first, &last, &mut visit)?;
        } else {
            layout::scan_day_subjects(storage, node.forest, &first, &last, &mut visit)?;
        }
        Ok((children, subjects))
    }

    /// Removes whole every day forest of `forests` that holds no live key
    /// (its day's keys all destroyed; a key a hold parked keeps it), and
    /// returns those removed. Under the vault's creation lock and the
    /// tree's write lock, so no key is made under a forest being removed;
    /// a key of that day made later gets a new forest. Nodes go deepest
    /// first, so a removal cut by a crash leaves no node without its
    /// parent, and the next pass finishes it.
    fn remove_dead_forests(
        &self,
        forests: &BTreeSet<u32>,
        report: &mut CompactionReport,
    ) -> Result<BTreeSet<u32>> {
        let mut removed = BTreeSet::new();
        let limit = self
            .storage
            .max_batch_ops()
            .unwrap_or(BOTTOM_BATCH_OPS)
            .max(1);
        // Forest 0 is never removed: its keys' deaths are not the day's.
        for forest in forests.iter().filter(|f| **f != SUBJECTS_FOREST) {
            let creating = self.vault.creation_lock();
            let rekeying = self.vault.tree().write_lock();
            if self.day_has_live_key(*forest)? {
                continue;
            }
            self.vault.pause_point(PausePoint::ForestRemoval);
            let nodes = self.vault.tree().forest_nodes(*forest)?;
            for page in nodes.chunks(limit) {
                let mut batch = WriteBatch::new();
                for node in page {
                    batch.remove(Tree::KeyNodes, node.to_bytes());
                }
                self.storage.apply(&batch, Durability::Buffered)?;
            }
            self.vault.tree().forget_forest(*forest);
            drop((rekeying, creating));
            report.forests_removed += 1;
            report.nodes_removed += nodes.len() as u64;
            removed.insert(*forest);
        }
        Ok(removed)
    }

    /// Whether the day lane holds a live key of expiry bucket `bucket` (a
    /// damaged entry counts as live: its forest is kept, not guessed dead).
    fn day_has_live_key(&self, bucket: u32) -> Result<bool> {
        let mut live = false;
        layout::scan_day_values(
            self.storage.as_ref(),
            bucket,
            &[0; 16],
            &[0xFF; 16],
            &mut |_, value| {
                live =
                    VaultEntry::decode(value).map_or(true, |entry| entry.state == KeyState::Active);
                if live {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        Ok(live)
    }

    /// Audits a node whose key its parent's re-key could not open: every key
    /// beneath it was unreadable already, and now stays so (G2 wins).
    fn audit_lost_node(&self, node: NodeId, now: Timestamp) -> Result<()> {
        let entry = PendingEntry::new(
            AuditEvent::ItemSetAside,
            None,
            None,
            format!(
                "key tree node {} lost: its entry does not open under its parent, so the keys beneath it read as tampered",
                node_location(node).key_hex
            ),
        );
        self.audit.commit(
            self.storage.as_ref(),
            WriteBatch::new(),
            &[entry],
            now,
            Durability::Buffered,
        )
    }
}
