//! The erasure ledger: which scopes were erased, when and why (guarantee G6).
//!
//! ```text
//! key:   subject tag (16) ‖ class u16 (0xFFFF: the whole subject)
//! value: v1 ‖ erased at i64 ‖ generation u32 ‖ reason u8 ‖ keys destroyed u32
//!        ‖ epoch current at erasure u32 ‖ CRC32
//!        v2 ‖ the v1 fields ‖ re-opened at i64 ‖ CRC32
//! ```
//!
//! Version 2 is written only for a class scope registered again on its own
//! ([`crate::Db::re_register_class`]): the erasure stands (its keys stay
//! destroyed, certificates still show it), and new keys of the class are
//! allowed from the re-opening on. Every other entry is written as v1.
//!
//! The ledger is consulted before a scope's first key is loaded, and it is
//! replayed onto a restored backup before the restored store serves reads.

use shredkv_crypto::{FormatError, SubjectTag};

use crate::codec::{Reader, Writer};

const VERSION: u8 = 1;
/// An entry whose class scope was registered again after the erasure.
const VERSION_REOPENED: u8 = 2;
const WHAT: &str = "erasure ledger entry";
/// The class number standing for "every class of the subject".
pub(crate) const ALL_CLASSES: u16 = u16::MAX;

/// Why a scope was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErasureReason {
    /// The subject (or its account) asked for deletion.
    DeletionRequest,
    /// An operator erased it directly.
    Operator,
    /// Its retention deadline passed.
    RetentionExpired,
    /// The account belongs to a minor: everything not under a hold is erased.
    Underage,
    /// The class was removed from the retention policy (and not renamed):
    /// its scopes were erased when the change was applied.
    ClassRemoved,
}

impl ErasureReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            ErasureReason::DeletionRequest => 1,
            ErasureReason::Operator => 2,
            ErasureReason::RetentionExpired => 3,
            ErasureReason::Underage => 4,
            ErasureReason::ClassRemoved => 5,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => ErasureReason::DeletionRequest,
            2 => ErasureReason::Operator,
            3 => ErasureReason::RetentionExpired,
            4 => ErasureReason::Underage,
            5 => ErasureReason::ClassRemoved,
            _ => return None,
        })
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ErasureReason::DeletionRequest => "deletion request",
            ErasureReason::Operator => "operator",
            ErasureReason::RetentionExpired => "retention expired",
            ErasureReason::Underage => "underage account",
            ErasureReason::ClassRemoved => "class removed from the policy",
        }
    }
}

/// A reason serializes as its [`ErasureReason::name`] (`"deletion request"`),
/// the name receipts print.
#[cfg(feature = "serde")]
impl serde::Serialize for ErasureReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ErasureReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(deserializer)?;
        // Every reason has a code: searching the codes finds every reason.
        (0..=u8::MAX)
            .filter_map(ErasureReason::from_code)
            .find(|reason| reason.name() == name)
            .ok_or_else(|| {
                serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(&name),
                    &"an erasure reason, such as `deletion request`",
                )
            })
    }
}

/// One ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LedgerEntry {
    pub(crate) erased_at: i64,
    pub(crate) generation: u32,
    pub(crate) reason: ErasureReason,
    pub(crate) keys_destroyed: u32,
    /// The epoch new keys were wrapped under when the erasure was made: once
    /// it and every older epoch are destroyed, the purge is complete.
    pub(crate) epoch: u32,
    /// When the class scope was registered again in the same generation
    /// (`None`: the scope is still erased). Only class scopes are re-opened;
    /// a whole subject comes back with a new generation instead.
    pub(crate) reopened_at: Option<i64>,
}

pub(crate) fn key(tag: &SubjectTag, class: u16) -> [u8; 18] {
    let mut key = [0u8; 18];
    key[..16].copy_from_slice(&tag.0);
    key[16..].copy_from_slice(&class.to_be_bytes());
    key
}

pub(crate) fn split_key(key: &[u8]) -> Option<(SubjectTag, u16)> {
    let tag: [u8; 16] = key.get(..16)?.try_into().ok()?;
    let class: [u8; 2] = key.get(16..18)?.try_into().ok()?;
    Some((SubjectTag(tag), u16::from_be_bytes(class)))
}

impl LedgerEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let version = if self.reopened_at.is_some() {
            VERSION_REOPENED
        } else {
            VERSION
        };
        let mut w = Writer::new(version, 28);
        w.i64(self.erased_at)
            .u32(self.generation)
            .u8(self.reason.code())
            .u32(self.keys_destroyed)
            .u32(self.epoch);
        if let Some(at) = self.reopened_at {
            w.i64(at);
        }
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let version = if bytes.first() == Some(&VERSION_REOPENED) {
            VERSION_REOPENED
        } else {
            VERSION
        };
        let mut r = Reader::checked(WHAT, bytes, version)?;
        let erased_at = r.i64()?;
        let generation = r.u32()?;
        let reason =
            ErasureReason::from_code(r.u8()?).ok_or_else(|| r.invalid("unknown erasure reason"))?;
        let keys_destroyed = r.u32()?;
        let epoch = r.u32()?;
        let reopened_at = if version == VERSION_REOPENED {
            Some(r.i64()?)
        } else {
            None
        };
        r.end()?;
        Ok(Self {
            erased_at,
            generation,
            reason,
            keys_destroyed,
            epoch,
            reopened_at,
        })
    }

    /// Whether the entry still erases its scope in `generation`: written in
    /// that generation and not re-opened since.
    pub(crate) fn erases(&self, generation: u32) -> bool {
        self.generation == generation && self.reopened_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let entry = LedgerEntry {
            erased_at: 5,
            generation: 2,
            reason: ErasureReason::Underage,
            keys_destroyed: 9,
            epoch: 4,
            reopened_at: None,
        };
        assert_eq!(entry.encode()[0], 1, "an entry never re-opened stays v1");
        assert_eq!(LedgerEntry::decode(&entry.encode()).expect("decode"), entry);
        assert!(entry.erases(2) && !entry.erases(3));
        let reopened = LedgerEntry {
            reopened_at: Some(7),
            ..entry
        };
        assert_eq!(reopened.encode()[0], 2);
        assert_eq!(
            LedgerEntry::decode(&reopened.encode()).expect("decode v2"),
            reopened
        );
        assert!(!reopened.erases(2), "a re-opened scope is not erased");
        // A v2 entry relabelled v1 (CRC recomputed) does not pass as v1.
        let mut relabelled = reopened.encode();
        relabelled[0] = 1;
        let body = relabelled.len() - 4;
        let crc = crc32fast::hash(&relabelled[..body]).to_be_bytes();
        relabelled[body..].copy_from_slice(&crc);
        assert!(LedgerEntry::decode(&relabelled).is_err());
        let k = key(&SubjectTag([4; 16]), 7);
        assert_eq!(split_key(&k), Some((SubjectTag([4; 16]), 7)));
    }
}
