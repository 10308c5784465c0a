//! Paying the key tree's node debts: the path re-key (`vault::tree`).
//!
//! A destroyed data key's tombstone leaves a debt on its bottom node, due at
//! once (`Due::RekeyNode`). Every compaction pass, after its due erasures
//! and before it touches epochs, re-keys each node on the union of the
//! debtors' paths once, bottom up, then removes the debts (durably). A crash
//! part way leaves the debts, and the next pass re-keys the whole union
//! again: a node re-keyed twice only costs its children's re-wraps.
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
use crate::storage::{Durability, Order, Tree, WriteBatch};
use crate::vault::layout::{self, Slot};
use crate::vault::tree::{BOTTOM_DEPTH, NewNodes, bottom_of, node_location};
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
        // Every node on a debtor's path, by depth.
        let mut levels: BTreeMap<u8, BTreeSet<NodeId>> = BTreeMap::new();
        self.storage.scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Excluded(&end),
            Order::Ascending,
            &mut |k, _| {
                if let Some((_, Due::RekeyNode(id))) = deadlines::decode_key(k) {
                    debts.push(k.to_vec());
                    let mut on_path = Some(bottom_of(&id));
                    while let Some(node) = on_path {
                        levels.entry(node.depth).or_default().insert(node);
                        on_path = node.parent();
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        if debts.is_empty() {
            return Ok(());
        }
        for (depth, nodes) in levels.iter().rev() {
            let nodes: Vec<NodeId> = nodes.iter().copied().collect();
            if *depth >= BOTTOM_DEPTH {
                self.rekey_bottom_nodes(&nodes, now, report)?;
            } else {
                for page in nodes.chunks(self.batch_page(NODE_PAGE, 17)) {
                    self.rekey_upper_nodes(page, now, report)?;
                }
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
        let end = deadlines::upper_bound(now.as_second());
        let mut pending = false;
        self.storage.scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Excluded(&end),
            Order::Ascending,
            &mut |k, _| {
                pending = matches!(deadlines::decode_key(k), Some((_, Due::RekeyNode(_))));
                if pending {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        Ok(pending)
    }

    /// Whether a debt on `node` is waiting (for certificates). Debts are
    /// due when their key died, so only the items due by now are read.
    pub(crate) fn node_debt_pending_on(&self, node: NodeId) -> Result<bool> {
        let end = deadlines::upper_bound(self.clock.now().as_second());
        let mut pending = false;
        self.storage.scan(
            Tree::Deadlines,
            Bound::Unbounded,
            Bound::Excluded(&end),
            Order::Ascending,
            &mut |k, _| {
                pending =
                    matches!(deadlines::decode_key(k), Some((_, Due::RekeyNode(id))) if bottom_of(&id) == node);
                if pending {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        Ok(pending)
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
    /// subjects.
    fn data_children(&self, node: NodeId) -> Result<(Vec<DataChild>, BTreeSet<SubjectTag>)> {
        let (first, last) = node.tag_range();
        let mut children = Vec::new();
        let mut subjects = BTreeSet::new();
        layout::scan_subjects(self.storage.as_ref(), &first, &last, &mut |id, slot| {
            // A damaged entry is not a live key: nothing to re-wrap.
            if let Ok(entry) = VaultEntry::decode(&slot.value)
                && entry.state == KeyState::Active
                && let Some(Wrapped::Node(wrapped)) = entry.wrapped.clone()
            {
                subjects.insert(id.subject);
                children.push((id, slot, entry, wrapped));
            }
            ControlFlow::Continue(())
        })?;
        Ok((children, subjects))
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
