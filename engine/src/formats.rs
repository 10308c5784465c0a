//! One entry point that decodes any persisted engine record from bytes, for
//! fuzz targets and tooling (`shredkv::internal::decode_any`).
//!
//! Each decoder is the one the engine uses when it reads the record back.
//! Besides "no panic on any input", the entry point checks the decoders'
//! round trip: a value decoded from bytes, encoded again and decoded, is the
//! same value. (Byte identity is not required: e.g. an absent parent's
//! reserved bytes need not be zero to decode.)

use std::fmt::Debug;

use shredkv_crypto::{FormatError, SubjectTag};

use crate::audit::AuditEntry;
use crate::holds;
use crate::ledger::LedgerEntry;
use crate::retention::deadlines;
use crate::subjects::SubjectInfo;
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
}

impl RecordKind {
    /// Every kind, in a fixed order (fuzz targets pick one by index).
    pub const ALL: [RecordKind; 7] = [
        RecordKind::VaultEntry,
        RecordKind::SubjectRecord,
        RecordKind::LedgerEntry,
        RecordKind::AuditEntry,
        RecordKind::SealRecord,
        RecordKind::HoldRecord,
        RecordKind::DeadlineKey,
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
            |b| {
                deadlines::decode_key(b).ok_or(FormatError::InvalidField {
                    what: "deadline key",
                    detail: "malformed",
                })
            },
            |(at, due)| deadlines::key(*at, due),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_decodes_its_own_encoding_and_refuses_garbage() {
        let ledger = LedgerEntry {
            erased_at: 5,
            generation: 1,
            reason: crate::ledger::ErasureReason::Operator,
            keys_destroyed: 2,
            epoch: 3,
        }
        .encode();
        let decoded = decode_any(RecordKind::LedgerEntry, &ledger).expect("ledger decodes");
        assert!(decoded.round_trips && decoded.canonical, "{decoded:?}");
        let hold = holds::encode(9, "case 1");
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
