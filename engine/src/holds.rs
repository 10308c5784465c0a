//! Legal holds: a hold over a subject (all classes, or one) blocks key
//! destruction and expiry until it is released (guarantee G3).
//!
//! ```text
//! key:   subject tag (16) ‖ class u16 (0xFFFF: every class)
//! value: v2 ‖ placed at i64 ‖ sealed reason (u32 length ‖ envelope) ‖ CRC32
//!        v1 ‖ placed at i64 ‖ reason (u32 length ‖ UTF-8)           ‖ CRC32  (read only)
//! sealed reason = envelope (docs/design.md) under
//!        HKDF-SHA256(store secret, "shredkv/v1/hold-reason"), bucket 0, version 0,
//!        AAD "shredkv/v1/hold" ‖ hold key
//! ```
//!
//! The reason is free text (a case number, a regulator's letter): it never
//! enters the audit log or an error, and at rest it is sealed, so the store's
//! files without its keys do not tell why a subject is held.

use jiff::Timestamp;
use shredkv_crypto::{
    DataKey, Envelope, FormatError, KeyRef, Label, SubjectTag, ValueCipher, hkdf_sha256,
};

use crate::codec::{Reader, Writer};

const VERSION: u8 = 2;
/// Holds written before reasons were sealed.
const VERSION_PLAIN: u8 = 1;
const WHAT: &str = "legal hold";
const AAD_PREFIX: &[u8] = b"shredkv/v1/hold";

/// A legal hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Hold {
    /// The held subject.
    pub subject: SubjectTag,
    /// The held class, or `None` for every class.
    pub class: Option<String>,
    /// When it was placed.
    pub placed_at: Timestamp,
    /// Why (a case number, a regulator's request; no personal data).
    pub reason: String,
}

/// A hold's reason as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredReason {
    /// Format 1: the text itself.
    Plain(String),
    /// Format 2: an envelope under the hold-reason key.
    Sealed(Vec<u8>),
}

pub(crate) fn encode(placed_at: i64, reason: &StoredReason) -> Vec<u8> {
    let (version, bytes) = match reason {
        StoredReason::Plain(text) => (VERSION_PLAIN, text.as_bytes()),
        StoredReason::Sealed(envelope) => (VERSION, envelope.as_slice()),
    };
    let mut w = Writer::new(version, 16 + bytes.len());
    w.i64(placed_at).var_bytes(bytes);
    w.finish()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<(i64, StoredReason), FormatError> {
    let version = if bytes.first() == Some(&VERSION_PLAIN) {
        VERSION_PLAIN
    } else {
        VERSION
    };
    let mut r = Reader::checked(WHAT, bytes, version)?;
    let placed_at = r.i64()?;
    let reason = r.var_bytes()?.to_vec();
    let reason = if version == VERSION_PLAIN {
        StoredReason::Plain(
            String::from_utf8(reason).map_err(|_| r.invalid("reason is not UTF-8"))?,
        )
    } else {
        StoredReason::Sealed(reason)
    };
    r.end()?;
    Ok((placed_at, reason))
}

/// Seals and opens hold reasons.
pub(crate) struct ReasonCipher(ValueCipher);

impl std::fmt::Debug for ReasonCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReasonCipher").finish_non_exhaustive()
    }
}

/// Why a stored reason cannot be read.
#[derive(Debug)]
pub(crate) enum ReasonError {
    Format(FormatError),
    /// The envelope fails authentication (altered, or moved to another hold).
    Tampered,
}

impl ReasonCipher {
    pub(crate) fn new(store_secret: &[u8; 32]) -> Self {
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit, so this cannot fail.
        let _ = hkdf_sha256(None, store_secret, Label::HoldReason.info(), &mut key);
        let data_key = DataKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Self(ValueCipher::new(&data_key))
    }

    fn aad(hold_key: &[u8]) -> Vec<u8> {
        [AAD_PREFIX, hold_key].concat()
    }

    /// The stored form of `reason` for the hold under `hold_key`.
    pub(crate) fn seal(&self, hold_key: &[u8], reason: &str) -> Result<StoredReason, FormatError> {
        let key_ref = KeyRef {
            bucket: 0,
            version: 0,
        };
        let envelope = shredkv_crypto::seal(
            &self.0,
            key_ref,
            None,
            &Self::aad(hold_key),
            reason.as_bytes(),
        )?;
        Ok(StoredReason::Sealed(envelope))
    }

    /// The text of a stored reason.
    pub(crate) fn open(
        &self,
        hold_key: &[u8],
        reason: StoredReason,
    ) -> Result<String, ReasonError> {
        match reason {
            StoredReason::Plain(text) => Ok(text),
            StoredReason::Sealed(bytes) => {
                let envelope = Envelope::parse(&bytes).map_err(ReasonError::Format)?;
                let plain = envelope
                    .open(&self.0, &Self::aad(hold_key))
                    .map_err(|_| ReasonError::Tampered)?;
                String::from_utf8(plain).map_err(|_| {
                    ReasonError::Format(FormatError::InvalidField {
                        what: WHAT,
                        detail: "reason is not UTF-8",
                    })
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_sealed_and_plain() {
        let cipher = ReasonCipher::new(&[7; 32]);
        let sealed = cipher.seal(b"hold-a", "case 17").expect("seal");
        let bytes = encode(42, &sealed);
        assert!(
            !bytes.windows(7).any(|w| w == b"case 17"),
            "the reason is not stored in clear"
        );
        let (at, stored) = decode(&bytes).expect("decode");
        assert_eq!(at, 42);
        assert_eq!(
            cipher.open(b"hold-a", stored.clone()).expect("open"),
            "case 17"
        );
        // Moved to another hold, or read under another store's secret.
        assert!(matches!(
            cipher.open(b"hold-b", stored.clone()),
            Err(ReasonError::Tampered)
        ));
        assert!(matches!(
            ReasonCipher::new(&[8; 32]).open(b"hold-a", stored),
            Err(ReasonError::Tampered)
        ));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        // A format-1 hold still reads.
        let plain = encode(9, &StoredReason::Plain("case 1".into()));
        assert_eq!(plain[0], VERSION_PLAIN);
        let (at, stored) = decode(&plain).expect("decode v1");
        assert_eq!(
            (at, cipher.open(b"any", stored).expect("plain")),
            (9, "case 1".to_string())
        );
    }
}
