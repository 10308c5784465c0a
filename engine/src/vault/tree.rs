//! The key tree (store format 4): node keys between the epoch key and the
//! data keys, so that an epoch rotation re-wraps a root per forest instead
//! of every live key.
//!
//! ```text
//! key provider: epoch key E
//!   ├─ forest 0's root (depth 0), wrapped under E (WrapContext::TreeRoot)
//!   │    └─ 16 nodes by the first 4 bits of the subject tag (depth 1)
//!   │         └─ … 16 a level …
//!   │              └─ bottom nodes (depth 5: the tag's first 20 bits)
//!   │                   └─ the scope and open-bucket keys of their subjects
//!   └─ a day forest's root per expiry bucket with keys (forest = bucket)
//!        └─ … 16 a level by the tag …
//!             └─ bottom nodes (depth 3: the tag's first 12 bits)
//!                  └─ that day's expiry keys of their subjects
//! ```
//!
//! Tree `key_nodes`: node id (depth u8 ‖ forest u32 BE ‖ prefix u32 BE) →
//! node entry v1:
//!
//! ```text
//!  0  1  version (1)
//!  1  4  generation u32 (1 when made, one more at each re-key)
//!  5  1  wrap: 1 under an epoch (a root only; 69 bytes follow),
//!              2 under its parent node (78 bytes follow)
//!  6  .  the node's key, wrapped
//!  .  4  CRC32
//! ```
//!
//! Node keys are random, never derived. The associated data of every wrap
//! names the parent, the parent's generation and the child (for a node, its
//! own generation too), so a wrap opens only where it was made.
//!
//! **Destruction.** A data key's tombstone is written with a debt on its
//! bottom node (`Due::RekeyNode`, due at once). Compaction pays the debts
//! before it touches epochs: every node on the union of the debtors' paths
//! gets a fresh key and the next generation, bottom up, its live children
//! re-wrapped under it and its own key wrapped under its parent's new
//! generation; the root's under the current epoch. After that no live entry
//! is wrapped under a generation that could open the destroyed key, so the
//! last epoch that opens any copy of it is the one current then, destroyed
//! L later (docs/design.md, "The deletion timeline"). A day forest whose
//! keys are all dead is deleted instead (`retention/node_debts.rs`): its
//! root's copies are under epochs current until then, as a re-keyed root's.
//!
//! **Fixed depth.** Subject tags are keyed hashes, uniform, so a fixed depth
//! balances the tree: with 5 levels under the root (about a million bottom
//! nodes) a death re-keys at most 6 nodes, and each re-wraps its live
//! children (16 at most above the bottom, the keys of about 16 subjects at
//! the bottom at 16M keys); the cost grows by the bottom nodes' fill beyond
//! that, not by the number of keys below it.
//!
//! **Locks.** A key is created under a node, and that node re-keyed, only
//! under the vault's creation lock, so a new key is never wrapped under a
//! generation its node is leaving. A cold unwrap walks the path under
//! `rekeying`'s read lock and a re-key writes under its write lock, so a
//! reader never meets a child re-wrapped under a generation its node does
//! not have yet. The re-key of a bottom node also holds the scope gate's
//! write locks of its subjects (the caller's), so no erasure tombstones a
//! key between the re-key's read of it and its write.

use std::collections::HashMap;
use std::ops::{Bound, ControlFlow};
use std::sync::{Arc, Mutex, PoisonError};

use shredkv_crypto::{
    DataKey, EpochId, FormatError, KeyId, KeyProvider, NodeCipher, NodeId, NodeKey, NodeWrapped,
    ProviderError, WrapContext, WrappedKey,
};

use crate::codec::{Reader, Writer};
use crate::error::{Error, Location, Result};
use crate::storage::{Order, Storage, Tree, WriteBatch};

/// The depth of forest 0's bottom nodes, which wrap the data keys.
pub(crate) const BOTTOM_DEPTH: u8 = 5;
/// The depth of a day forest's bottom nodes: 4,096 of them, so a day of
/// 65,536 expiring keys puts about 16 under each.
pub(crate) const DAY_BOTTOM_DEPTH: u8 = 3;
/// The forest of the keys whose death nothing predicts (scope and
/// open-bucket keys).
pub(crate) const SUBJECTS_FOREST: u32 = 0;
/// Node ciphers kept in memory (about 1 KiB each). The top levels (273
/// nodes) are always among them once used; a cold read unwraps at most
/// the levels below what is cached.
const CACHED_NODES: usize = 16_384;
const VERSION: u8 = 1;
const WHAT: &str = "key tree node";

/// The forest a key hangs in: an expiry-bucket key in its bucket's (its
/// day's, so the day's keys can die together), every other key in
/// forest 0. An expiry-bucket key under the tree always lives in the day
/// lane (a format-2 entry moves there when it moves under the tree).
pub(crate) fn forest_of(id: &KeyId) -> u32 {
    if super::layout::in_day_lane(id) {
        id.bucket
    } else {
        SUBJECTS_FOREST
    }
}

/// The depth of `forest`'s bottom nodes.
pub(crate) fn bottom_depth(forest: u32) -> u8 {
    if forest == SUBJECTS_FOREST {
        BOTTOM_DEPTH
    } else {
        DAY_BOTTOM_DEPTH
    }
}

/// Whether `node` is a bottom node (it wraps data keys, not nodes).
pub(crate) fn is_bottom(node: NodeId) -> bool {
    node.depth >= bottom_depth(node.forest)
}

/// The bottom node a key is wrapped under.
pub(crate) fn bottom_of(id: &KeyId) -> NodeId {
    let forest = forest_of(id);
    NodeId::of_tag(forest, &id.subject, bottom_depth(forest))
}

/// What a node's key is wrapped under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeWrap {
    /// The root: an epoch key of the provider.
    Epoch(WrappedKey),
    /// Any other node: its parent, at one of the parent's generations.
    Parent(NodeWrapped),
}

/// A decoded node entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeEntry {
    pub(crate) generation: u32,
    pub(crate) wrap: NodeWrap,
}

impl NodeEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION, 80);
        w.u32(self.generation);
        match &self.wrap {
            NodeWrap::Epoch(wrapped) => w.u8(1).bytes(wrapped.as_bytes()),
            NodeWrap::Parent(wrapped) => w.u8(2).bytes(wrapped.as_bytes()),
        };
        w.finish()
    }

    /// Decodes the entry stored for `node`, checking that its wrap is of
    /// the kind its place needs (the root's under an epoch, every other
    /// node's under its own parent).
    pub(crate) fn decode(node: NodeId, bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::checked(WHAT, bytes, VERSION)?;
        let generation = r.u32()?;
        let wrap = match r.u8()? {
            1 => NodeWrap::Epoch(WrappedKey::from_bytes(&r.array::<{ WrappedKey::LEN }>()?)?),
            2 => NodeWrap::Parent(NodeWrapped::from_bytes(
                &r.array::<{ NodeWrapped::LEN }>()?,
            )?),
            _ => return Err(r.invalid("unknown kind of wrap")),
        };
        r.end()?;
        match (&wrap, node.parent()) {
            (NodeWrap::Epoch(_), None) => {}
            (NodeWrap::Parent(wrapped), Some(parent)) if wrapped.node() == parent => {}
            _ => {
                return Err(FormatError::InvalidField {
                    what: WHAT,
                    detail: "wrapped under something other than its parent",
                });
            }
        }
        Ok(Self { generation, wrap })
    }
}

/// Where a node's entry is, for errors.
pub(crate) fn node_location(node: NodeId) -> Box<Location> {
    Box::new(Location {
        tree: Tree::KeyNodes.name(),
        subject: None,
        class: None,
        key_hex: key_hex(node),
    })
}

fn key_hex(node: NodeId) -> String {
    shredkv_crypto::hex::encode(&node.to_bytes())
}

/// Nodes made for a new key, cached once the batch that stores them lands
/// ([`KeyTree::landed`]).
#[derive(Debug, Default)]
#[must_use = "hand it to KeyTree::landed once the batch has landed"]
pub(crate) struct NewNodes(Vec<Arc<NodeCipher>>);

impl NewNodes {
    /// Adds the nodes of another re-key or creation in the same batch.
    pub(crate) fn extend(&mut self, other: NewNodes) {
        self.0.extend(other.0);
    }
}

/// The key tree of a store: reads, creates and re-keys its nodes.
pub(crate) struct KeyTree {
    storage: Arc<dyn Storage>,
    provider: Arc<dyn KeyProvider>,
    /// Each node's cipher at its current generation.
    ciphers: Mutex<HashMap<NodeId, Arc<NodeCipher>>>,
    /// Read while a path is unwrapped, written while nodes are re-keyed
    /// (one of the protocol's primitives: loom's under the `loom` feature).
    rekeying: crate::sync::RwLock<()>,
}

impl std::fmt::Debug for KeyTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTree")
            .field("cached_nodes", &self.cached().len())
            .finish_non_exhaustive()
    }
}

impl KeyTree {
    pub(crate) fn new(storage: Arc<dyn Storage>, provider: Arc<dyn KeyProvider>) -> Self {
        Self {
            storage,
            provider,
            ciphers: Mutex::new(HashMap::new()),
            rekeying: crate::sync::RwLock::new(()),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<NodeCipher>>> {
        self.ciphers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache(&self, cipher: Arc<NodeCipher>) {
        let mut cached = self.cached();
        if cached.len() >= CACHED_NODES {
            // Keep the top of forest 0, which every subject's path shares.
            cached.retain(|node, _| node.forest == SUBJECTS_FOREST && node.depth < 3);
        }
        cached.insert(cipher.node(), cipher);
    }

    fn cached_at(&self, node: NodeId, generation: u32) -> Option<Arc<NodeCipher>> {
        self.cached()
            .get(&node)
            .filter(|c| c.generation() == generation)
            .cloned()
    }

    /// Held while nodes are re-keyed (with the vault's creation lock).
    pub(crate) fn write_lock(&self) -> crate::sync::RwLockWriteGuard<'_, ()> {
        crate::sync::write(&self.rekeying)
    }

    fn read_lock(&self) -> crate::sync::RwLockReadGuard<'_, ()> {
        crate::sync::read(&self.rekeying)
    }

    /// The stored entry of `node`.
    pub(crate) fn read_node(&self, node: NodeId) -> Result<Option<NodeEntry>> {
        match self.storage.get(Tree::KeyNodes, &node.to_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                NodeEntry::decode(node, &bytes)
                    .map(Some)
                    .map_err(|source| Error::Corrupt {
                        location: node_location(node),
                        source,
                    })
            }
        }
    }

    /// Unwraps a data key wrapped under a node. `None` if the root's epoch
    /// was destroyed (the whole tree is gone, by design).
    ///
    /// # Errors
    /// [`Error::Tampered`] when the wrap or any node above it fails
    /// authentication, or names a generation its node no longer has (a
    /// re-key passed it by: the key was lost, not kept).
    pub(crate) fn unwrap_data(&self, id: &KeyId, wrapped: &NodeWrapped) -> Result<Option<DataKey>> {
        let cipher = match self.cached_at(wrapped.node(), wrapped.generation()) {
            Some(cipher) => cipher,
            None => {
                let _reading = self.read_lock();
                match self.cipher_locked(wrapped.node(), Some(wrapped.generation()))? {
                    Some(cipher) => cipher,
                    None => return Ok(None),
                }
            }
        };
        cipher
            .unwrap_data(id, wrapped)
            .map(Some)
            .map_err(|_| Error::Tampered {
                location: crate::vault::vault_location(id),
            })
    }

    /// The cipher of `node` at its stored generation, which must be
    /// `expected` when given. The caller holds `rekeying` (either way).
    fn cipher_locked(
        &self,
        node: NodeId,
        expected: Option<u32>,
    ) -> Result<Option<Arc<NodeCipher>>> {
        if let Some(cipher) = self.cached().get(&node)
            && expected.is_none_or(|g| g == cipher.generation())
        {
            return Ok(Some(Arc::clone(cipher)));
        }
        let tampered = || Error::Tampered {
            location: node_location(node),
        };
        // A wrap that names a node the tree does not hold was forged or
        // moved; one that names a generation the node left was re-keyed
        // past (an entry the re-key could not open).
        let entry = self.read_node(node)?.ok_or_else(tampered)?;
        if expected.is_some_and(|g| g != entry.generation) {
            return Err(tampered());
        }
        let key = match &entry.wrap {
            NodeWrap::Epoch(wrapped) => {
                let context = WrapContext::TreeRoot {
                    forest: node.forest,
                    generation: entry.generation,
                };
                match self.provider.unwrap(&context, wrapped) {
                    Ok(key) => NodeKey::from_unwrapped(key),
                    Err(ProviderError::EpochDestroyed { .. }) => return Ok(None),
                    Err(ProviderError::Authentication) => return Err(tampered()),
                    Err(other) => return Err(other.into()),
                }
            }
            NodeWrap::Parent(wrapped) => {
                let Some(parent) =
                    self.cipher_locked(wrapped.node(), Some(wrapped.generation()))?
                else {
                    return Ok(None);
                };
                parent
                    .unwrap_node(node, entry.generation, wrapped)
                    .map_err(|_| tampered())?
            }
        };
        let cipher = Arc::new(NodeCipher::new(node, entry.generation, &key));
        self.cache(Arc::clone(&cipher));
        Ok(Some(cipher))
    }

    /// Wraps the data key `id` under its bottom node's current generation,
    /// adding to `batch` the entries of the nodes on its path that do not
    /// exist yet (made under `epoch` at the root) and noting them in
    /// `made`. The caller holds the vault's creation lock until it has
    /// handed `made` to [`KeyTree::landed`] (or dropped it, the batch
    /// having failed); keys wrapped into one batch share one `made`.
    pub(crate) fn wrap_under_tree(
        &self,
        id: &KeyId,
        key: &DataKey,
        epoch: EpochId,
        batch: &mut WriteBatch,
        made: &mut NewNodes,
    ) -> Result<NodeWrapped> {
        let _reading = self.read_lock();
        let bottom = self.ensure(bottom_of(id), epoch, batch, made)?;
        Ok(bottom.wrap_data(id, key))
    }

    /// The batch holding `made` landed: their ciphers may be used.
    pub(crate) fn landed(&self, made: NewNodes) {
        for cipher in made.0 {
            self.cache(cipher);
        }
    }

    /// The batch holding `made` failed, and may have landed all the same (a
    /// sync that failed after the write): what is cached of those nodes is
    /// forgotten, so the next use reads each from the store as it is. A
    /// cipher kept for a generation the store left would wrap new keys
    /// under it, and they would never open.
    pub(crate) fn failed(&self, made: NewNodes) {
        let mut cached = self.cached();
        for cipher in made.0 {
            cached.remove(&cipher.node());
        }
    }

    /// The current cipher of `node`, made (with its missing ancestors) into
    /// `batch` if the tree does not hold it.
    fn ensure(
        &self,
        node: NodeId,
        epoch: EpochId,
        batch: &mut WriteBatch,
        made: &mut NewNodes,
    ) -> Result<Arc<NodeCipher>> {
        if let Some(cipher) = made.0.iter().find(|c| c.node() == node) {
            return Ok(Arc::clone(cipher));
        }
        if self
            .storage
            .get(Tree::KeyNodes, &node.to_bytes())?
            .is_some()
        {
            return match self.cipher_locked(node, None)? {
                Some(cipher) => Ok(cipher),
                None => Err(self.root_gone(node.forest)),
            };
        }
        let key = NodeKey::generate();
        let generation = 1;
        let wrap = match node.parent() {
            None => {
                let context = WrapContext::TreeRoot {
                    forest: node.forest,
                    generation,
                };
                NodeWrap::Epoch(self.provider.wrap(epoch, &context, &key.to_wrappable())?)
            }
            Some(parent) => {
                let parent = self.ensure(parent, epoch, batch, made)?;
                NodeWrap::Parent(parent.wrap_node(node, generation, &key))
            }
        };
        batch.put(
            Tree::KeyNodes,
            node.to_bytes(),
            NodeEntry { generation, wrap }.encode(),
        );
        let cipher = Arc::new(NodeCipher::new(node, generation, &key));
        made.0.push(Arc::clone(&cipher));
        Ok(cipher)
    }

    /// The error for a forest whose root's epoch was destroyed: nothing
    /// under it opens any more.
    fn root_gone(&self, forest: u32) -> Error {
        let epoch = match self.read_node(NodeId::root(forest)) {
            Ok(Some(NodeEntry {
                wrap: NodeWrap::Epoch(wrapped),
                ..
            })) => wrapped.epoch(),
            _ => EpochId(0),
        };
        Error::KeyProvider(ProviderError::EpochDestroyed { epoch })
    }

    /// The stored children of a node above the bottom: `(child, entry)`.
    fn child_nodes(&self, node: NodeId) -> Result<Vec<(NodeId, Vec<u8>)>> {
        let (Some(first), Some(last)) = (node.child(0), node.child(15)) else {
            return Ok(Vec::new());
        };
        self.nodes_between(first, last)
    }

    /// Re-keys `node` into `batch`: a fresh key at the next generation,
    /// wrapped under its parent's current generation (the root's under
    /// `epoch`), and its children re-wrapped under it. `data_children` are
    /// a bottom node's live data keys, `(id, stored entry's place, wrap)`;
    /// the children of a node above the bottom are read here. The caller
    /// holds the vault's creation lock and [`KeyTree::write_lock`] until it
    /// has handed the result to [`KeyTree::landed`] (the batch landed).
    ///
    /// Returns the new cipher, the data keys re-wrapped as
    /// `(id, new wrap)`, and the children that could not be opened (they
    /// stay under a generation that no longer exists: lost, as G2 wants).
    pub(crate) fn rekey(
        &self,
        node: NodeId,
        epoch: EpochId,
        data_children: &[(KeyId, NodeWrapped)],
        batch: &mut WriteBatch,
    ) -> Result<Rekeyed> {
        let nothing = Rekeyed {
            made: NewNodes::default(),
            data: Vec::new(),
            lost_data: Vec::new(),
            lost_nodes: Vec::new(),
        };
        // A node the tree lacks wraps nothing (a debt on it is paid by
        // nothing at all).
        let Some(stored) = self.storage.get(Tree::KeyNodes, &node.to_bytes())? else {
            return Ok(nothing);
        };
        // A node whose entry does not open: whatever was under it is
        // unreadable already, and stays so under the new key.
        let old = match self.cipher_locked(node, None) {
            Ok(old) => old,
            Err(err) if err.is_integrity_failure() => None,
            Err(err) => return Err(err),
        };
        let generation = NodeEntry::decode(node, &stored)
            .ok()
            .map_or(1, |e| e.generation.wrapping_add(1).max(1));
        let key = NodeKey::generate();
        let wrap = match node.parent() {
            None => {
                let context = WrapContext::TreeRoot {
                    forest: node.forest,
                    generation,
                };
                NodeWrap::Epoch(self.provider.wrap(epoch, &context, &key.to_wrappable())?)
            }
            Some(parent) => match self.cipher_locked(parent, None) {
                Ok(Some(parent)) => NodeWrap::Parent(parent.wrap_node(node, generation, &key)),
                Ok(None) => return Err(self.root_gone(node.forest)),
                // Its parent is missing or does not open: the node is out
                // of reach already, and nothing is written under it.
                Err(err) if err.is_integrity_failure() => {
                    return Ok(Rekeyed {
                        lost_nodes: vec![node],
                        ..nothing
                    });
                }
                Err(err) => return Err(err),
            },
        };
        let cipher = Arc::new(NodeCipher::new(node, generation, &key));
        batch.put(
            Tree::KeyNodes,
            node.to_bytes(),
            NodeEntry { generation, wrap }.encode(),
        );
        let mut rekeyed = Rekeyed {
            made: NewNodes(vec![Arc::clone(&cipher)]),
            data: Vec::new(),
            lost_data: Vec::new(),
            lost_nodes: Vec::new(),
        };
        if is_bottom(node) {
            for (id, wrapped) in data_children {
                let opened = old.as_ref().and_then(|old| {
                    (wrapped.node() == node && wrapped.generation() == old.generation())
                        .then(|| old.unwrap_data(id, wrapped).ok())
                        .flatten()
                });
                match opened {
                    Some(data_key) => rekeyed.data.push((*id, cipher.wrap_data(id, &data_key))),
                    None => rekeyed.lost_data.push(*id),
                }
            }
            return Ok(rekeyed);
        }
        for (child, stored) in self.child_nodes(node)? {
            let opened = NodeEntry::decode(child, &stored).ok().and_then(|entry| {
                let NodeWrap::Parent(wrapped) = &entry.wrap else {
                    return None;
                };
                let old = old.as_ref()?;
                if wrapped.generation() != old.generation() {
                    return None;
                }
                let child_key = old.unwrap_node(child, entry.generation, wrapped).ok()?;
                Some((entry.generation, child_key))
            });
            match opened {
                Some((child_generation, child_key)) => {
                    let rewrapped = NodeEntry {
                        generation: child_generation,
                        wrap: NodeWrap::Parent(cipher.wrap_node(
                            child,
                            child_generation,
                            &child_key,
                        )),
                    };
                    batch.put(Tree::KeyNodes, child.to_bytes(), rewrapped.encode());
                }
                None => rekeyed.lost_nodes.push(child),
            }
        }
        Ok(rekeyed)
    }

    /// What `verify` reports of the tree: every node whose entry does not
    /// decode (`Error::Corrupt`) or does not open from the root down
    /// (`Error::Tampered`: altered, or its parent is missing: an orphaned
    /// subtree), each with a sentence saying what it means. Nodes under a
    /// root whose epoch is gone are not reported (the store's keys were
    /// destroyed, by design).
    pub(crate) fn problems(&self) -> Result<Vec<(Error, String)>> {
        let mut nodes = Vec::new();
        self.storage.scan(
            Tree::KeyNodes,
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            &mut |k, _| {
                nodes.push(k.to_vec());
                ControlFlow::Continue(())
            },
        )?;
        let _reading = self.read_lock();
        let mut out = Vec::new();
        for key in nodes {
            let Some(node) = NodeId::from_bytes(&key) else {
                out.push((
                    Error::Corrupt {
                        location: Box::new(Location {
                            tree: Tree::KeyNodes.name(),
                            subject: None,
                            class: None,
                            key_hex: shredkv_crypto::hex::encode(&key),
                        }),
                        source: FormatError::InvalidField {
                            what: WHAT,
                            detail: "the tree key is not a node id",
                        },
                    },
                    "a key tree entry under a key that names no node".to_string(),
                ));
                continue;
            };
            match self.cipher_locked(node, None) {
                Ok(_) => {}
                Err(Error::Corrupt { location, source }) if location.key_hex == key_hex(node) => {
                    out.push((Error::Corrupt { location, source }, format!(
                        "key tree node at depth {} is damaged: every key beneath it reads as tampered; restore from a backup",
                        node.depth
                    )));
                }
                Err(err) if err.is_integrity_failure() => out.push((
                    Error::Tampered {
                        location: node_location(node),
                    },
                    format!(
                        "key tree node at depth {} does not open from the root (its entry, or one above it, is altered or missing): every key beneath it reads as tampered; restore from a backup",
                        node.depth
                    ),
                )),
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    /// The roots of every forest, with their stored entries.
    fn roots(&self) -> Result<Vec<(NodeId, Vec<u8>)>> {
        self.nodes_between(NodeId::root(0), NodeId::root(u32::MAX))
    }

    /// The stored nodes whose ids lie in `first..=last`, with their
    /// entries (ids sort by depth, then forest, then prefix).
    fn nodes_between(&self, first: NodeId, last: NodeId) -> Result<Vec<(NodeId, Vec<u8>)>> {
        let mut out = Vec::new();
        self.storage.scan(
            Tree::KeyNodes,
            Bound::Included(&first.to_bytes()),
            Bound::Included(&last.to_bytes()),
            Order::Ascending,
            &mut |k, v| {
                if let Some(node) = NodeId::from_bytes(k) {
                    out.push((node, v.to_vec()));
                }
                ControlFlow::Continue(())
            },
        )?;
        Ok(out)
    }

    /// The forests the tree holds (those with a root).
    pub(crate) fn forests(&self) -> Result<Vec<u32>> {
        Ok(self
            .roots()?
            .into_iter()
            .map(|(root, _)| root.forest)
            .collect())
    }

    /// The epochs the forests' roots are wrapped under (one when no
    /// rotation is under way; none before the first key).
    pub(crate) fn root_epochs(&self) -> Result<std::collections::BTreeSet<EpochId>> {
        let mut epochs = std::collections::BTreeSet::new();
        for (root, stored) in self.roots()? {
            let entry = NodeEntry::decode(root, &stored).map_err(|source| Error::Corrupt {
                location: node_location(root),
                source,
            })?;
            if let NodeWrap::Epoch(wrapped) = &entry.wrap {
                epochs.insert(wrapped.epoch());
            }
        }
        Ok(epochs)
    }

    /// Re-wraps up to `limit` forests' root keys not under `epoch` yet, at
    /// their generations, under `epoch` (an epoch rotation, called until it
    /// returns 0). The caller holds the creation lock and the write lock.
    /// Returns how many roots were re-wrapped into `batch`.
    pub(crate) fn rewrap_roots(
        &self,
        epoch: EpochId,
        limit: usize,
        batch: &mut WriteBatch,
    ) -> Result<u64> {
        let mut rewrapped_roots = 0;
        for (root, stored) in self.roots()? {
            if rewrapped_roots >= limit as u64 {
                break;
            }
            let entry = NodeEntry::decode(root, &stored).map_err(|source| Error::Corrupt {
                location: node_location(root),
                source,
            })?;
            let NodeWrap::Epoch(wrapped) = &entry.wrap else {
                continue;
            };
            if wrapped.epoch() == epoch {
                continue;
            }
            let context = WrapContext::TreeRoot {
                forest: root.forest,
                generation: entry.generation,
            };
            let key = match self.provider.unwrap(&context, wrapped) {
                Ok(key) => key,
                Err(ProviderError::Authentication) => {
                    return Err(Error::Tampered {
                        location: node_location(root),
                    });
                }
                Err(other) => return Err(other.into()),
            };
            let rewrapped = NodeEntry {
                generation: entry.generation,
                wrap: NodeWrap::Epoch(self.provider.wrap(epoch, &context, &key)?),
            };
            batch.put(Tree::KeyNodes, root.to_bytes(), rewrapped.encode());
            rewrapped_roots += 1;
        }
        Ok(rewrapped_roots)
    }

    /// Every stored node of `forest`, deepest first (so a removal cut part
    /// way leaves no node without its parent).
    pub(crate) fn forest_nodes(&self, forest: u32) -> Result<Vec<NodeId>> {
        let mut out = Vec::new();
        for depth in (0..=bottom_depth(forest)).rev() {
            let first = NodeId {
                forest,
                depth,
                prefix: 0,
            };
            let last = NodeId {
                forest,
                depth,
                prefix: u32::MAX,
            };
            out.extend(
                self.nodes_between(first, last)?
                    .into_iter()
                    .map(|(node, _)| node),
            );
        }
        Ok(out)
    }

    /// Forgets the cached ciphers of `forest` (its nodes were removed).
    /// The caller holds the creation lock and the write lock.
    pub(crate) fn forget_forest(&self, forest: u32) {
        self.cached().retain(|node, _| node.forest != forest);
    }
}

/// What a node's re-key did ([`KeyTree::rekey`]).
#[derive(Debug)]
pub(crate) struct Rekeyed {
    /// The node's new cipher, for [`KeyTree::landed`].
    pub(crate) made: NewNodes,
    /// A bottom node's data keys, re-wrapped.
    pub(crate) data: Vec<(KeyId, NodeWrapped)>,
    /// Data keys that did not open under the node's old generation.
    pub(crate) lost_data: Vec<KeyId>,
    /// Child nodes that did not open under it.
    pub(crate) lost_nodes: Vec<NodeId>,
}
