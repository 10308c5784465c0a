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
use crate::vault::tree::{BOTTOM_DEPTH, node_location};
use crate::vault::{KeyState, VaultEntry, Wrapped};

/// A bottom node's live data keys under the tree: id, where the entry is,
/// the entry, and its wrap.
type DataChild = (KeyId, Slot, VaultEntry, NodeWrapped);

impl DbInner {
    /// Re-keys the paths of every node debt due at `now`, then removes
    /// those debts. The caller holds the compaction lock.
    pub(crate) fn pay_node_debts(&self, now: Timestamp, report: &mut CompactionReport) -> Result<()> {
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
                if let Some((_, Due::RekeyNode(node))) = deadlines::decode_key(k) {
                    debts.push(k.to_vec());
                    let mut on_path = Some(node);
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
        for (_, nodes) in levels.iter().rev() {
            for node in nodes {
                self.rekey_node(*node, now)?;
                report.nodes_rekeyed += 1;
            }
        }
        let mut paid = WriteBatch::new();
        for key in debts {
            paid.remove(Tree::Deadlines, key);
        }
        // Durable: a debt that reappeared after a crash would only cost a
        // second re-key, but the pass's re-keys must be on disk before the
        // epochs that follow rely on them.
        self.storage.apply(&paid, Durability::Durable)?;
        Ok(())
    }

    /// Re-keys one node: a bottom node under the gate's write locks of the
    /// subjects whose keys it wraps, any node under the vault's creation
    /// lock and the tree's write lock.
    fn rekey_node(&self, node: NodeId, now: Timestamp) -> Result<()> {
        let epoch = self.vault.current_epoch();
        if node.depth < BOTTOM_DEPTH {
            let creating = self.vault.creation_lock();
            let rekeying = self.vault.tree().write_lock();
            let mut batch = WriteBatch::new();
            let rekeyed = self.vault.tree().rekey(node, epoch, &[], &mut batch)?;
            self.storage.apply(&batch, Durability::Buffered)?;
            self.vault.tree().landed(rekeyed.made);
            drop((rekeying, creating));
            for child in rekeyed.lost_nodes {
                self.audit_lost_node(child, now)?;
            }
            return Ok(());
        }
        let mut subjects = self.data_children(node)?.1;
        loop {
            let held: Vec<SubjectTag> = subjects.iter().copied().collect();
            let exclusive = self.gate.write(&held);
            let creating = self.vault.creation_lock();
            let rekeying = self.vault.tree().write_lock();
            let (children, now_subjects) = self.data_children(node)?;
            if !now_subjects.is_subset(&subjects) {
                // A subject's first key was made under the node meanwhile:
                // take its lock too, and read again.
                subjects.extend(now_subjects);
                continue;
            }
            let wraps: Vec<(KeyId, NodeWrapped)> = children
                .iter()
                .map(|(id, _, _, wrapped)| (*id, wrapped.clone()))
                .collect();
            let mut batch = WriteBatch::new();
            let rekeyed = self.vault.tree().rekey(node, epoch, &wraps, &mut batch)?;
            for (id, rewrapped) in rekeyed.data {
                if let Some((_, slot, entry, _)) = children.iter().find(|(c, ..)| *c == id) {
                    let entry = VaultEntry {
                        wrapped: Some(Wrapped::Node(rewrapped)),
                        ..entry.clone()
                    };
                    batch.put(slot.tree, slot.key.clone(), entry.encode());
                }
            }
            self.storage.apply(&batch, Durability::Buffered)?;
            self.vault.tree().landed(rekeyed.made);
            drop((rekeying, creating, exclusive));
            for id in rekeyed.lost_data {
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
