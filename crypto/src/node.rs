//! The key tree: node keys between the epoch key and the data keys.
//!
//! Only the root node key is wrapped by the key provider
//! ([`WrapContext::TreeRoot`](crate::WrapContext::TreeRoot)); every node key
//! wraps its children, data keys or child node keys, with AES-256-GCM. A node
//! at depth d covers the subject tags whose first 4·d bits equal its prefix
//! (fan-out 16, at most [`NodeId::MAX_DEPTH`] levels below the root), so
//! destroying one node key destroys every key beneath it. A store keeps
//! several trees, *forests*, each with its own root: forest 0 for keys whose
//! death nothing predicts, and one per day for the keys that expire that day
//! (so a day's keys can die together, their forest removed whole).
//!
//! ```text
//! offset  size  field
//!      0     1  format version (2)
//!      1     9  parent node id      depth u8 ‖ forest u32 BE ‖ prefix u32 BE
//!     10     4  parent generation   u32 big-endian
//!     14    12  nonce (random)
//!     26    32  wrapped key bytes
//!     58    16  GCM tag
//!     74     4  CRC32 (IEEE) of bytes 0..74, u32 big-endian
//! ```
//!
//! The associated data is
//! `"shredkv/v2/wrap" ‖ parent node id (9) ‖ parent generation (u32 BE) ‖ kind ‖ child id`
//! (55 bytes), where the kind byte and the 26-byte child id name what is
//! wrapped ([`NodeChild`]), so a wrapped key moved to another child, another
//! node or another generation does not unwrap:
//!
//! | kind | wrapped        | child id (26 bytes)                          |
//! |------|----------------|----------------------------------------------|
//! | 1    | a data key     | its [`KeyId`]                                |
//! | 2    | a child node   | its [`NodeId`] (9 bytes), its own generation (u32 BE), then 13 zero bytes |
//!
//! The prefix differs from the epoch wrap's (`"shredkv/v1/wrap"`), so neither
//! kind of wrap opens as the other.

use std::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroize;

use crate::error::{AuthError, FormatError};
use crate::keys::{DataKey, KEY_LEN, KeyId, NodeKey, SUBJECT_TAG_LEN, SubjectTag};
use crate::wrap::unreachable_wrap;

/// Version byte of the node-wrapped key format.
pub const NODE_WRAPPED_VERSION: u8 = 2;
const WHAT: &str = "node-wrapped key";
const AAD_PREFIX: &[u8] = b"shredkv/v2/wrap";

/// Names a node of the key tree: in forest `forest`, the subject tags whose
/// first `4 · depth` bits equal `prefix`.
///
/// ```text
/// byte  0     depth     u8, at most MAX_DEPTH
///       1..5  forest    u32 big-endian
///       5..9  prefix    u32 big-endian, below 16^depth
/// ```
///
/// Depth comes first so that, sorted by these bytes, every root is in one
/// range and a node's children follow each other.
///
/// The fields are public; an id with `depth > MAX_DEPTH` or
/// `prefix >= 16^depth` is invalid: it covers no tag, and
/// [`NodeId::from_bytes`] never returns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// The tree the node belongs to (0: keys without a known death; other
    /// values are the engine's to assign).
    pub forest: u32,
    /// The depth below the root (the root is depth 0).
    pub depth: u8,
    /// The first `4 · depth` bits of every tag the node covers.
    pub prefix: u32,
}

impl NodeId {
    /// The deepest level of the tree (28 bits of prefix).
    pub const MAX_DEPTH: u8 = 7;
    /// Encoded length in bytes.
    pub const LEN: usize = 9;
    /// The root of forest 0: covers every tag.
    pub const ROOT: NodeId = NodeId::root(0);

    /// The root of `forest`.
    pub const fn root(forest: u32) -> NodeId {
        NodeId {
            forest,
            depth: 0,
            prefix: 0,
        }
    }

    /// The encoding described on the type.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = self.depth;
        out[1..5].copy_from_slice(&self.forest.to_be_bytes());
        out[5..].copy_from_slice(&self.prefix.to_be_bytes());
        out
    }

    /// Decodes [`NodeId::to_bytes`]; `None` unless `bytes` is exactly
    /// [`NodeId::LEN`] long and names a valid node (`depth <= MAX_DEPTH`,
    /// `prefix < 16^depth`).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let id = Self::decode(bytes);
        id.is_valid().then_some(id)
    }

    /// The node of `forest` at `depth` (clamped to [`NodeId::MAX_DEPTH`])
    /// that covers `tag`: the tag's first `4 · depth` bits, big-endian bit
    /// order.
    pub fn of_tag(forest: u32, tag: &SubjectTag, depth: u8) -> NodeId {
        let depth = depth.min(Self::MAX_DEPTH);
        let [a, b, c, d, ..] = tag.0;
        let prefix = u32::from_be_bytes([a, b, c, d])
            .checked_shr(32 - Self::bits(depth))
            .unwrap_or(0);
        NodeId {
            forest,
            depth,
            prefix,
        }
    }

    /// The node one level up; `None` for the root.
    pub fn parent(&self) -> Option<NodeId> {
        let depth = self.depth.checked_sub(1)?;
        Some(NodeId {
            forest: self.forest,
            depth,
            prefix: self.prefix >> 4,
        })
    }

    /// The child covering the tags whose next 4 bits are `nibble`; `None` at
    /// [`NodeId::MAX_DEPTH`] or for a nibble of 16 or more.
    pub fn child(&self, nibble: u8) -> Option<NodeId> {
        if self.depth >= Self::MAX_DEPTH || nibble >= 16 {
            return None;
        }
        Some(NodeId {
            forest: self.forest,
            depth: self.depth + 1,
            prefix: (self.prefix << 4) | u32::from(nibble),
        })
    }

    /// Whether `tag` lies under this node in its forest (always false for
    /// an invalid id).
    pub fn covers(&self, tag: &SubjectTag) -> bool {
        Self::of_tag(self.forest, tag, self.depth) == *self
    }

    /// The lowest and the highest 16-byte tag this node covers (both
    /// inclusive), for range scans of a store keyed by tag first. For an
    /// invalid id the depth is clamped and the prefix's excess bits ignored.
    pub fn tag_range(&self) -> ([u8; SUBJECT_TAG_LEN], [u8; SUBJECT_TAG_LEN]) {
        let bits = Self::bits(self.depth.min(Self::MAX_DEPTH));
        let low_word = self.prefix.checked_shl(32 - bits).unwrap_or(0);
        let high_word = low_word | u32::MAX.checked_shr(bits).unwrap_or(0);
        let mut low = [0u8; SUBJECT_TAG_LEN];
        let mut high = [0xFFu8; SUBJECT_TAG_LEN];
        low[..4].copy_from_slice(&low_word.to_be_bytes());
        high[..4].copy_from_slice(&high_word.to_be_bytes());
        (low, high)
    }

    /// Prefix bits of a node at `depth` (at most 28 for a clamped depth).
    fn bits(depth: u8) -> u32 {
        4 * u32::from(depth)
    }

    fn is_valid(&self) -> bool {
        self.depth <= Self::MAX_DEPTH && self.prefix >> Self::bits(self.depth) == 0
    }

    /// The encoding read back without checking it.
    fn decode(bytes: &[u8; Self::LEN]) -> Self {
        let [depth, f0, f1, f2, f3, a, b, c, d] = *bytes;
        NodeId {
            forest: u32::from_be_bytes([f0, f1, f2, f3]),
            depth,
            prefix: u32::from_be_bytes([a, b, c, d]),
        }
    }
}

/// What a node key wraps, bound into the wrap's associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChild {
    /// A data key, named by its id.
    DataKey(KeyId),
    /// A child node's key, named by the child's id and the child's own
    /// generation (so the generation stored beside the wrap is
    /// authenticated with it).
    Node {
        /// The child node.
        id: NodeId,
        /// The child's generation the key belongs to.
        generation: u32,
    },
}

impl NodeChild {
    /// Length of [`NodeChild::associated_data`].
    pub const AAD_LEN: usize = AAD_PREFIX.len() + NodeId::LEN + 4 + 1 + KeyId::LEN;

    /// The associated data a key wrapped for this child by the key of
    /// `parent` at `generation` is sealed with (see the module docs).
    pub fn associated_data(&self, parent: NodeId, generation: u32) -> [u8; Self::AAD_LEN] {
        let mut out = [0u8; Self::AAD_LEN];
        let (prefix, rest) = out.split_at_mut(AAD_PREFIX.len());
        prefix.copy_from_slice(AAD_PREFIX);
        let (node, rest) = rest.split_at_mut(NodeId::LEN);
        node.copy_from_slice(&parent.to_bytes());
        let (generation_bytes, rest) = rest.split_at_mut(4);
        generation_bytes.copy_from_slice(&generation.to_be_bytes());
        let (kind, id) = rest.split_at_mut(1);
        match self {
            Self::DataKey(key_id) => {
                kind.copy_from_slice(&[1]);
                id.copy_from_slice(&key_id.to_bytes());
            }
            Self::Node {
                id: child,
                generation: child_generation,
            } => {
                kind.copy_from_slice(&[2]);
                let (node, rest) = id.split_at_mut(NodeId::LEN);
                node.copy_from_slice(&child.to_bytes());
                if let Some(first) = rest.first_chunk_mut::<4>() {
                    *first = child_generation.to_be_bytes();
                }
            }
        }
        out
    }
}

/// A key wrapped under a node key: safe to store anywhere. Useless once that
/// node key (or any key above it) is destroyed.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeWrapped([u8; NodeWrapped::LEN]);

impl NodeWrapped {
    /// Encoded length in bytes.
    pub const LEN: usize = 1 + NodeId::LEN + 4 + 12 + KEY_LEN + 16 + 4;

    /// The node whose key wrapped this key.
    pub fn node(&self) -> NodeId {
        let mut id = [0u8; NodeId::LEN];
        id.copy_from_slice(&self.0[1..10]);
        NodeId::decode(&id)
    }

    /// The generation of the node key that wrapped this key.
    pub fn generation(&self) -> u32 {
        let mut generation = [0u8; 4];
        generation.copy_from_slice(&self.0[10..14]);
        u32::from_be_bytes(generation)
    }

    /// The encoded bytes (see the module docs).
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Decodes and checks length, CRC, version and the parent node id.
    /// Never panics.
    ///
    /// # Errors
    /// [`FormatError`] naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        let array: [u8; Self::LEN] = bytes.try_into().map_err(|_| {
            if bytes.len() < Self::LEN {
                FormatError::Truncated {
                    what: WHAT,
                    needed: Self::LEN,
                    got: bytes.len(),
                }
            } else {
                FormatError::InvalidField {
                    what: WHAT,
                    detail: "longer than a node-wrapped key",
                }
            }
        })?;
        let (body, crc) = array
            .split_last_chunk::<4>()
            .ok_or(FormatError::Truncated {
                what: WHAT,
                needed: Self::LEN,
                got: 0,
            })?;
        let expected = u32::from_be_bytes(*crc);
        let got = crc32fast::hash(body);
        if expected != got {
            return Err(FormatError::ChecksumMismatch {
                what: WHAT,
                expected,
                got,
            });
        }
        if array[0] != NODE_WRAPPED_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                found: array[0],
            });
        }
        let wrapped = Self(array);
        if !wrapped.node().is_valid() {
            return Err(FormatError::InvalidField {
                what: WHAT,
                detail: "parent node id out of range (depth above 7 or prefix too long)",
            });
        }
        Ok(wrapped)
    }
}

impl fmt::Debug for NodeWrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeWrapped")
            .field("node", &self.node())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// A node key made ready to wrap and unwrap its children. Zeroized on drop.
pub struct NodeCipher {
    node: NodeId,
    generation: u32,
    aead: Aes256Gcm,
}

impl NodeCipher {
    /// Expands the key of `node` at `generation`.
    pub fn new(node: NodeId, generation: u32, key: &NodeKey) -> Self {
        Self {
            node,
            generation,
            aead: Aes256Gcm::new(key.expose_secret().into()),
        }
    }

    /// The node this cipher's key belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The generation of this cipher's key.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Wraps the data key `key` named `id`.
    pub fn wrap_data(&self, id: &KeyId, key: &DataKey) -> NodeWrapped {
        self.seal(&NodeChild::DataKey(*id), key.expose_secret())
    }

    /// Unwraps the data key named `id`, wrapped by this node at this
    /// generation.
    ///
    /// # Errors
    /// [`AuthError`] if the wrapped key was altered, belongs to another
    /// child, or was wrapped by another node or generation.
    pub fn unwrap_data(&self, id: &KeyId, wrapped: &NodeWrapped) -> Result<DataKey, AuthError> {
        let mut key = [0u8; KEY_LEN];
        let result = self
            .open(&NodeChild::DataKey(*id), wrapped, &mut key)
            .map(|()| DataKey::from_bytes(key));
        key.zeroize();
        result
    }

    /// Wraps the key of the child node `child` at the child's own
    /// `child_generation`.
    pub fn wrap_node(&self, child: NodeId, child_generation: u32, key: &NodeKey) -> NodeWrapped {
        let child = NodeChild::Node {
            id: child,
            generation: child_generation,
        };
        self.seal(&child, key.expose_secret())
    }

    /// Unwraps the key of the child node `child` at `child_generation`,
    /// wrapped by this node at this generation.
    ///
    /// # Errors
    /// [`AuthError`] if the wrapped key was altered, belongs to another
    /// child, or was wrapped by another node or generation.
    pub fn unwrap_node(
        &self,
        child: NodeId,
        child_generation: u32,
        wrapped: &NodeWrapped,
    ) -> Result<NodeKey, AuthError> {
        let child = NodeChild::Node {
            id: child,
            generation: child_generation,
        };
        let mut key = [0u8; KEY_LEN];
        let result = self
            .open(&child, wrapped, &mut key)
            .map(|()| NodeKey::from_bytes(key));
        key.zeroize();
        result
    }

    fn seal(&self, child: &NodeChild, key: &[u8; KEY_LEN]) -> NodeWrapped {
        let mut out = [0u8; NodeWrapped::LEN];
        let mut nonce = [0u8; 12];
        crate::random::fill(&mut nonce);
        out[0] = NODE_WRAPPED_VERSION;
        out[1..10].copy_from_slice(&self.node.to_bytes());
        out[10..14].copy_from_slice(&self.generation.to_be_bytes());
        out[14..26].copy_from_slice(&nonce);
        out[26..58].copy_from_slice(key);
        let aad = child.associated_data(self.node, self.generation);
        let tag = match self.aead.encrypt_inout_detached(
            &Nonce::from(nonce),
            &aad,
            (&mut out[26..58]).into(),
        ) {
            Ok(tag) => tag,
            // 32 bytes of plaintext and 55 of AAD are far inside GCM's limits.
            Err(_) => unreachable_wrap(),
        };
        out[58..74].copy_from_slice(&tag);
        let crc = crc32fast::hash(&out[..74]);
        out[74..78].copy_from_slice(&crc.to_be_bytes());
        NodeWrapped(out)
    }

    /// Opens `wrapped` into `key`, which holds the key bytes on success and
    /// zeros on failure.
    fn open(
        &self,
        child: &NodeChild,
        wrapped: &NodeWrapped,
        key: &mut [u8; KEY_LEN],
    ) -> Result<(), AuthError> {
        if wrapped.node() != self.node || wrapped.generation() != self.generation {
            return Err(AuthError);
        }
        let bytes = &wrapped.0;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[14..26]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&bytes[58..74]);
        key.copy_from_slice(&bytes[26..58]);
        let aad = child.associated_data(self.node, self.generation);
        let result = self.aead.decrypt_inout_detached(
            &Nonce::from(nonce),
            &aad,
            (&mut key[..]).into(),
            &tag.into(),
        );
        if result.is_err() {
            key.zeroize();
            return Err(AuthError);
        }
        Ok(())
    }
}

impl fmt::Debug for NodeCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCipher")
            .field("node", &self.node)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NODE: NodeId = NodeId {
        forest: 0,
        depth: 2,
        prefix: 0x35,
    };
    const GENERATION: u32 = 9;

    fn id() -> KeyId {
        KeyId {
            subject: SubjectTag([0x35; 16]),
            class: 1,
            bucket: 2,
            version: 3,
        }
    }

    fn cipher(node: NodeId, generation: u32, byte: u8) -> NodeCipher {
        NodeCipher::new(node, generation, &NodeKey::from_bytes([byte; KEY_LEN]))
    }

    fn random_tag() -> SubjectTag {
        let mut tag = [0u8; SUBJECT_TAG_LEN];
        crate::random::fill(&mut tag);
        SubjectTag(tag)
    }

    /// `wrapped` with its header's node id and generation replaced (CRC fixed
    /// up), to test the associated data apart from the header check.
    fn relabelled(wrapped: &NodeWrapped, node: NodeId, generation: u32) -> NodeWrapped {
        let mut bytes = *wrapped.as_bytes();
        bytes[1..10].copy_from_slice(&node.to_bytes());
        bytes[10..14].copy_from_slice(&generation.to_be_bytes());
        let crc = crc32fast::hash(&bytes[..74]);
        bytes[74..].copy_from_slice(&crc.to_be_bytes());
        NodeWrapped::from_bytes(&bytes).expect("valid format")
    }

    #[test]
    fn data_key_round_trips() {
        let c = cipher(NODE, GENERATION, 8);
        let key = DataKey::from_bytes([0x5a; KEY_LEN]);
        let wrapped = c.wrap_data(&id(), &key);
        assert_eq!(wrapped.node(), NODE);
        assert_eq!(wrapped.generation(), GENERATION);
        let parsed = NodeWrapped::from_bytes(wrapped.as_bytes()).expect("valid format");
        assert_eq!(parsed, wrapped);
        let back = c.unwrap_data(&id(), &parsed).expect("unwrap");
        assert_eq!(back.expose_secret(), key.expose_secret());
    }

    #[test]
    fn node_key_round_trips() {
        let c = cipher(NODE, GENERATION, 8);
        let child = NODE.child(0xc).expect("a child");
        let key = NodeKey::from_bytes([0x5a; KEY_LEN]);
        let wrapped = c.wrap_node(child, 1, &key);
        let back = c.unwrap_node(child, 1, &wrapped).expect("unwrap");
        assert_eq!(back.expose_secret(), key.expose_secret());
    }

    #[test]
    fn binds_the_parent_node() {
        let key = [8; KEY_LEN];
        let wrapped = cipher(NODE, GENERATION, 8).wrap_data(&id(), &DataKey::from_bytes([1; 32]));
        let other = NodeId {
            forest: 0,
            depth: 2,
            prefix: 0x36,
        };
        let other_cipher = NodeCipher::new(other, GENERATION, &NodeKey::from_bytes(key));
        assert!(other_cipher.unwrap_data(&id(), &wrapped).is_err());
        // With the header rewritten to the other node, the associated data
        // still refuses it.
        let moved = relabelled(&wrapped, other, GENERATION);
        assert!(other_cipher.unwrap_data(&id(), &moved).is_err());
    }

    #[test]
    fn binds_the_parent_nodes_forest() {
        let key = [8; KEY_LEN];
        let wrapped = cipher(NODE, GENERATION, 8).wrap_data(&id(), &DataKey::from_bytes([1; 32]));
        let same_place_next_day = NodeId {
            forest: NODE.forest + 1,
            ..NODE
        };
        let moved = relabelled(&wrapped, same_place_next_day, GENERATION);
        let other_cipher =
            NodeCipher::new(same_place_next_day, GENERATION, &NodeKey::from_bytes(key));
        assert!(other_cipher.unwrap_data(&id(), &moved).is_err());
        let child = cipher(NODE, GENERATION, 8).wrap_node(
            NodeId {
                depth: 3,
                prefix: 0x351,
                ..NODE
            },
            4,
            &NodeKey::from_bytes([3; KEY_LEN]),
        );
        let in_other_forest = NodeId {
            forest: 5,
            depth: 3,
            prefix: 0x351,
        };
        assert!(
            cipher(NODE, GENERATION, 8)
                .unwrap_node(in_other_forest, 4, &child)
                .is_err()
        );
    }

    #[test]
    fn binds_the_parent_generation() {
        let wrapped = cipher(NODE, GENERATION, 8).wrap_data(&id(), &DataKey::from_bytes([1; 32]));
        let next = cipher(NODE, GENERATION + 1, 8);
        assert!(next.unwrap_data(&id(), &wrapped).is_err());
        let moved = relabelled(&wrapped, NODE, GENERATION + 1);
        assert!(next.unwrap_data(&id(), &moved).is_err());
    }

    #[test]
    fn binds_the_kind() {
        let c = cipher(NODE, GENERATION, 8);
        let child = NODE.child(1).expect("a child");
        // A key id whose 26 bytes are the child node's id and generation
        // padded with zeros: the two associated data differ in the kind
        // byte only.
        let mut subject = [0u8; 16];
        subject[..NodeId::LEN].copy_from_slice(&child.to_bytes());
        subject[NodeId::LEN..NodeId::LEN + 4].copy_from_slice(&1u32.to_be_bytes());
        let lookalike = KeyId {
            subject: SubjectTag(subject),
            class: 0,
            bucket: 0,
            version: 0,
        };
        let as_data = NodeChild::DataKey(lookalike).associated_data(NODE, GENERATION);
        let as_node = NodeChild::Node {
            id: child,
            generation: 1,
        }
        .associated_data(NODE, GENERATION);
        let differing: Vec<usize> = (0..NodeChild::AAD_LEN)
            .filter(|&i| as_data[i] != as_node[i])
            .collect();
        assert_eq!(differing, [AAD_PREFIX.len() + NodeId::LEN + 4]);
        let data = c.wrap_data(&lookalike, &DataKey::from_bytes([1; 32]));
        assert!(c.unwrap_node(child, 1, &data).is_err());
        let node = c.wrap_node(child, 1, &NodeKey::from_bytes([1; 32]));
        assert!(c.unwrap_data(&lookalike, &node).is_err());
    }

    #[test]
    fn binds_every_field_of_the_key_id() {
        let c = cipher(NODE, GENERATION, 8);
        let wrapped = c.wrap_data(&id(), &DataKey::from_bytes([1; 32]));
        let mut subject = id();
        subject.subject.0[15] ^= 1;
        assert!(c.unwrap_data(&subject, &wrapped).is_err(), "subject");
        let class = KeyId { class: 2, ..id() };
        assert!(c.unwrap_data(&class, &wrapped).is_err(), "class");
        let bucket = KeyId { bucket: 3, ..id() };
        assert!(c.unwrap_data(&bucket, &wrapped).is_err(), "bucket");
        let version = KeyId { version: 4, ..id() };
        assert!(c.unwrap_data(&version, &wrapped).is_err(), "version");
    }

    #[test]
    fn binds_the_child_node_id() {
        let c = cipher(NODE, GENERATION, 8);
        let wrapped = c.wrap_node(
            NODE.child(1).expect("a child"),
            1,
            &NodeKey::from_bytes([1; 32]),
        );
        let sibling = NODE.child(2).expect("a child");
        assert!(c.unwrap_node(sibling, 1, &wrapped).is_err());
    }

    #[test]
    fn binds_the_child_nodes_own_generation() {
        let c = cipher(NODE, GENERATION, 8);
        let child = NODE.child(1).expect("a child");
        let wrapped = c.wrap_node(child, 7, &NodeKey::from_bytes([1; 32]));
        assert!(c.unwrap_node(child, 7, &wrapped).is_ok());
        assert!(c.unwrap_node(child, 8, &wrapped).is_err());
    }

    #[test]
    fn another_key_of_the_same_node_and_generation_fails() {
        let wrapped = cipher(NODE, GENERATION, 8).wrap_data(&id(), &DataKey::from_bytes([1; 32]));
        let impostor = cipher(NODE, GENERATION, 7);
        assert!(impostor.unwrap_data(&id(), &wrapped).is_err());
    }

    #[test]
    fn every_byte_flip_is_rejected() {
        let c = cipher(NODE, GENERATION, 1);
        let wrapped = c.wrap_data(&id(), &DataKey::from_bytes([2; 32]));
        for i in 0..NodeWrapped::LEN {
            let mut bytes = *wrapped.as_bytes();
            bytes[i] ^= 0x10;
            assert!(matches!(
                NodeWrapped::from_bytes(&bytes),
                Err(FormatError::ChecksumMismatch { .. })
            ));
            // With the CRC fixed up, authentication must still fail.
            let crc = crc32fast::hash(&bytes[..74]);
            bytes[74..].copy_from_slice(&crc.to_be_bytes());
            if i < 74
                && let Ok(tampered) = NodeWrapped::from_bytes(&bytes)
            {
                assert!(
                    c.unwrap_data(&id(), &tampered).is_err(),
                    "flip at {i} unwrapped"
                );
            }
        }
        assert!(NodeWrapped::from_bytes(&wrapped.as_bytes()[..10]).is_err());
    }

    #[test]
    fn from_bytes_rejects_bad_input() {
        let wrapped = cipher(NODE, GENERATION, 1).wrap_data(&id(), &DataKey::from_bytes([2; 32]));
        let with = |edit: &dyn Fn(&mut [u8; NodeWrapped::LEN])| {
            let mut bytes = *wrapped.as_bytes();
            edit(&mut bytes);
            let crc = crc32fast::hash(&bytes[..74]);
            bytes[74..].copy_from_slice(&crc.to_be_bytes());
            NodeWrapped::from_bytes(&bytes)
        };
        for version in [0, 1, 3, 0xFF] {
            assert_eq!(
                with(&|b| b[0] = version),
                Err(FormatError::UnsupportedVersion {
                    what: WHAT,
                    found: version
                })
            );
        }
        let bad_ids = [
            [8, 0, 0, 0, 0, 0, 0, 0, 0],
            [0xFF, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 0, 0, 1, 0],
            [7, 0, 0, 0, 9, 0x10, 0, 0, 0],
        ];
        for id in bad_ids {
            assert!(
                matches!(
                    with(&|b| b[1..10].copy_from_slice(&id)),
                    Err(FormatError::InvalidField { .. })
                ),
                "{id:?}"
            );
        }
        let long = [wrapped.as_bytes().as_slice(), &[0u8][..]].concat();
        assert!(matches!(
            NodeWrapped::from_bytes(&long),
            Err(FormatError::InvalidField { .. })
        ));
        for len in [0, 1, NodeWrapped::LEN - 1] {
            assert_eq!(
                NodeWrapped::from_bytes(&wrapped.as_bytes()[..len]),
                Err(FormatError::Truncated {
                    what: WHAT,
                    needed: NodeWrapped::LEN,
                    got: len
                })
            );
        }
    }

    #[test]
    fn key_bytes_never_appear_in_the_wrapped_bytes() {
        let c = cipher(NODE, GENERATION, 8);
        let data = c.wrap_data(&id(), &DataKey::from_bytes([0x5a; KEY_LEN]));
        let node = c.wrap_node(
            NODE.child(0).expect("a child"),
            1,
            &NodeKey::from_bytes([0x5a; 32]),
        );
        for wrapped in [data, node] {
            assert!(!wrapped.as_bytes().windows(8).any(|w| w == [0x5a; 8]));
        }
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = NodeKey::from_bytes([0xAB; KEY_LEN]);
        let c = NodeCipher::new(NODE, GENERATION, &key);
        let wrapped = c.wrap_node(NODE.child(3).expect("a child"), 1, &key);
        for printed in [
            format!("{key:?}"),
            format!("{c:?}"),
            format!("{wrapped:?}"),
            format!("{c:#?}"),
            format!("{wrapped:#?}"),
        ] {
            assert!(!printed.to_lowercase().contains("ab"), "{printed}");
            assert!(!printed.contains("171"), "{printed}");
        }
        assert_eq!(
            format!("{wrapped:?}"),
            "NodeWrapped { node: NodeId { forest: 0, depth: 2, prefix: 53 }, generation: 9, .. }"
        );
    }

    #[test]
    fn cipher_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NodeCipher>();
        assert_send_sync::<NodeWrapped>();
    }

    #[test]
    fn node_id_round_trips_and_rejects_invalid_ids() {
        for depth in 0..=NodeId::MAX_DEPTH {
            let limit = 1u64 << (4 * u32::from(depth));
            for prefix in [0, limit / 3, limit - 1] {
                let prefix = u32::try_from(prefix).expect("28 bits");
                let node = NodeId {
                    forest: 7,
                    depth,
                    prefix,
                };
                assert_eq!(NodeId::from_bytes(&node.to_bytes()), Some(node));
            }
            let too_long = NodeId {
                forest: 0,
                depth,
                prefix: u32::try_from(limit).expect("28 bits"),
            };
            assert_eq!(NodeId::from_bytes(&too_long.to_bytes()), None);
        }
        for depth in [NodeId::MAX_DEPTH + 1, 0xFF] {
            assert_eq!(NodeId::from_bytes(&[depth, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        }
        assert_eq!(NodeId::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 0xF, 0]), None);
        assert_eq!(NodeId::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(NodeId::from_bytes(&[]), None);
        assert_eq!(NodeId::ROOT.to_bytes(), [0; 9]);
        let day = NodeId {
            forest: 0x0102_0304,
            depth: 2,
            prefix: 0xAB,
        };
        assert_eq!(day.to_bytes(), [2, 1, 2, 3, 4, 0, 0, 0, 0xAB]);
        assert_eq!(NodeId::from_bytes(&day.to_bytes()), Some(day));
    }

    #[test]
    fn parent_and_child_are_inverse() {
        assert_eq!(NodeId::ROOT.parent(), None);
        let mut node = NodeId::ROOT;
        for nibble in [0xF, 0, 7, 0xA, 1, 0xE, 3] {
            let child = node.child(nibble).expect("below MAX_DEPTH");
            assert_eq!(child.parent(), Some(node));
            node = child;
        }
        assert_eq!(node.depth, NodeId::MAX_DEPTH);
        assert_eq!(node.prefix, 0x0F07_A1E3);
        assert_eq!(node.child(0), None);
        assert_eq!(NodeId::ROOT.child(16), None);
    }

    #[test]
    fn of_tag_takes_the_leading_nibbles() {
        let tag = SubjectTag([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(NodeId::of_tag(0, &tag, 0), NodeId::ROOT);
        assert_eq!(
            NodeId::of_tag(0, &tag, 3),
            NodeId {
                forest: 0,
                depth: 3,
                prefix: 0x123
            }
        );
        let deepest = NodeId {
            forest: 0,
            depth: 7,
            prefix: 0x0123_4567,
        };
        assert_eq!(NodeId::of_tag(0, &tag, 7), deepest);
        assert_eq!(NodeId::of_tag(0, &tag, 200), deepest, "depth is clamped");
    }

    #[test]
    fn ancestors_cover_a_tag_and_siblings_do_not() {
        for _ in 0..8 {
            let tag = random_tag();
            let node = NodeId::of_tag(0, &tag, 5);
            let mut ancestor = Some(node);
            while let Some(current) = ancestor {
                assert!(current.covers(&tag), "{current:?} {tag:?}");
                let (low, high) = current.tag_range();
                assert!(low <= tag.0 && tag.0 <= high);
                if let Some(parent) = current.parent() {
                    for nibble in 0..16 {
                        let sibling = parent.child(nibble).expect("a child");
                        assert_eq!(sibling.covers(&tag), sibling == current);
                    }
                }
                ancestor = current.parent();
            }
        }
    }

    #[test]
    fn tag_range_bounds_are_covered_and_one_past_is_not() {
        let nodes = [
            NodeId::ROOT,
            NodeId {
                forest: 0,
                depth: 1,
                prefix: 0,
            },
            NodeId {
                forest: 0,
                depth: 1,
                prefix: 0xF,
            },
            NodeId {
                forest: 0,
                depth: 3,
                prefix: 0x5a7,
            },
            NodeId {
                forest: 0,
                depth: 7,
                prefix: 0x0FFF_FFFF,
            },
            NodeId {
                forest: 0,
                depth: 7,
                prefix: 0x0123_4567,
            },
        ];
        for node in nodes {
            let (low, high) = node.tag_range();
            assert!(node.covers(&SubjectTag(low)), "{node:?}");
            assert!(node.covers(&SubjectTag(high)), "{node:?}");
            let (low, high) = (u128::from_be_bytes(low), u128::from_be_bytes(high));
            if let Some(before) = low.checked_sub(1) {
                assert!(!node.covers(&SubjectTag(before.to_be_bytes())), "{node:?}");
            }
            if let Some(after) = high.checked_add(1) {
                assert!(!node.covers(&SubjectTag(after.to_be_bytes())), "{node:?}");
            }
        }
        assert_eq!(NodeId::ROOT.tag_range(), ([0; 16], [0xFF; 16]));
    }

    #[test]
    fn invalid_ids_cover_nothing_and_never_panic() {
        let tag = SubjectTag([0; 16]);
        for node in [
            NodeId {
                forest: 0,
                depth: 8,
                prefix: 0,
            },
            NodeId {
                forest: 0,
                depth: 0xFF,
                prefix: u32::MAX,
            },
            NodeId {
                forest: 0,
                depth: 0,
                prefix: 1,
            },
        ] {
            assert!(!node.covers(&tag));
            let _ = (node.tag_range(), node.parent(), node.child(0));
        }
    }

    proptest! {
        #[test]
        fn any_key_round_trips(
            depth in 0..=NodeId::MAX_DEPTH,
            generation in any::<u32>(),
            subject in any::<[u8; 16]>(),
            class in any::<u16>(),
            bucket in any::<u32>(),
            version in any::<u32>(),
            key in any::<[u8; KEY_LEN]>(),
        ) {
            let node = NodeId::of_tag(3, &SubjectTag(subject), depth);
            let c = NodeCipher::new(node, generation, &NodeKey::from_bytes([4; KEY_LEN]));
            let id = KeyId { subject: SubjectTag(subject), class, bucket, version };
            let wrapped = c.wrap_data(&id, &DataKey::from_bytes(key));
            let parsed = NodeWrapped::from_bytes(wrapped.as_bytes()).expect("valid format");
            let back = c.unwrap_data(&id, &parsed).expect("unwrap");
            prop_assert_eq!(back.expose_secret(), &key);
        }

        #[test]
        fn node_of_a_tag_covers_it(tag in any::<[u8; 16]>(), depth in 0..=NodeId::MAX_DEPTH) {
            let tag = SubjectTag(tag);
            let node = NodeId::of_tag(0, &tag, depth);
            prop_assert!(node.covers(&tag));
            prop_assert_eq!(NodeId::from_bytes(&node.to_bytes()), Some(node));
            let (low, high) = node.tag_range();
            prop_assert!(low <= tag.0 && tag.0 <= high);
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = NodeWrapped::from_bytes(&bytes)
                .map(|w| cipher(w.node(), w.generation(), 1).unwrap_data(&id(), &w));
            let _ = NodeId::from_bytes(&bytes[..bytes.len().min(6)]);
        }

        #[test]
        fn from_bytes_with_a_good_crc_never_panics(body in any::<[u8; 70]>()) {
            let crc = crc32fast::hash(&body).to_be_bytes();
            let bytes = [body.as_slice(), crc.as_slice()].concat();
            if let Ok(w) = NodeWrapped::from_bytes(&bytes) {
                prop_assert_eq!(w.as_bytes().as_slice(), bytes.as_slice());
                prop_assert!(cipher(w.node(), w.generation(), 1).unwrap_data(&id(), &w).is_err());
            }
        }
    }
}
