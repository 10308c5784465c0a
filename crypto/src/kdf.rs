//! HKDF-SHA256 sub-keys under fixed, versioned labels, and HMAC-SHA256 keyed tags.
//!
//! Every derived key names its purpose in the HKDF `info` string. The labels
//! are part of the on-disk format: changing one changes every tag and blinded
//! record key, so a new label gets a new version suffix instead.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};
// Compile-time proof that the keyed HMAC state wipes itself: `Hmac<Sha256>`
// is two SHA-256 cores (inner and outer state) and a block buffer; without
// the `zeroize` features of sha2 and digest these bounds fail to build.
const _: fn() = || {
    fn wiped_on_drop<T: ZeroizeOnDrop>() {}
    wiped_on_drop::<<Sha256 as sha2::digest::block_api::CoreProxy>::Core>();
    wiped_on_drop::<sha2::digest::block_api::Buffer<hmac::block_api::HmacCore<Sha256>>>();
};

use crate::error::FormatError;
use crate::keys::{KEY_LEN, SUBJECT_TAG_LEN, SubjectTag};

/// The purposes a sub-key is derived for. Each has a fixed `info` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Label {
    /// Keyed tags standing in for subject ids (from the store secret).
    SubjectTag,
    /// Blinding of record keys within one scope (from the scope key).
    RecordKeyBlinding,
    /// The audit log's chain of MACs (from the store secret): whoever can
    /// write the store's files but lacks the secret cannot re-link an
    /// edited chain.
    AuditChain,
    /// MACs over the control-plane values (subjects, deadlines, holds,
    /// ledger, seals, debts, ...; from the store secret): whoever can write
    /// the store's files but lacks the secret cannot add, edit or move one.
    ControlPlane,
    /// The AES-256-GCM key that seals legal holds' free-text reasons at
    /// rest (from the store secret).
    HoldReason,
}

impl Label {
    /// The HKDF `info` bytes for this purpose.
    pub const fn info(self) -> &'static [u8] {
        match self {
            Self::SubjectTag => b"shredkv/v1/subject-tag",
            Self::RecordKeyBlinding => b"shredkv/v1/record-key-blinding",
            Self::AuditChain => b"shredkv/v1/audit-chain",
            Self::ControlPlane => b"shredkv/v1/control-plane",
            Self::HoldReason => b"shredkv/v1/hold-reason",
        }
    }
}

/// Length in bytes of a blinded record key.
pub const BLINDED_KEY_LEN: usize = 16;

/// A derived HMAC-SHA256 key that computes keyed tags.
///
/// Holds HMAC's keyed state (the hash states after the inner and outer key
/// blocks) rather than the key, so a tag costs the message's blocks and the
/// final outer block, not two more key blocks per call: tags sit on every
/// read and write. The state is as secret as the key; the `zeroize` features
/// of `hmac` and `sha2` wipe it, and every per-call copy, on drop.
pub struct TagKey(Hmac<Sha256>);

impl TagKey {
    /// Derives the sub-key for `label` from `ikm` with HKDF-SHA256 (no salt:
    /// the input is already a uniformly random key).
    pub fn derive(ikm: &[u8; KEY_LEN], label: Label) -> Self {
        let mut out = [0u8; KEY_LEN];
        // 32 bytes is far below HKDF-SHA256's limit, so this cannot fail.
        let _ = hkdf_sha256(None, ikm, label.info(), &mut out);
        let keyed = keyed_hmac(&out);
        out.zeroize();
        Self(keyed)
    }

    /// HMAC-SHA256 of `data`, truncated to 16 bytes (RFC 2104 allows
    /// truncation to at least half the hash length).
    pub fn tag16(&self, data: &[u8]) -> [u8; 16] {
        let mut mac = self.0.clone();
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(full.get(..16).unwrap_or(&[0u8; 16]));
        out
    }

    /// The full HMAC-SHA256 of the concatenation of `parts` (for MACs that
    /// must resist forgery at full strength, such as the audit chain's).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The subject tag for a subject id.
    pub fn subject_tag(&self, subject_id: &[u8]) -> SubjectTag {
        const _: () = assert!(SUBJECT_TAG_LEN == 16);
        SubjectTag(self.tag16(subject_id))
    }

    /// The blinded form of a record key.
    pub fn blind(&self, record_key: &[u8]) -> [u8; BLINDED_KEY_LEN] {
        self.tag16(record_key)
    }
}

impl std::fmt::Debug for TagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagKey").finish_non_exhaustive()
    }
}

/// Most bytes HKDF-SHA256 can expand to (255 × 32, RFC 5869 §2.3).
pub const HKDF_SHA256_MAX_OUTPUT: usize = 255 * 32;

/// HKDF-SHA256 (RFC 5869) extract-and-expand into `okm`.
///
/// # Errors
/// [`FormatError::TooLarge`] if `okm` is longer than
/// [`HKDF_SHA256_MAX_OUTPUT`]; then `okm` is left untouched, never filled
/// in part.
pub fn hkdf_sha256(
    salt: Option<&[u8]>,
    ikm: &[u8],
    info: &[u8],
    okm: &mut [u8],
) -> Result<(), FormatError> {
    let too_large = FormatError::TooLarge {
        what: "HKDF-SHA256 output",
        len: okm.len(),
        max: HKDF_SHA256_MAX_OUTPUT,
    };
    if okm.len() > HKDF_SHA256_MAX_OUTPUT {
        return Err(too_large);
    }
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, okm)
        .map_err(|_| too_large)
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = keyed_hmac(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn keyed_hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC is defined for every key length (RFC 2104), so the crate never
    // rejects one; reaching this means the hmac crate changed its contract.
    panic!("HMAC-SHA256 rejected a key; HMAC accepts any key length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    /// RFC 5869 appendix A, test cases 1–3 (SHA-256).
    #[test]
    fn rfc5869_vectors() {
        let cases = [
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                Some("000102030405060708090a0b0c"),
                "f0f1f2f3f4f5f6f7f8f9",
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
            ),
            (
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
                Some(
                    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
                ),
                "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
            ),
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                None,
                "",
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
            ),
        ];
        for (ikm, salt, info, okm) in cases {
            let expected = h(okm);
            let mut out = vec![0u8; expected.len()];
            let salt = salt.map(h);
            hkdf_sha256(salt.as_deref(), &h(ikm), &h(info), &mut out).expect("within the limit");
            assert_eq!(hex::encode(&out), hex::encode(&expected));
        }
    }

    /// RFC 4231 test case 2 (HMAC-SHA256, key "Jefe").
    #[test]
    fn rfc4231_hmac_vector() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn output_beyond_the_limit_is_an_error_not_a_short_key() {
        let mut ok = vec![0u8; HKDF_SHA256_MAX_OUTPUT];
        hkdf_sha256(None, b"ikm", b"info", &mut ok).expect("at the limit");
        assert!(ok.iter().any(|b| *b != 0));
        let mut too_long = vec![0u8; HKDF_SHA256_MAX_OUTPUT + 1];
        assert!(matches!(
            hkdf_sha256(None, b"ikm", b"info", &mut too_long),
            Err(FormatError::TooLarge { .. })
        ));
        assert!(too_long.iter().all(|b| *b == 0), "nothing written on error");
    }

    #[test]
    fn keyed_state_tags_match_hmac_from_the_key() {
        let ikm = [9u8; 32];
        let mut sub_key = [0u8; KEY_LEN];
        hkdf_sha256(None, &ikm, Label::RecordKeyBlinding.info(), &mut sub_key)
            .expect("32 bytes is within HKDF's limit");
        let key = TagKey::derive(&ikm, Label::RecordKeyBlinding);
        // The same state serves many calls: each starts from the keyed state.
        for data in [&b""[..], b"a", &[7u8; 64], &[8u8; 200], b"a"] {
            let full = hmac_sha256(&sub_key, &[data]);
            assert_eq!(key.tag16(data)[..], full[..16]);
        }
    }

    #[test]
    fn labels_separate_purposes() {
        let ikm = [5u8; 32];
        let a = TagKey::derive(&ikm, Label::SubjectTag);
        let b = TagKey::derive(&ikm, Label::RecordKeyBlinding);
        assert_ne!(a.tag16(b"x"), b.tag16(b"x"));
        assert_eq!(
            a.tag16(b"x"),
            TagKey::derive(&ikm, Label::SubjectTag).tag16(b"x")
        );
        assert_ne!(a.tag16(b"x"), a.tag16(b"y"));
        assert_eq!(format!("{a:?}"), "TagKey { .. }");
        let c = TagKey::derive(&ikm, Label::AuditChain);
        assert_ne!(c.tag16(b"x"), a.tag16(b"x"));
        assert_ne!(c.tag16(b"x"), b.tag16(b"x"));
        let d = TagKey::derive(&ikm, Label::ControlPlane);
        for other in [&a, &b, &c] {
            assert_ne!(d.tag16(b"x"), other.tag16(b"x"));
        }
    }

    #[test]
    fn mac_is_the_full_hmac_of_the_parts_joined() {
        let ikm = [3u8; 32];
        let mut sub_key = [0u8; KEY_LEN];
        hkdf_sha256(None, &ikm, Label::AuditChain.info(), &mut sub_key)
            .expect("32 bytes is within HKDF's limit");
        let key = TagKey::derive(&ikm, Label::AuditChain);
        let whole = hmac_sha256(&sub_key, &[b"abcdef"]);
        assert_eq!(key.mac(&[b"abc", b"def"]), whole);
        assert_eq!(key.mac(&[b"abcdef"]), whole);
        assert_eq!(key.mac(&[b"abcdef"])[..16], key.tag16(b"abcdef"));
        assert_ne!(key.mac(&[b"abcdeg"]), whole);
    }
}
