//! One entry point that decodes any persisted engine record from bytes, for
//! fuzz targets and tooling (`shredkv::internal::decode_any`).
//!
//! Each decoder is the one the engine uses when it reads the record back.
//! Besides "no panic on any input", the entry point checks the decoders'
//! round trip: a value decoded from bytes, encoded again and decoded, is the
//! same value. (Byte identity is not required: e.g. an absent parent's
//! reserved bytes need not be zero to decode.)

use std::fmt::Debug;

use shredkv_crypto::{FormatError, NodeId, SubjectTag};

use crate::audit::AuditEntry;
use crate::db::erasure_commit::{
    PendingErasure, StoredReceipt, decode_receipt_page, decode_tag_page, encode_receipt_page,
    encode_tag_page,
};
use crate::holds;
use crate::ledger::LedgerEntry;
use crate::retention::deadlines;
use crate::shard_route::ShardBinding;
use crate::subjects::SubjectInfo;
use crate::vault::tree::NodeEntry;
use crate::vault::{SealRecord, VaultEntry};

/// The persisted record formats of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Tree `vault`: a wrapped data key or its tombstone.
    VaultEntry,
    /// Tree `subjects`: a subject record.
    SubjectRecord,
    /// Tree `ledger`: an erasure record.
    LedgerEntry,
    /// Tree `audit`: one hash-chained entry.
    AuditEntry,
    /// Tree `seals`: seal accounting of one data key.
    SealRecord,
    /// Tree `holds`: a legal hold.
    HoldRecord,
    /// Tree `deadlines`: a deadline index key.
    DeadlineKey,
    /// Meta `erasure_pending/‹tag›`: an unfinished chunked erasure's marker.
    PendingErasure,
    /// Meta `receipt/‹tag›`: an erasure's receipt, kept for retries.
    StoredReceipt,
    /// Meta `shard`: the shard a store is bound to.
    ShardBinding,
    /// Meta `receipt_page/‹tag›‹index›`: erased scopes of a paged receipt.
    ReceiptPage,
    /// Meta `erasure_pending_page/‹tag›‹index›`: subjects of a paged marker.
    MarkerPage,
    /// Tree `key_nodes`: a node of the key tree. The bytes are the node id
    /// (5, the tree key) followed by the entry.
    NodeEntry,
}

impl RecordKind {
    /// Every kind, in a fixed order (fuzz targets pick one by index).
    pub const ALL: [RecordKind; 13] = [
        RecordKind::VaultEntry,
        RecordKind::SubjectRecord,
        RecordKind::LedgerEntry,
        RecordKind::AuditEntry,
        RecordKind::SealRecord,
        RecordKind::HoldRecord,
        RecordKind::DeadlineKey,
        RecordKind::PendingErasure,
        RecordKind::StoredReceipt,
        RecordKind::ShardBinding,
        RecordKind::ReceiptPage,
        RecordKind::MarkerPage,
        RecordKind::NodeEntry,
    ];
}

/// A record decoded by [`decode_any`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded value, as its `Debug` text (no secrets: wrapped keys only).
    pub value: String,
    /// Whether encoding the value and decoding it again gave the same value.
    pub round_trips: bool,
    /// Whether encoding the value gave back exactly the input bytes.
    pub canonical: bool,
}

/// Why [`decode_any`] refused the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable(pub String);

fn check<T: Debug + PartialEq>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, FormatError>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Result<Decoded, Undecodable> {
    let value = decode(bytes).map_err(|e| Undecodable(e.to_string()))?;
    let encoded = encode(&value);
    let again = decode(&encoded);
    Ok(Decoded {
        value: format!("{value:?}"),
        round_trips: again.as_ref().is_ok_and(|v| *v == value),
        canonical: encoded == bytes,
    })
}

/// A decoder that answers `None` for damage, as one that names it.
fn naming<T>(
    decode: impl Fn(&[u8]) -> Option<T>,
    what: &'static str,
    detail: &'static str,
) -> impl Fn(&[u8]) -> Result<T, FormatError> {
    move |bytes| decode(bytes).ok_or(FormatError::InvalidField { what, detail })
}

/// Decodes `bytes` as a record of `kind`, as the engine would read it.
///
/// # Errors
/// The decoder's refusal (a damaged or foreign record), as text.
pub fn decode_any(kind: RecordKind, bytes: &[u8]) -> Result<Decoded, Undecodable> {
    // Audit entries and subject records take their key part from the tree key.
    const SEQ: u64 = 7;
    let tag = SubjectTag([0x5a; 16]);
    match kind {
        RecordKind::VaultEntry => check(bytes, VaultEntry::decode, VaultEntry::encode),
        RecordKind::SubjectRecord => {
            check(bytes, |b| SubjectInfo::decode(tag, b), SubjectInfo::encode)
        }
        RecordKind::LedgerEntry => check(bytes, LedgerEntry::decode, LedgerEntry::encode),
        RecordKind::AuditEntry => check(bytes, |b| AuditEntry::decode(SEQ, b), AuditEntry::encode),
        RecordKind::SealRecord => check(bytes, SealRecord::decode, SealRecord::encode),
        RecordKind::HoldRecord => check(bytes, holds::decode, |(at, reason)| {
            holds::encode(*at, reason)
        }),
        RecordKind::DeadlineKey => check(
            bytes,
            naming(deadlines::decode_key, "deadline key", "malformed"),
            |(at, due)| deadlines::key(*at, due),
        ),
        RecordKind::PendingErasure => check(bytes, PendingErasure::decode, PendingErasure::encode),
        RecordKind::StoredReceipt => check(bytes, StoredReceipt::decode, StoredReceipt::encode),
        RecordKind::ShardBinding => check(
            bytes,
            naming(
                ShardBinding::decode,
                "shard binding",
                "not v1 ‖ index u32 ‖ count u32 with index < count",
            ),
            |binding| binding.encode().to_vec(),
        ),
        RecordKind::ReceiptPage => check(bytes, decode_receipt_page, |scopes| {
            encode_receipt_page(scopes)
        }),
        RecordKind::MarkerPage => check(bytes, decode_tag_page, |tags| encode_tag_page(tags)),
        RecordKind::NodeEntry => check(
            bytes,
            |b| {
                let node = b.get(..NodeId::LEN).and_then(NodeId::from_bytes).ok_or(
                    FormatError::InvalidField {
                        what: "key tree node",
                        detail: "the tree key is not a node id",
                    },
                )?;
                Ok((
                    node,
                    NodeEntry::decode(node, b.get(NodeId::LEN..).unwrap_or_default())?,
                ))
            },
            |(node, entry)| [&node.to_bytes()[..], &entry.encode()].concat(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use shredkv_crypto::{
        DataKey, EpochCipher, EpochId, EpochKey, KeyId, NodeCipher, NodeKey, WrapContext,
    };

    use crate::audit::AuditEvent;
    use crate::ledger::ErasureReason;
    use crate::retention::deadlines::Due;
    use crate::subjects::{SubjectKind, SubjectState};
    use crate::vault::tree::NodeWrap;
    use crate::vault::{KeyState, Wrapped};

    /// Set to a directory to write the samples there as the seed corpus of
    /// the `engine_records` fuzz target (first byte: the kind's index in
    /// [`RecordKind::ALL`]).
    const WRITE_SEEDS: &str = "SHREDKV_WRITE_FUZZ_SEEDS";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("a valid time")
    }

    /// Valid records of every kind, as the engine writes them.
    fn samples() -> Vec<(&'static str, RecordKind, Vec<u8>)> {
        let tag = SubjectTag([0x11; 16]);
        let id = KeyId {
            subject: tag,
            class: 3,
            bucket: 1,
            version: 2,
        };
        let wrapped = EpochCipher::new(EpochId(4), &EpochKey::from_bytes([7; 32]))
            .wrap(&WrapContext::DataKey(id), &DataKey::from_bytes([9; 32]));
        let live = VaultEntry {
            state: KeyState::Active,
            created_at: 1_800_000_000,
            destroyed_at: None,
            wrapped: Some(Wrapped::Epoch(wrapped.clone())),
        };
        let bottom = NodeId::of_tag(0, &tag, crate::vault::tree::BOTTOM_DEPTH);
        let node_cipher = NodeCipher::new(bottom, 3, &NodeKey::from_bytes([5; 32]));
        let under_node = VaultEntry {
            wrapped: Some(Wrapped::Node(
                node_cipher.wrap_data(&id, &DataKey::from_bytes([9; 32])),
            )),
            ..live.clone()
        };
        let parent = bottom.parent().expect("a parent");
        let node_entry = NodeEntry {
            generation: 3,
            wrap: NodeWrap::Parent(
                NodeCipher::new(parent, 8, &NodeKey::from_bytes([6; 32])).wrap_node(
                    bottom,
                    3,
                    &NodeKey::from_bytes([5; 32]),
                ),
            ),
        };
        let root_entry = NodeEntry {
            generation: 2,
            wrap: NodeWrap::Epoch(wrapped),
        };
        let user = SubjectInfo {
            tag,
            kind: SubjectKind::EndUser,
            parent: Some(SubjectTag([0x22; 16])),
            state: SubjectState::Active,
            generation: 1,
            created_at: at(1_800_000_000),
            closed_at: Some(at(1_800_086_400)),
            opted_out_at: None,
            released_at: None,
            erased_at: None,
        };
        let erased = SubjectInfo {
            kind: SubjectKind::Account,
            parent: None,
            state: SubjectState::Erased,
            generation: 2,
            erased_at: Some(at(1_800_172_800)),
            ..user.clone()
        };
        let audit = AuditEntry {
            seq: 7,
            time: at(1_800_000_000),
            event: AuditEvent::KeysDestroyed,
            subject: Some(tag),
            class: Some(3),
            detail: "2 keys destroyed; class message_content; operator".into(),
            prev_hash: [0x33; 32],
            hash: [0x44; 32],
            keyed: false,
        };
        let keyed_audit = AuditEntry {
            keyed: true,
            ..audit.clone()
        };
        vec![
            ("vault-live", RecordKind::VaultEntry, live.encode()),
            (
                "vault-under-node",
                RecordKind::VaultEntry,
                under_node.encode(),
            ),
            (
                "node",
                RecordKind::NodeEntry,
                [&bottom.to_bytes()[..], &node_entry.encode()].concat(),
            ),
            (
                "node-root",
                RecordKind::NodeEntry,
                [&NodeId::ROOT.to_bytes()[..], &root_entry.encode()].concat(),
            ),
            (
                "vault-tombstone",
                RecordKind::VaultEntry,
                live.tombstone(1_800_000_100).encode(),
            ),
            ("subject-end-user", RecordKind::SubjectRecord, user.encode()),
            ("subject-erased", RecordKind::SubjectRecord, erased.encode()),
            (
                "ledger",
                RecordKind::LedgerEntry,
                LedgerEntry {
                    erased_at: 1_800_000_000,
                    generation: 1,
                    reason: ErasureReason::RetentionExpired,
                    keys_destroyed: 3,
                    epoch: 4,
                    reopened_at: None,
                }
                .encode(),
            ),
            (
                "ledger-reopened",
                RecordKind::LedgerEntry,
                LedgerEntry {
                    erased_at: 1_800_000_000,
                    generation: 1,
                    reason: ErasureReason::Operator,
                    keys_destroyed: 3,
                    epoch: 4,
                    reopened_at: Some(1_800_000_500),
                }
                .encode(),
            ),
            ("audit", RecordKind::AuditEntry, audit.encode()),
            ("audit-keyed", RecordKind::AuditEntry, keyed_audit.encode()),
            (
                "seals",
                RecordKind::SealRecord,
                SealRecord {
                    reserved: 65_536,
                    retired: true,
                }
                .encode(),
            ),
            (
                "hold",
                RecordKind::HoldRecord,
                holds::encode(1_800_000_000, &holds::StoredReason::Plain("case 17".into())),
            ),
            (
                "deadline-destroy",
                RecordKind::DeadlineKey,
                deadlines::key(1_800_000_000, &Due::DestroyKey(id)),
            ),
            (
                "deadline-erase",
                RecordKind::DeadlineKey,
                deadlines::key(1_800_000_000, &Due::EraseScope(tag, 3)),
            ),
            (
                "deadline-rekey",
                RecordKind::DeadlineKey,
                deadlines::key(-5, &Due::Rekey(id)),
            ),
            (
                "deadline-node",
                RecordKind::DeadlineKey,
                deadlines::key(1_800_000_000, &Due::RekeyNode(id)),
            ),
            (
                "deadline-forest",
                RecordKind::DeadlineKey,
                deadlines::key(1_800_000_000, &Due::RetireForest(20_002)),
            ),
            (
                "deadline-remove",
                RecordKind::DeadlineKey,
                deadlines::key(0, &Due::RemoveCiphertext(tag, 0xFFFF)),
            ),
            (
                "pending-listed",
                RecordKind::PendingErasure,
                PendingErasure {
                    erased_at: 1_800_000_000,
                    reason: ErasureReason::Operator,
                    classes: Some(vec![3, 7]),
                    tags: vec![tag, SubjectTag([0x11; 16])],
                    listed: true,
                    paging: None,
                }
                .encode(),
            ),
            (
                "pending-family",
                RecordKind::PendingErasure,
                PendingErasure {
                    erased_at: 1_800_000_000,
                    reason: ErasureReason::Operator,
                    classes: None,
                    tags: Vec::new(),
                    listed: false,
                    paging: None,
                }
                .encode(),
            ),
            (
                "pending-paged",
                RecordKind::PendingErasure,
                PendingErasure {
                    erased_at: 1_800_000_000,
                    reason: ErasureReason::Operator,
                    classes: None,
                    tags: Vec::new(),
                    listed: true,
                    paging: Some(crate::db::erasure_commit::Paging {
                        items: 2,
                        pages: 1,
                        digest: [3; 32],
                    }),
                }
                .encode(),
            ),
            (
                "pending-page",
                RecordKind::MarkerPage,
                encode_tag_page(&[tag, SubjectTag([0x22; 16])]),
            ),
            (
                "receipt",
                RecordKind::StoredReceipt,
                StoredReceipt {
                    generation: 2,
                    classes: None,
                    receipt: crate::db::Receipt {
                        subject: tag,
                        erased_at: at(1_800_000_000),
                        reason: ErasureReason::Operator,
                        erased: vec![crate::db::ErasedScope {
                            subject: SubjectTag([0x11; 16]),
                            class: Some("message_content".into()),
                            keys_destroyed: 4,
                        }],
                        retained: Vec::new(),
                        audit_head: crate::audit::AuditHead {
                            seq: 41,
                            hash: [9; 32],
                        },
                    },
                    paging: None,
                }
                .encode(),
            ),
            (
                "receipt-head",
                RecordKind::StoredReceipt,
                StoredReceipt {
                    generation: 2,
                    classes: Some(vec![3]),
                    receipt: crate::db::Receipt {
                        subject: tag,
                        erased_at: at(1_800_000_000),
                        reason: ErasureReason::DeletionRequest,
                        erased: Vec::new(),
                        retained: Vec::new(),
                        audit_head: crate::audit::AuditHead {
                            seq: 41,
                            hash: [9; 32],
                        },
                    },
                    paging: Some(crate::db::erasure_commit::Paging {
                        items: 2,
                        pages: 1,
                        digest: [7; 32],
                    }),
                }
                .encode(),
            ),
            (
                "receipt-page",
                RecordKind::ReceiptPage,
                encode_receipt_page(&[
                    crate::db::ErasedScope {
                        subject: SubjectTag([0x11; 16]),
                        class: None,
                        keys_destroyed: 3,
                    },
                    crate::db::ErasedScope {
                        subject: SubjectTag([0x22; 16]),
                        class: Some("message_content".into()),
                        keys_destroyed: 1,
                    },
                ]),
            ),
            (
                "shard",
                RecordKind::ShardBinding,
                ShardBinding { index: 3, count: 8 }.encode().to_vec(),
            ),
        ]
    }

    /// Found by the `engine_records` fuzz target: a subject record (or
    /// audit entry) holding a time beyond what jiff represents decoded to
    /// `Timestamp::MAX`, whose nanoseconds its encoding drops, so the
    /// value did not survive a round trip; far-past times even decoded as
    /// far-future ones. Times now saturate at whole seconds, both ways.
    #[test]
    fn out_of_range_times_saturate_and_round_trip() {
        let base = samples()
            .into_iter()
            .find(|(name, _, _)| *name == "subject-end-user")
            .expect("the sample")
            .2;
        // closed_at: presence byte at 33, seconds at 34..42.
        for secs in [i64::MAX, i64::MIN, 253_402_207_201, -377_705_116_801] {
            let mut bytes = base.clone();
            bytes[34..42].copy_from_slice(&secs.to_be_bytes());
            let body = bytes.len() - 4;
            let crc = crc32fast::hash(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_be_bytes());
            let decoded = decode_any(RecordKind::SubjectRecord, &bytes).expect("decodes");
            assert!(decoded.round_trips, "{secs}: {decoded:?}");
            let info = SubjectInfo::decode(SubjectTag([0x5a; 16]), &bytes).expect("decodes");
            let closed = info.closed_at.expect("closed");
            if secs < 0 {
                assert_eq!(closed, crate::codec::saturating_time(i64::MIN), "{secs}");
                assert!(
                    closed < Timestamp::UNIX_EPOCH,
                    "{secs}: the past stays past"
                );
            } else {
                assert!(closed > at(1_800_000_000), "{secs}");
            }
        }
    }

    #[test]
    fn samples_decode_canonically_and_seed_the_fuzz_corpus() {
        let seeds = std::env::var(WRITE_SEEDS).ok();
        for (name, kind, bytes) in samples() {
            let decoded = decode_any(kind, &bytes).expect("a sample decodes");
            assert!(
                decoded.round_trips && decoded.canonical,
                "{name}: {decoded:?}"
            );
            let mut flipped = bytes.clone();
            // A node entry's sample starts with its tree key, the node id,
            // which has no checksum of its own (a moved entry fails to open
            // instead): the flip goes into the entry.
            let at = if kind == RecordKind::NodeEntry {
                NodeId::LEN + 1
            } else {
                1
            };
            if let Some(byte) = flipped.get_mut(at) {
                *byte ^= 0x01;
            }
            let refused = decode_any(kind, &flipped);
            // Neither has a checksum: a deadline key is its own content,
            // and a shard binding is sealed by the store's MAC.
            if kind != RecordKind::DeadlineKey && kind != RecordKind::ShardBinding {
                assert!(
                    refused.is_err(),
                    "{name}: a flipped byte is caught by the CRC"
                );
            }
            if let Some(dir) = &seeds {
                let index = RecordKind::ALL
                    .iter()
                    .position(|k| *k == kind)
                    .and_then(|i| u8::try_from(i).ok())
                    .expect("every kind is in ALL");
                let mut seed = vec![index];
                seed.extend_from_slice(&bytes);
                std::fs::write(std::path::Path::new(dir).join(format!("{name}.bin")), seed)
                    .expect("write a seed");
            }
        }
    }

    #[test]
    fn every_kind_decodes_its_own_encoding_and_refuses_garbage() {
        let ledger = LedgerEntry {
            erased_at: 5,
            generation: 1,
            reason: crate::ledger::ErasureReason::Operator,
            keys_destroyed: 2,
            epoch: 3,
            reopened_at: None,
        };
        for entry in [
            ledger,
            LedgerEntry {
                reopened_at: Some(9),
                ..ledger
            },
        ] {
            let decoded =
                decode_any(RecordKind::LedgerEntry, &entry.encode()).expect("ledger decodes");
            assert!(decoded.round_trips && decoded.canonical, "{decoded:?}");
        }
        let hold = holds::encode(9, &holds::StoredReason::Plain("case 1".into()));
        let decoded = decode_any(RecordKind::HoldRecord, &hold).expect("hold decodes");
        assert!(decoded.value.contains("case 1"), "{decoded:?}");
        let deadline = deadlines::key(77, &deadlines::Due::EraseScope(SubjectTag([1; 16]), 4));
        let decoded = decode_any(RecordKind::DeadlineKey, &deadline).expect("deadline decodes");
        assert!(decoded.round_trips && decoded.canonical, "{decoded:?}");
        for kind in RecordKind::ALL {
            assert!(decode_any(kind, &[]).is_err(), "{kind:?} accepts nothing");
            assert!(
                decode_any(kind, &[0xff; 40]).is_err(),
                "{kind:?} accepts garbage"
            );
        }
    }
}
