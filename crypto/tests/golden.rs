//! Golden files: bytes written by the code of each format version, committed
//! under `tests/fixtures/` (see its `README.md` for the inputs), that every
//! later build must keep reading. A format change without a version bump
//! fails here.
//!
//! Nonces and epoch keys are random, so fixtures are written once and
//! committed; these tests check that they still parse and open, and that a
//! fresh write of the same input still has the same length and header bytes.
//! `SHREDKV_REGENERATE_FIXTURES=1` rewrites them, `=new` writes only those not
//! committed yet (see [`regenerate_fixtures_only_when_asked`]); nothing else
//! writes there.

use std::fs;
use std::path::{Path, PathBuf};

use shredkv_crypto::internal::check_key_file_bytes;
use shredkv_crypto::{
    Anchor, AuthError, DataKey, Envelope, EpochCipher, EpochId, EpochKey, FileKeyProvider,
    FormatError, KeyId, KeyProvider, KeyRef, NodeCipher, NodeId, NodeKey, NodeWrapped,
    ProviderError, SubjectTag, ValueCipher, WrapContext, WrappedKey, seal,
};

/// Set to `1` to rewrite the committed fixtures from today's code, or to
/// `new` to write only those not committed yet (a new format version).
const REGENERATE: &str = "SHREDKV_REGENERATE_FIXTURES";

/// The anchor in `keyfile-v2-anchored.bin`.
const GOLDEN_ANCHOR: Anchor = Anchor {
    generation: 1,
    seq: 42,
    head: counting(0x80),
};
const ANCHOR_LEN: usize = 64;

/// CRC32 (IEEE), as the key file uses: a small local copy so this test
/// needs no extra dependency.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// 32 bytes counting up from `start`: `start, start+1, …, start+31`.
const fn counting(start: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i: u8 = 0;
    while i < 32 {
        out[i as usize] = start.wrapping_add(i);
        i += 1;
    }
    out
}

/// The data key that seals the envelope fixtures: `00 01 … 1f`.
const ENVELOPE_KEY: [u8; 32] = counting(0x00);
/// The key reference in the envelope headers.
const ENVELOPE_REF: KeyRef = KeyRef {
    bucket: 7,
    version: 2,
};
/// The expiry of `envelope-v1-expiry.bin`: 2027-01-01T00:00:00Z.
const EXPIRY: i64 = 1_798_761_600;
/// Associated data of both envelopes.
const ENVELOPE_AAD: &[u8] = b"golden/v1 store-1 subject-a class-3 record-42";
const PLAINTEXT_NO_EXPIRY: &[u8] = b"golden envelope v1, no expiry";
const PLAINTEXT_EXPIRY: &[u8] = b"golden envelope v1, expires 2027-01-01T00:00:00Z";

/// The epoch key wrapping the wrapped-key fixtures: `20 21 … 3f`, epoch 7.
const EPOCH_KEY: [u8; 32] = counting(0x20);
const EPOCH: EpochId = EpochId(7);
/// The data key inside `wrapped-key-v1-data-key.bin` and the key-file wraps.
const WRAPPED_DATA_KEY: [u8; 32] = counting(0x40);
/// The store secret inside `wrapped-key-v1-store-secret.bin`.
const WRAPPED_STORE_SECRET: [u8; 32] = counting(0x60);
/// The data-key context of the data-key wraps.
const DATA_KEY_ID: KeyId = KeyId {
    subject: SubjectTag([0xaa; 16]),
    class: 3,
    bucket: 7,
    version: 2,
};

/// The root node key inside `wrapped-key-v1-tree-root.bin`, wrapped by the
/// epoch key above.
const TREE_ROOT_KEY: [u8; 32] = counting(0xA0);
/// The wrap context of `wrapped-key-v1-tree-root.bin`.
const TREE_ROOT: WrapContext = WrapContext::TreeRoot {
    forest: 0,
    generation: 1,
};
/// The day forest of the node-wrapped fixtures (the keys expiring on day
/// 20,000 after 1970-01-01: bucket 20,002).
const DAY_FOREST: u32 = 20_002;

/// The node whose key wraps `node-wrapped-v2-data-key.bin`; also the child
/// whose key `node-wrapped-v2-node.bin` holds.
const NODE: NodeId = NodeId {
    forest: DAY_FOREST,
    depth: 5,
    prefix: 0xABCDE,
};
/// The generation of [`NODE`]'s key (in both node-wrapped fixtures).
const NODE_GENERATION: u32 = 3;
/// [`NODE`]'s key, wrapping the data key.
const NODE_KEY: [u8; 32] = counting(0xA0);
/// The data key inside `node-wrapped-v2-data-key.bin` (its id is
/// [`DATA_KEY_ID`]).
const NODE_WRAPPED_DATA_KEY: [u8; 32] = counting(0x80);
/// [`NODE`]'s parent, whose key wraps `node-wrapped-v2-node.bin`.
const PARENT: NodeId = NodeId {
    forest: DAY_FOREST,
    depth: 4,
    prefix: 0xABCD,
};
const PARENT_GENERATION: u32 = 9;
const PARENT_KEY: [u8; 32] = counting(0xE0);
/// The child key inside `node-wrapped-v2-node.bin`: [`NODE`]'s key at
/// [`NODE_GENERATION`] as its parent wraps it (not [`NODE_KEY`]: another
/// input, so the two fixtures cannot stand in for each other).
const CHILD_NODE_KEY: [u8; 32] = counting(0xC0);
/// Node-wrapped key header of the data-key wrap: version 2, node (depth 5,
/// forest 20,002 = 0x4e22, prefix 0x000abcde), generation 3.
const HEADER_NODE_DATA_KEY: [u8; 14] = [2, 5, 0, 0, 0x4e, 0x22, 0x00, 0x0a, 0xbc, 0xde, 0, 0, 0, 3];
/// Node-wrapped key header of the child-node wrap: version 2, node (depth 4,
/// forest 0x4e22, prefix 0x0000abcd), generation 9.
const HEADER_NODE_CHILD: [u8; 14] = [2, 4, 0, 0, 0x4e, 0x22, 0x00, 0x00, 0xab, 0xcd, 0, 0, 0, 9];
/// Bytes before the nonce of a node-wrapped key: version, node id,
/// generation.
const NODE_HEADER_LEN: usize = 14;

/// Envelope header without expiry: version 1, flags 0, bucket 7, version 2.
const HEADER_NO_EXPIRY: [u8; 10] = [1, 0, 0, 0, 0, 7, 0, 0, 0, 2];
/// Envelope header with expiry: flags 1, then 2027-01-01 as i64 big-endian.
const HEADER_EXPIRY: [u8; 18] = [
    1, 1, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 0, 0x6b, 0x36, 0xec, 0x80,
];
/// Slots in the key-file fixture.
const KEY_FILE_SLOTS: u16 = 4;
const HEADER_LEN: usize = 32;
const SLOT_LEN: usize = 48;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn envelope_cipher() -> ValueCipher {
    ValueCipher::new(&DataKey::from_bytes(ENVELOPE_KEY))
}

fn epoch_cipher() -> EpochCipher {
    EpochCipher::new(EPOCH, &EpochKey::from_bytes(EPOCH_KEY))
}

fn node_cipher() -> NodeCipher {
    NodeCipher::new(NODE, NODE_GENERATION, &NodeKey::from_bytes(NODE_KEY))
}

fn parent_cipher() -> NodeCipher {
    NodeCipher::new(PARENT, PARENT_GENERATION, &NodeKey::from_bytes(PARENT_KEY))
}

/// `wrapped` with its header's node id and generation replaced and its CRC
/// fixed up, so the associated data is tested apart from the header check.
fn relabelled(wrapped: &NodeWrapped, node: NodeId, generation: u32) -> NodeWrapped {
    let mut bytes = *wrapped.as_bytes();
    bytes[1..10].copy_from_slice(&node.to_bytes());
    bytes[10..14].copy_from_slice(&generation.to_be_bytes());
    fix_crc(&mut bytes);
    NodeWrapped::from_bytes(&bytes).expect("valid format")
}

/// Recomputes the trailing big-endian CRC32 over everything before it, as a
/// tamperer (not media corruption) would.
fn fix_crc(bytes: &mut [u8]) {
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_be_bytes());
}

/// Every fixture, written fresh by today's code: `(file name, bytes)`.
fn generate() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();

    // Envelopes.
    let cipher = envelope_cipher();
    let plain = seal(
        &cipher,
        ENVELOPE_REF,
        None,
        ENVELOPE_AAD,
        PLAINTEXT_NO_EXPIRY,
    )
    .expect("seal");
    let expiring = seal(
        &cipher,
        ENVELOPE_REF,
        Some(EXPIRY),
        ENVELOPE_AAD,
        PLAINTEXT_EXPIRY,
    )
    .expect("seal");
    let mut flipped = plain.clone();
    flipped[22] ^= 0x01; // first ciphertext byte
    let mut tampered = flipped.clone();
    fix_crc(&mut tampered);
    let mut future = plain.clone();
    future[0] = 2;
    fix_crc(&mut future);
    out.push(("envelope-v1-flipped-byte.bin", flipped));
    out.push(("envelope-v1-tampered.bin", tampered));
    out.push(("envelope-v1-truncated.bin", plain[..30].to_vec()));
    out.push(("envelope-v2-unsupported.bin", future));
    out.push(("envelope-v1-no-expiry.bin", plain));
    out.push(("envelope-v1-expiry.bin", expiring));

    // Wrapped keys under a fixed epoch key.
    let epoch = epoch_cipher();
    let store = epoch.wrap(
        &WrapContext::StoreSecret,
        &DataKey::from_bytes(WRAPPED_STORE_SECRET),
    );
    let data = epoch.wrap(
        &WrapContext::DataKey(DATA_KEY_ID),
        &DataKey::from_bytes(WRAPPED_DATA_KEY),
    );
    let mut flipped = data.as_bytes().to_vec();
    flipped[20] ^= 0x01; // inside the wrapped key bytes
    let mut tampered = flipped.clone();
    fix_crc(&mut tampered);
    out.push(("wrapped-key-v1-flipped-byte.bin", flipped));
    out.push(("wrapped-key-v1-tampered.bin", tampered));
    out.push((
        "wrapped-key-v1-truncated.bin",
        data.as_bytes()[..40].to_vec(),
    ));
    out.push(("wrapped-key-v1-store-secret.bin", store.as_bytes().to_vec()));
    out.push(("wrapped-key-v1-data-key.bin", data.as_bytes().to_vec()));
    // The key tree's root node key, as the engine hands it to the provider.
    let root = epoch.wrap(
        &TREE_ROOT,
        &NodeKey::from_bytes(TREE_ROOT_KEY).to_wrappable(),
    );
    out.push(("wrapped-key-v1-tree-root.bin", root.as_bytes().to_vec()));

    // Node-wrapped keys (v2) under fixed node keys of the key tree.
    let data = node_cipher().wrap_data(&DATA_KEY_ID, &DataKey::from_bytes(NODE_WRAPPED_DATA_KEY));
    let child =
        parent_cipher().wrap_node(NODE, NODE_GENERATION, &NodeKey::from_bytes(CHILD_NODE_KEY));
    let mut flipped = data.as_bytes().to_vec();
    flipped[29] ^= 0x01; // inside the wrapped key bytes (26..58)
    let mut tampered = flipped.clone();
    fix_crc(&mut tampered);
    out.push(("node-wrapped-v2-flipped-byte.bin", flipped));
    out.push(("node-wrapped-v2-tampered.bin", tampered));
    out.push((
        "node-wrapped-v2-truncated.bin",
        data.as_bytes()[..40].to_vec(),
    ));
    out.push(("node-wrapped-v2-data-key.bin", data.as_bytes().to_vec()));
    out.push(("node-wrapped-v2-node.bin", child.as_bytes().to_vec()));

    // A key file with live, destroyed and empty slots, written by the provider.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys");
    let provider = FileKeyProvider::create(&path, KEY_FILE_SLOTS).expect("create");
    let epochs: Vec<EpochId> = (0..3)
        .map(|_| provider.create_epoch().expect("epoch"))
        .collect();
    assert_eq!(epochs, [EpochId(1), EpochId(2), EpochId(3)]);
    let wrap = |epoch| {
        provider
            .wrap(
                epoch,
                &WrapContext::DataKey(DATA_KEY_ID),
                &DataKey::from_bytes(WRAPPED_DATA_KEY),
            )
            .expect("wrap")
    };
    let under_1 = wrap(EpochId(1));
    let under_2 = wrap(EpochId(2));
    provider.destroy_epoch(EpochId(2)).expect("destroy");
    provider.advance_anchor(&GOLDEN_ANCHOR).expect("anchor");
    drop(provider);
    let anchored = fs::read(&path).expect("read key file");
    // The version 1 files: the same slots, without the anchor blocks.
    let mut key_file = anchored[..anchored.len() - 2 * ANCHOR_LEN].to_vec();
    key_file[8] = 1;
    let crc = crc32fast_hash(&key_file[..28]);
    key_file[28..32].copy_from_slice(&crc.to_be_bytes());
    out.push(("keyfile-v2-anchored.bin", anchored));
    let mut flipped = key_file.clone();
    flipped[HEADER_LEN + 8] ^= 0x01; // slot 0, first key byte
    let truncated = key_file[..key_file.len() - SLOT_LEN].to_vec();
    out.push(("keyfile-v1-flipped-byte.bin", flipped));
    out.push(("keyfile-v1-truncated.bin", truncated));
    out.push(("keyfile-v1.bin", key_file));
    out.push((
        "keyfile-v1-wrapped-epoch-1.bin",
        under_1.as_bytes().to_vec(),
    ));
    out.push((
        "keyfile-v1-wrapped-epoch-2.bin",
        under_2.as_bytes().to_vec(),
    ));
    out
}

fn parse_err(bytes: &[u8]) -> FormatError {
    Envelope::parse(bytes).expect_err("must not parse")
}

#[test]
fn envelope_without_expiry_opens_to_the_documented_plaintext() {
    let bytes = read("envelope-v1-no-expiry.bin");
    assert_eq!(bytes[..10], HEADER_NO_EXPIRY);
    let envelope = Envelope::parse(&bytes).expect("parse");
    assert_eq!(envelope.key_ref(), ENVELOPE_REF);
    assert_eq!(envelope.expiry(), None);
    assert_eq!(envelope.plaintext_len(), PLAINTEXT_NO_EXPIRY.len());
    let cipher = envelope_cipher();
    assert_eq!(
        envelope.open(&cipher, ENVELOPE_AAD).expect("open"),
        PLAINTEXT_NO_EXPIRY
    );
    assert_eq!(envelope.open(&cipher, b"another record"), Err(AuthError));
}

#[test]
fn envelope_with_expiry_opens_and_keeps_its_expiry() {
    let bytes = read("envelope-v1-expiry.bin");
    assert_eq!(bytes[..18], HEADER_EXPIRY);
    let envelope = Envelope::parse(&bytes).expect("parse");
    assert_eq!(envelope.key_ref(), ENVELOPE_REF);
    assert_eq!(envelope.expiry(), Some(EXPIRY));
    assert_eq!(
        envelope
            .open(&envelope_cipher(), ENVELOPE_AAD)
            .expect("open"),
        PLAINTEXT_EXPIRY
    );
    let other = ValueCipher::new(&DataKey::from_bytes(counting(0x01)));
    assert_eq!(envelope.open(&other, ENVELOPE_AAD), Err(AuthError));
}

#[test]
fn damaged_envelopes_give_their_documented_errors() {
    assert!(matches!(
        parse_err(&read("envelope-v1-flipped-byte.bin")),
        FormatError::ChecksumMismatch {
            what: "value envelope",
            ..
        }
    ));
    assert_eq!(
        parse_err(&read("envelope-v1-truncated.bin")),
        FormatError::Truncated {
            what: "value envelope",
            needed: 42,
            got: 30
        }
    );
    assert_eq!(
        parse_err(&read("envelope-v2-unsupported.bin")),
        FormatError::UnsupportedVersion {
            what: "value envelope",
            found: 2
        }
    );
    // A consistent CRC over altered bytes is tampering: it parses, never opens.
    let tampered = read("envelope-v1-tampered.bin");
    let envelope = Envelope::parse(&tampered).expect("a tamperer fixes the CRC");
    assert_eq!(
        envelope.open(&envelope_cipher(), ENVELOPE_AAD),
        Err(AuthError)
    );
}

#[test]
fn wrapped_keys_unwrap_to_the_documented_keys() {
    let epoch = epoch_cipher();
    let store = WrappedKey::from_bytes(&read("wrapped-key-v1-store-secret.bin")).expect("decode");
    let data = WrappedKey::from_bytes(&read("wrapped-key-v1-data-key.bin")).expect("decode");
    for wrapped in [&store, &data] {
        assert_eq!(wrapped.epoch(), EPOCH);
        assert_eq!(wrapped.as_bytes()[..5], [1, 0, 0, 0, 7]);
    }
    let secret = epoch
        .unwrap(&WrapContext::StoreSecret, &store)
        .expect("unwrap store secret");
    assert_eq!(secret.expose_secret(), &WRAPPED_STORE_SECRET);
    let key = epoch
        .unwrap(&WrapContext::DataKey(DATA_KEY_ID), &data)
        .expect("unwrap data key");
    assert_eq!(key.expose_secret(), &WRAPPED_DATA_KEY);
    // Each is bound to its context.
    assert!(epoch.unwrap(&WrapContext::StoreSecret, &data).is_err());
    assert!(
        epoch
            .unwrap(&WrapContext::DataKey(DATA_KEY_ID), &store)
            .is_err()
    );
}

#[test]
fn damaged_wrapped_keys_give_their_documented_errors() {
    assert!(matches!(
        WrappedKey::from_bytes(&read("wrapped-key-v1-flipped-byte.bin")),
        Err(FormatError::ChecksumMismatch {
            what: "wrapped key",
            ..
        })
    ));
    assert_eq!(
        WrappedKey::from_bytes(&read("wrapped-key-v1-truncated.bin")),
        Err(FormatError::Truncated {
            what: "wrapped key",
            needed: WrappedKey::LEN,
            got: 40
        })
    );
    let tampered =
        WrappedKey::from_bytes(&read("wrapped-key-v1-tampered.bin")).expect("CRC was fixed up");
    assert!(
        epoch_cipher()
            .unwrap(&WrapContext::DataKey(DATA_KEY_ID), &tampered)
            .is_err()
    );
}

#[test]
fn tree_root_wrap_unwraps_to_the_documented_root_key() {
    let epoch = epoch_cipher();
    let bytes = read("wrapped-key-v1-tree-root.bin");
    assert_eq!(bytes.len(), WrappedKey::LEN);
    let root = WrappedKey::from_bytes(&bytes).expect("decode");
    assert_eq!(root.epoch(), EPOCH);
    assert_eq!(root.as_bytes()[..5], [1, 0, 0, 0, 7]);
    let key = NodeKey::from_unwrapped(epoch.unwrap(&TREE_ROOT, &root).expect("unwrap root"));
    assert_eq!(key.expose_secret(), &TREE_ROOT_KEY);
    // Bound to the root's generation, its forest and its kind.
    for other in [
        WrapContext::TreeRoot {
            forest: 0,
            generation: 0,
        },
        WrapContext::TreeRoot {
            forest: 0,
            generation: 2,
        },
        WrapContext::TreeRoot {
            forest: DAY_FOREST,
            generation: 1,
        },
        WrapContext::StoreSecret,
        WrapContext::DataKey(DATA_KEY_ID),
    ] {
        assert_eq!(
            epoch.unwrap(&other, &root).err(),
            Some(AuthError),
            "{other:?}"
        );
    }
    // And the data-key wrap of the same epoch is not a root.
    let data = WrappedKey::from_bytes(&read("wrapped-key-v1-data-key.bin")).expect("decode");
    assert_eq!(epoch.unwrap(&TREE_ROOT, &data).err(), Some(AuthError));
}

#[test]
fn node_wrapped_data_key_unwraps_to_the_documented_key() {
    let bytes = read("node-wrapped-v2-data-key.bin");
    assert_eq!(bytes.len(), NodeWrapped::LEN);
    assert_eq!(bytes[..NODE_HEADER_LEN], HEADER_NODE_DATA_KEY);
    let wrapped = NodeWrapped::from_bytes(&bytes).expect("decode");
    assert_eq!(wrapped.node(), NODE);
    assert_eq!(wrapped.generation(), NODE_GENERATION);
    let node = node_cipher();
    let key = node.unwrap_data(&DATA_KEY_ID, &wrapped).expect("unwrap");
    assert_eq!(key.expose_secret(), &NODE_WRAPPED_DATA_KEY);

    // Another key id: each field is bound.
    let next_version = KeyId {
        version: DATA_KEY_ID.version + 1,
        ..DATA_KEY_ID
    };
    let next_bucket = KeyId {
        bucket: DATA_KEY_ID.bucket + 1,
        ..DATA_KEY_ID
    };
    for id in [next_version, next_bucket] {
        assert_eq!(node.unwrap_data(&id, &wrapped).err(), Some(AuthError));
    }
    // Not a child node's key.
    assert!(node.unwrap_node(NODE, NODE_GENERATION, &wrapped).is_err());
    // The same key bytes as another generation of the node, or as its
    // sibling: refused by the header, and with the header rewritten (CRC
    // fixed up) by the associated data.
    let sibling = NodeId {
        prefix: 0xABCDF,
        ..NODE
    };
    let next_day = NodeId {
        forest: DAY_FOREST + 1,
        ..NODE
    };
    for (other_node, other_generation) in [
        (NODE, NODE_GENERATION + 1),
        (NODE, NODE_GENERATION - 1),
        (sibling, NODE_GENERATION),
        (next_day, NODE_GENERATION),
    ] {
        let other = NodeCipher::new(other_node, other_generation, &NodeKey::from_bytes(NODE_KEY));
        assert_eq!(
            other.unwrap_data(&DATA_KEY_ID, &wrapped).err(),
            Some(AuthError)
        );
        let moved = relabelled(&wrapped, other_node, other_generation);
        assert_eq!(
            other.unwrap_data(&DATA_KEY_ID, &moved).err(),
            Some(AuthError),
            "{other_node:?} generation {other_generation}"
        );
    }
    // Another key of the same node and generation.
    let wrong = NodeCipher::new(NODE, NODE_GENERATION, &NodeKey::from_bytes(PARENT_KEY));
    assert_eq!(
        wrong.unwrap_data(&DATA_KEY_ID, &wrapped).err(),
        Some(AuthError)
    );
}

#[test]
fn node_wrapped_child_node_unwraps_to_the_documented_key() {
    assert_eq!(NODE.parent(), Some(PARENT));
    let bytes = read("node-wrapped-v2-node.bin");
    assert_eq!(bytes.len(), NodeWrapped::LEN);
    assert_eq!(bytes[..NODE_HEADER_LEN], HEADER_NODE_CHILD);
    let wrapped = NodeWrapped::from_bytes(&bytes).expect("decode");
    assert_eq!(wrapped.node(), PARENT);
    assert_eq!(wrapped.generation(), PARENT_GENERATION);
    let parent = parent_cipher();
    let key = parent
        .unwrap_node(NODE, NODE_GENERATION, &wrapped)
        .expect("unwrap");
    assert_eq!(key.expose_secret(), &CHILD_NODE_KEY);

    // Another generation of the child, or another child.
    let sibling = PARENT.child(0xF).expect("a child");
    for (child, child_generation) in [
        (NODE, NODE_GENERATION + 1),
        (NODE, NODE_GENERATION - 1),
        (sibling, NODE_GENERATION),
    ] {
        assert_eq!(
            parent.unwrap_node(child, child_generation, &wrapped).err(),
            Some(AuthError),
            "{child:?} generation {child_generation}"
        );
    }
    // Not a data key.
    assert!(parent.unwrap_data(&DATA_KEY_ID, &wrapped).is_err());
    // The parent's next generation (same key bytes), by header and by the
    // associated data.
    let next = NodeCipher::new(
        PARENT,
        PARENT_GENERATION + 1,
        &NodeKey::from_bytes(PARENT_KEY),
    );
    assert!(next.unwrap_node(NODE, NODE_GENERATION, &wrapped).is_err());
    let moved = relabelled(&wrapped, PARENT, PARENT_GENERATION + 1);
    assert_eq!(
        next.unwrap_node(NODE, NODE_GENERATION, &moved).err(),
        Some(AuthError)
    );
}

#[test]
fn damaged_node_wrapped_keys_give_their_documented_errors() {
    assert!(matches!(
        NodeWrapped::from_bytes(&read("node-wrapped-v2-flipped-byte.bin")),
        Err(FormatError::ChecksumMismatch {
            what: "node-wrapped key",
            ..
        })
    ));
    assert_eq!(
        NodeWrapped::from_bytes(&read("node-wrapped-v2-truncated.bin")),
        Err(FormatError::Truncated {
            what: "node-wrapped key",
            needed: NodeWrapped::LEN,
            got: 40
        })
    );
    let tampered =
        NodeWrapped::from_bytes(&read("node-wrapped-v2-tampered.bin")).expect("CRC was fixed up");
    assert_eq!(tampered.node(), NODE);
    assert_eq!(tampered.generation(), NODE_GENERATION);
    assert_eq!(
        node_cipher().unwrap_data(&DATA_KEY_ID, &tampered).err(),
        Some(AuthError)
    );
}

/// A node-wrapped key (78 bytes) never decodes as a wrapped key (69) nor the
/// other way round.
#[test]
fn the_two_wrap_formats_do_not_read_as_each_other() {
    assert_eq!(
        WrappedKey::from_bytes(&read("node-wrapped-v2-data-key.bin")),
        Err(FormatError::InvalidField {
            what: "wrapped key",
            detail: "longer than a wrapped key"
        })
    );
    assert_eq!(
        NodeWrapped::from_bytes(&read("wrapped-key-v1-tree-root.bin")),
        Err(FormatError::Truncated {
            what: "node-wrapped key",
            needed: NodeWrapped::LEN,
            got: WrappedKey::LEN
        })
    );
}

/// Copies a key-file fixture into a fresh directory with owner-only
/// permissions (git checks files out world-readable, which the provider
/// refuses) and returns the directory and the copy's path.
fn key_file_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys");
    fs::write(&path, read(name)).expect("copy key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
    (dir, path)
}

#[test]
fn key_file_opens_with_its_live_and_destroyed_epochs() {
    let bytes = read("keyfile-v1.bin");
    assert_eq!(
        bytes.len(),
        HEADER_LEN + SLOT_LEN * usize::from(KEY_FILE_SLOTS)
    );
    assert_eq!(check_key_file_bytes(&bytes), Ok(2));
    // Slot 1 held epoch 2 and was destroyed: state 2, epoch 2, key zeroed.
    let slot_1 = &bytes[HEADER_LEN + SLOT_LEN..HEADER_LEN + 2 * SLOT_LEN];
    assert_eq!(slot_1[..8], [2, 0, 0, 0, 0, 0, 0, 2]);
    assert!(slot_1[8..44].iter().all(|b| *b == 0));

    let (_dir, path) = key_file_copy("keyfile-v1.bin");
    let provider = FileKeyProvider::open(&path).expect("open the golden key file");
    assert_eq!(
        provider.live_epochs().expect("live"),
        [EpochId(1), EpochId(3)]
    );
    let context = WrapContext::DataKey(DATA_KEY_ID);
    let under_1 = WrappedKey::from_bytes(&read("keyfile-v1-wrapped-epoch-1.bin")).expect("decode");
    let key = provider.unwrap(&context, &under_1).expect("unwrap");
    assert_eq!(key.expose_secret(), &WRAPPED_DATA_KEY);
    let under_2 = WrappedKey::from_bytes(&read("keyfile-v1-wrapped-epoch-2.bin")).expect("decode");
    assert!(matches!(
        provider.unwrap(&context, &under_2),
        Err(ProviderError::EpochDestroyed { epoch: EpochId(2) })
    ));
    // Epoch ids are never reused: the next one is 4.
    assert_eq!(provider.create_epoch().expect("epoch"), EpochId(4));
}

/// The version 2 key file: the same epochs as version 1, and the anchor.
#[test]
fn key_file_v2_opens_with_its_anchor() {
    let bytes = read("keyfile-v2-anchored.bin");
    assert_eq!(
        bytes.len(),
        HEADER_LEN + SLOT_LEN * usize::from(KEY_FILE_SLOTS) + 2 * ANCHOR_LEN
    );
    assert_eq!(bytes[8], 2, "format version 2");
    assert_eq!(check_key_file_bytes(&bytes), Ok(2));
    let (_dir, path) = key_file_copy("keyfile-v2-anchored.bin");
    let provider = FileKeyProvider::open(&path).expect("open");
    assert_eq!(provider.anchor().expect("anchor"), Some(GOLDEN_ANCHOR));
    assert_eq!(
        provider.live_epochs().expect("live"),
        [EpochId(1), EpochId(3)]
    );
    // Upgrading the version 1 file by the same anchor gives the same blocks
    // (and keeps its keys).
    let (_dir, v1) = key_file_copy("keyfile-v1.bin");
    let upgraded = FileKeyProvider::open(&v1).expect("open v1");
    upgraded.advance_anchor(&GOLDEN_ANCHOR).expect("upgrade");
    let under_1 = WrappedKey::from_bytes(&read("keyfile-v1-wrapped-epoch-1.bin")).expect("decode");
    let key = upgraded
        .unwrap(&WrapContext::DataKey(DATA_KEY_ID), &under_1)
        .expect("unwrap");
    assert_eq!(key.expose_secret(), &WRAPPED_DATA_KEY);
    let after = fs::read(&v1).expect("read");
    assert_eq!(after.len(), bytes.len());
    assert_eq!(after[..HEADER_LEN], bytes[..HEADER_LEN], "the same header");
    let blocks = bytes.len() - 2 * ANCHOR_LEN;
    // The upgrade writes the anchor to block A and an empty block B; the
    // provider that wrote the fixture alternated, so compare the set.
    let mut a: Vec<&[u8]> = after[blocks..].chunks(ANCHOR_LEN).collect();
    let mut b: Vec<&[u8]> = bytes[blocks..].chunks(ANCHOR_LEN).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same anchor blocks");
}

#[test]
fn damaged_key_files_are_refused_with_their_documented_errors() {
    let cases = [
        ("keyfile-v1-flipped-byte.bin", "slot 0 checksum mismatch"),
        ("keyfile-v1-truncated.bin", "truncated or extended"),
    ];
    for (name, expected) in cases {
        let detail = check_key_file_bytes(&read(name)).expect_err(name);
        assert!(detail.contains(expected), "{name}: {detail}");
        let (_dir, path) = key_file_copy(name);
        let before = fs::read(&path).expect("read");
        match FileKeyProvider::open(&path) {
            Err(ProviderError::Corrupt { detail, .. }) => {
                assert!(detail.contains(expected), "{name}: {detail}");
            }
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(fs::read(&path).expect("read"), before, "{name} was altered");
    }
}

/// Nonces and keys differ, but a fresh write of the same input must have the
/// golden length and the golden header bytes: the format has not moved.
#[test]
fn fresh_writes_have_the_golden_length_and_header() {
    for (name, fresh) in generate() {
        let golden = read(name);
        assert_eq!(fresh.len(), golden.len(), "{name}: length changed");
        let fixed_prefix = if name.starts_with("envelope") {
            // The header: version, flags, key reference (and expiry).
            let header = if golden.get(1) == Some(&1) { 18 } else { 10 };
            header.min(golden.len())
        } else if name.starts_with("wrapped-key") || name.starts_with("keyfile-v1-wrapped") {
            5.min(golden.len()) // version and epoch id
        } else if name.starts_with("node-wrapped") {
            NODE_HEADER_LEN.min(golden.len()) // version, node id and generation
        } else {
            HEADER_LEN
        };
        assert_eq!(
            fresh[..fixed_prefix],
            golden[..fixed_prefix],
            "{name}: header changed"
        );
        if name == "keyfile-v2-anchored.bin" {
            // The anchor blocks are fixed by their input.
            let blocks = golden.len() - 2 * ANCHOR_LEN;
            assert_eq!(
                fresh[blocks..],
                golden[blocks..],
                "{name}: anchor blocks changed"
            );
        }
        if name == "keyfile-v1.bin" || name == "keyfile-v2-anchored.bin" {
            let fresh_slots = fresh[HEADER_LEN..].chunks(SLOT_LEN);
            let golden_slots = golden[HEADER_LEN..].chunks(SLOT_LEN);
            for (i, (a, b)) in fresh_slots.zip(golden_slots).enumerate() {
                // State and epoch id are fixed; keys of live slots are random.
                assert_eq!(a[..8], b[..8], "{name}: slot {i} changed");
                if a[0] != 1 {
                    assert_eq!(a, b, "{name}: non-live slot {i} changed");
                }
            }
        }
    }
}

/// With `SHREDKV_REGENERATE_FIXTURES=1` this rewrites every fixture from
/// today's code (then review the diff and update `tests/fixtures/README.md`);
/// with `=new` it writes only the files not committed yet (a new format
/// version), leaving the committed ones alone:
///
/// ```text
/// SHREDKV_REGENERATE_FIXTURES=1 cargo test -p shredkv-crypto --test golden regenerate
/// SHREDKV_REGENERATE_FIXTURES=new cargo test -p shredkv-crypto --test golden regenerate
/// ```
///
/// Without it, nothing is written: the committed set must be complete, and
/// hold no file this generator does not know.
#[test]
fn regenerate_fixtures_only_when_asked() {
    let dir = fixtures_dir();
    let fresh = generate();
    if std::env::var_os(REGENERATE).is_some_and(|v| v == "1" || v == "new") {
        let only_new = std::env::var_os(REGENERATE).is_some_and(|v| v == "new");
        fs::create_dir_all(&dir).expect("create fixtures dir");
        for (name, bytes) in &fresh {
            if !(only_new && dir.join(name).exists()) {
                fs::write(dir.join(name), bytes).expect("write fixture");
            }
        }
        eprintln!("wrote fixtures in {}", dir.display());
        return;
    }
    let mut committed: Vec<String> = fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".bin"))
        .collect();
    committed.sort();
    let mut expected: Vec<String> = fresh.iter().map(|(n, _)| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(
        committed, expected,
        "fixtures and generator disagree; regenerate with {REGENERATE}=1"
    );
}
