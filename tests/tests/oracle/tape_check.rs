//! I2 on the tape: every wrapped key ever written, opened as far as the key
//! material the key provider still has reaches; every envelope ever written,
//! opened with every data key so obtained. The layouts are the documented
//! ones (docs/design.md: vault entry v1 and v2, key tree node entry v1,
//! wrapped key v1, node-wrapped key v2, envelope v1, AAD = store id ‖
//! data-tree key).
//!
//! The key tree is followed to a fixpoint: from every live epoch, every copy
//! of a root generation found anywhere on the tape (live or remnant), then
//! every copy of a node generation under any key so recovered, level by
//! level, then every data key wrapped under any node key so recovered. A
//! destroyed data key reachable that way is as recoverable as one wrapped
//! straight under a live epoch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shredkv::jiff::Timestamp;

use shredkv::internal::{Tape, TapeEntry};
use shredkv_crypto::{
    Envelope, EpochId, KeyId, KeyProvider, NodeCipher, NodeId, NodeKey, NodeWrapped, SubjectTag,
    ValueCipher, WrapContext, WrappedKey,
};

use super::model::write_id_in;

/// What a copy on the tape is wrapped under.
enum Under {
    Epoch(WrappedKey),
    Node(NodeWrapped),
}

/// One wrapped copy of a data key found on the tape.
struct Copy {
    key: KeyId,
    under: Under,
    /// Under an epoch: whether it was tried (with its epoch live).
    tried: bool,
    /// Under an epoch: which of its key id's materials it unwrapped to.
    opened: Option<usize>,
    /// Under a node: per material of that node generation tried, the data
    /// material it unwrapped to, if any.
    opened_by: HashMap<usize, Option<usize>>,
}

/// One wrapped copy of a node key found on the tape.
struct NodeCopy {
    node: NodeId,
    generation: u32,
    under: Under,
    /// Under an epoch (a root): whether it was tried, and what it opened.
    tried: bool,
    opened: Option<usize>,
    /// Under a parent: per parent material tried, the node material.
    opened_by: HashMap<usize, Option<usize>>,
}

/// One envelope found on the tape.
struct Sealed {
    tree_key: Vec<u8>,
    value: Vec<u8>,
    /// The materials of its key id it was tried with.
    tried: Vec<usize>,
    /// The material that opened it and the write id inside.
    found: Option<(usize, u64)>,
}

/// What the check could recover, one entry per plaintext.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub(crate) write: u64,
    pub(crate) key: KeyId,
    pub(crate) epochs: BTreeSet<u32>,
}

/// A node generation: the key tree's node and its generation.
type NodeGeneration = (NodeId, u32);
/// Reachable materials, each with the live epochs it is reached from.
type Reach = BTreeMap<usize, BTreeSet<u32>>;

/// The incremental state of the tape check.
#[derive(Default)]
pub(crate) struct TapeCheck {
    store_id: Option<[u8; 16]>,
    copies: Vec<Copy>,
    node_copies: Vec<NodeCopy>,
    /// The distinct key materials seen under each key id: a key id is not
    /// unique across stores (a restored store that creates a bucket the
    /// backup did not have gives its first version the id the dropped live
    /// store gave another random key), so a cipher is credited only while
    /// a copy of *its* material is reachable from a live epoch.
    ciphers: HashMap<KeyId, Vec<([u8; 32], ValueCipher)>>,
    /// The distinct key materials seen of each node generation (the same
    /// holds of node ids across stores).
    node_keys: HashMap<NodeGeneration, Vec<[u8; 32]>>,
    sealed: HashMap<KeyId, Vec<Sealed>>,
    /// Wrapped copies (data keys and node keys) and envelopes read in all.
    pub(crate) wrapped_read: u64,
    pub(crate) envelopes_read: u64,
    /// Node keys among the wrapped copies.
    pub(crate) node_copies_read: u64,
    /// Of those, nodes of day forests (every forest but 0).
    pub(crate) day_node_copies_read: u64,
    /// Unwrap attempts and envelope openings, in all.
    pub(crate) attempts: u64,
    /// When the check first saw a key wrapped under each epoch.
    pub(crate) first_seen: BTreeMap<u32, Timestamp>,
    /// The epochs the key provider still had at the last run.
    pub(crate) live: BTreeSet<u32>,
}

/// The wrap inside a vault entry: v2 `version (2) ‖ state ‖ created (8) ‖
/// destroyed (9) ‖ kind u8 (1 epoch, 2 node) ‖ wrap (69 or 74) ‖ CRC32 (4)`;
/// v1 `... ‖ present u8 ‖ wrapped key (69) ‖ CRC32 (4)`, read from its
/// end. `None` for a tombstone.
fn wrapped_in(entry: &[u8]) -> Option<Under> {
    if entry.first() == Some(&2) {
        let wrap = entry.get(20..entry.len().checked_sub(4)?)?;
        return match entry.get(19)? {
            1 => WrappedKey::from_bytes(wrap).ok().map(Under::Epoch),
            2 => NodeWrapped::from_bytes(wrap).ok().map(Under::Node),
            _ => None,
        };
    }
    let len = entry.len();
    let start = len.checked_sub(4 + WrappedKey::LEN)?;
    if entry.get(start.checked_sub(1)?) != Some(&1) {
        return None;
    }
    WrappedKey::from_bytes(entry.get(start..len - 4)?)
        .ok()
        .map(Under::Epoch)
}

/// A key tree node entry v1: `version (1) ‖ generation u32 ‖ kind u8 (1
/// epoch, 2 parent) ‖ wrap (69 or 74) ‖ CRC32 (4)`.
fn node_entry(value: &[u8]) -> Option<(u32, Under)> {
    if value.first() != Some(&1) {
        return None;
    }
    let generation = u32::from_be_bytes(value.get(1..5)?.try_into().ok()?);
    let wrap = value.get(6..value.len().checked_sub(4)?)?;
    let under = match value.get(5)? {
        1 => Under::Epoch(WrappedKey::from_bytes(wrap).ok()?),
        2 => Under::Node(NodeWrapped::from_bytes(wrap).ok()?),
        _ => return None,
    };
    Some((generation, under))
}

/// The key id a key of the vault's day lane names: the lane key is the key
/// id with its bucket first, `bucket (4) ‖ subject tag (16) ‖ class (2) ‖
/// version (4)` (docs/design.md, "Trees and layouts").
fn key_id_of_day_lane_key(lane: &[u8]) -> Option<KeyId> {
    if lane.len() != KeyId::LEN {
        return None;
    }
    let mut id = Vec::with_capacity(KeyId::LEN);
    id.extend_from_slice(&lane[4..20]);
    id.extend_from_slice(&lane[20..22]);
    id.extend_from_slice(&lane[..4]);
    id.extend_from_slice(&lane[22..]);
    KeyId::from_bytes(&id)
}

/// The index of `material` among `known`, added if new.
fn index_of(known: &mut Vec<[u8; 32]>, material: [u8; 32]) -> usize {
    known
        .iter()
        .position(|m| *m == material)
        .unwrap_or_else(|| {
            known.push(material);
            known.len() - 1
        })
}

impl TapeCheck {
    fn ingest(&mut self, entry: TapeEntry) {
        match entry.tree.as_str() {
            "meta" if entry.key == b"store_id" => {
                if let Ok(id) = <[u8; 16]>::try_from(entry.value.as_slice()) {
                    self.store_id = Some(id);
                }
            }
            "vault" | "vault_days" => {
                let key = if entry.tree == "vault" {
                    KeyId::from_bytes(&entry.key)
                } else {
                    key_id_of_day_lane_key(&entry.key)
                };
                let (Some(key), Some(under)) = (key, wrapped_in(&entry.value)) else {
                    return;
                };
                // The tape keeps each distinct entry once, so each copy
                // arrives once (a backup's copies were on the tape already).
                self.wrapped_read += 1;
                self.copies.push(Copy {
                    key,
                    under,
                    tried: false,
                    opened: None,
                    opened_by: HashMap::new(),
                });
            }
            "key_nodes" => {
                let (Some(node), Some((generation, under))) =
                    (NodeId::from_bytes(&entry.key), node_entry(&entry.value))
                else {
                    return;
                };
                self.wrapped_read += 1;
                self.node_copies_read += 1;
                if node.forest != 0 {
                    self.day_node_copies_read += 1;
                }
                self.node_copies.push(NodeCopy {
                    node,
                    generation,
                    under,
                    tried: false,
                    opened: None,
                    opened_by: HashMap::new(),
                });
            }
            "data" => {
                let (Some(prefix), Ok(envelope)) =
                    (entry.key.get(..18), Envelope::parse(&entry.value))
                else {
                    return;
                };
                let mut tag = [0u8; 16];
                tag.copy_from_slice(&prefix[..16]);
                let key = KeyId {
                    subject: SubjectTag(tag),
                    class: u16::from_be_bytes([prefix[16], prefix[17]]),
                    bucket: envelope.key_ref().bucket,
                    version: envelope.key_ref().version,
                };
                self.envelopes_read += 1;
                self.sealed.entry(key).or_default().push(Sealed {
                    tree_key: entry.key,
                    value: entry.value,
                    tried: Vec::new(),
                    found: None,
                });
            }
            _ => {}
        }
    }

    /// Every node generation's materials reachable from the live epochs,
    /// with the epochs each is reached from: the roots' copies under live
    /// epochs, then each level's copies under what the level above reached.
    fn reach_nodes(
        &mut self,
        provider: &dyn KeyProvider,
        live: &BTreeSet<EpochId>,
    ) -> HashMap<NodeGeneration, Reach> {
        let mut reach: HashMap<NodeGeneration, Reach> = HashMap::new();
        // Parents before children: a copy's parent is one level up.
        self.node_copies.sort_by_key(|copy| copy.node.depth);
        for copy in &mut self.node_copies {
            let place = (copy.node, copy.generation);
            match &copy.under {
                Under::Epoch(wrapped) => {
                    if !live.contains(&wrapped.epoch()) {
                        continue;
                    }
                    if !copy.tried {
                        copy.tried = true;
                        self.attempts += 1;
                        let context = WrapContext::TreeRoot {
                            forest: copy.node.forest,
                            generation: copy.generation,
                        };
                        if let Ok(key) = provider.unwrap(&context, wrapped) {
                            let known = self.node_keys.entry(place).or_default();
                            copy.opened = Some(index_of(known, *key.expose_secret()));
                        }
                    }
                    if let Some(material) = copy.opened {
                        reach
                            .entry(place)
                            .or_default()
                            .entry(material)
                            .or_default()
                            .insert(wrapped.epoch().0);
                    }
                }
                Under::Node(wrapped) => {
                    let parent = (wrapped.node(), wrapped.generation());
                    let Some(parent_reach) = reach.get(&parent).cloned() else {
                        continue;
                    };
                    for (parent_material, epochs) in parent_reach {
                        let opened = match copy.opened_by.get(&parent_material) {
                            Some(opened) => *opened,
                            None => {
                                self.attempts += 1;
                                let key = self
                                    .node_keys
                                    .get(&parent)
                                    .and_then(|known| known.get(parent_material))
                                    .map(|m| NodeKey::from_bytes(*m));
                                let opened = key.and_then(|key| {
                                    NodeCipher::new(parent.0, parent.1, &key)
                                        .unwrap_node(copy.node, copy.generation, wrapped)
                                        .ok()
                                        .map(|child| {
                                            let known = self.node_keys.entry(place).or_default();
                                            index_of(known, *child.expose_secret())
                                        })
                                });
                                copy.opened_by.insert(parent_material, opened);
                                opened
                            }
                        };
                        if let Some(material) = opened {
                            reach
                                .entry(place)
                                .or_default()
                                .entry(material)
                                .or_default()
                                .extend(epochs);
                        }
                    }
                }
            }
        }
        reach
    }

    /// Reads what is new on the tape, then returns every plaintext that key
    /// material reachable from `provider` decrypts.
    pub(crate) fn run(
        &mut self,
        tape: &Tape,
        provider: &dyn KeyProvider,
        now: Timestamp,
    ) -> Result<Vec<Recovered>, String> {
        for entry in tape.take() {
            self.ingest(entry);
        }
        let epochs_named = self
            .copies
            .iter()
            .map(|copy| &copy.under)
            .chain(self.node_copies.iter().map(|copy| &copy.under))
            .filter_map(|under| match under {
                Under::Epoch(wrapped) => Some(wrapped.epoch().0),
                Under::Node(_) => None,
            })
            .collect::<Vec<_>>();
        for epoch in epochs_named {
            self.first_seen.entry(epoch).or_insert(now);
        }
        let live: BTreeSet<EpochId> = provider
            .live_epochs()
            .map_err(|e| format!("list live epochs: {e}"))?
            .into_iter()
            .collect();
        self.live = live.iter().map(|e| e.0).collect();
        // A copy under a destroyed epoch never opens again: epoch ids are
        // never reused. Copies under nodes are kept: a node generation is
        // reachable for as long as any copy of a root above it is.
        self.copies.retain(|copy| match &copy.under {
            Under::Epoch(wrapped) => live.contains(&wrapped.epoch()),
            Under::Node(_) => true,
        });
        self.node_copies.retain(|copy| match &copy.under {
            Under::Epoch(wrapped) => live.contains(&wrapped.epoch()),
            Under::Node(_) => true,
        });
        let node_reach = self.reach_nodes(provider, &live);
        let mut reachable: HashMap<KeyId, Reach> = HashMap::new();
        for copy in &mut self.copies {
            match &copy.under {
                Under::Epoch(wrapped) => {
                    if !copy.tried {
                        copy.tried = true;
                        self.attempts += 1;
                        if let Ok(key) = provider.unwrap(&WrapContext::DataKey(copy.key), wrapped) {
                            copy.opened = Some(credit(&mut self.ciphers, copy.key, &key));
                        }
                    }
                    if let Some(material) = copy.opened {
                        reachable
                            .entry(copy.key)
                            .or_default()
                            .entry(material)
                            .or_default()
                            .insert(wrapped.epoch().0);
                    }
                }
                Under::Node(wrapped) => {
                    let node = (wrapped.node(), wrapped.generation());
                    let Some(node_materials) = node_reach.get(&node) else {
                        continue;
                    };
                    for (node_material, epochs) in node_materials {
                        let opened = match copy.opened_by.get(node_material) {
                            Some(opened) => *opened,
                            None => {
                                self.attempts += 1;
                                let key = self
                                    .node_keys
                                    .get(&node)
                                    .and_then(|known| known.get(*node_material))
                                    .map(|m| NodeKey::from_bytes(*m));
                                let opened = key.and_then(|key| {
                                    NodeCipher::new(node.0, node.1, &key)
                                        .unwrap_data(&copy.key, wrapped)
                                        .ok()
                                        .map(|data| credit(&mut self.ciphers, copy.key, &data))
                                });
                                copy.opened_by.insert(*node_material, opened);
                                opened
                            }
                        };
                        if let Some(material) = opened {
                            reachable
                                .entry(copy.key)
                                .or_default()
                                .entry(material)
                                .or_default()
                                .extend(epochs.iter().copied());
                        }
                    }
                }
            }
        }
        let Some(store_id) = self.store_id else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (key, materials) in reachable {
            let (Some(ciphers), Some(sealed)) = (self.ciphers.get(&key), self.sealed.get_mut(&key))
            else {
                continue;
            };
            for s in sealed.iter_mut() {
                for &material in materials.keys() {
                    if s.found.is_some() || s.tried.contains(&material) {
                        continue;
                    }
                    s.tried.push(material);
                    self.attempts += 1;
                    let mut aad = store_id.to_vec();
                    aad.extend_from_slice(&s.tree_key);
                    let write = Envelope::parse(&s.value)
                        .ok()
                        .zip(ciphers.get(material))
                        .and_then(|(e, (_, cipher))| e.open(cipher, &aad).ok())
                        .and_then(|plain| write_id_in(&plain));
                    s.found = write.map(|w| (material, w));
                }
                // Recovered only while the material that opens it is
                // itself reachable.
                if let Some((material, write)) = s.found
                    && let Some(epochs) = materials.get(&material)
                {
                    out.push(Recovered {
                        write,
                        key,
                        epochs: epochs.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The index of `key`'s material among those seen under `id`, with a
/// cipher made for it the first time.
fn credit(
    ciphers: &mut HashMap<KeyId, Vec<([u8; 32], ValueCipher)>>,
    id: KeyId,
    key: &shredkv_crypto::DataKey,
) -> usize {
    let materials = ciphers.entry(id).or_default();
    let material = *key.expose_secret();
    materials
        .iter()
        .position(|(m, _)| *m == material)
        .unwrap_or_else(|| {
            materials.push((material, ValueCipher::new(key)));
            materials.len() - 1
        })
}
