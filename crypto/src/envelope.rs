//! The value envelope: one encrypted, checksummed record value.
//!
//! ```text
//! offset  size  field
//!      0     1  format version (1)
//!      1     1  flags: bit 0 = an expiry follows; other bits must be 0
//!      2     4  bucket              u32 big-endian  ┐ key reference
//!      6     4  key version         u32 big-endian  ┘
//!     10     8  expiry, unix secs   i64 big-endian  (only if flag bit 0)
//!      h    12  nonce (random)
//!   h+12     n  ciphertext (AES-256-GCM, same length as the plaintext)
//! h+12+n    16  GCM tag
//! h+28+n     4  CRC32 (IEEE) of every byte before it, u32 big-endian
//! ```
//!
//! `h` is 10 without an expiry and 18 with one. The AEAD associated data is
//! the header (bytes `0..h`) followed by the caller's associated data, so the
//! key reference and expiry cannot be altered, and the caller binds the value
//! to where it is stored (store, subject, class, record key).
//!
//! The CRC tells media corruption (checksum mismatch) apart from tampering
//! (a consistent checksum but a failed tag): an attacker can recompute a CRC,
//! so the CRC is never a security check; the tag is.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::error::{AuthError, FormatError};
use crate::keys::DataKey;

/// Version byte of the current envelope format.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes of AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of AES-GCM tag.
pub const TAG_LEN: usize = 16;
const CRC_LEN: usize = 4;
const FLAG_EXPIRY: u8 = 0b0000_0001;
const HEADER_LEN_NO_EXPIRY: usize = 10;
const HEADER_LEN_MAX: usize = 18;
/// Largest plaintext one envelope holds (64 MiB): values are records, not files.
pub const MAX_PLAINTEXT_LEN: usize = 64 << 20;
/// Associated data up to this length is assembled on the stack.
const STACK_AAD_LEN: usize = 512;

const WHAT: &str = "value envelope";

/// Which data key version sealed an envelope, within the scope the envelope is
/// stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRef {
    /// The bucket of the scope.
    pub bucket: u32,
    /// The key version within the bucket.
    pub version: u32,
}

/// A data key made ready to seal and open envelopes. The expanded AES key
/// schedule is zeroized on drop.
pub struct ValueCipher {
    aead: Aes256Gcm,
}

impl ValueCipher {
    /// Expands a data key into a cipher.
    pub fn new(key: &DataKey) -> Self {
        Self {
            aead: Aes256Gcm::new(key.expose_secret().into()),
        }
    }
}

impl std::fmt::Debug for ValueCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueCipher").finish_non_exhaustive()
    }
}

/// Seals `plaintext` into a new envelope appended to `out` (which is cleared
/// first, so a caller can reuse one buffer). One pass, in place: the plaintext
/// is copied into `out` once and encrypted there.
///
/// # Errors
/// [`FormatError::TooLarge`] if the plaintext exceeds [`MAX_PLAINTEXT_LEN`].
pub fn seal_into(
    cipher: &ValueCipher,
    key_ref: KeyRef,
    expiry: Option<i64>,
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(FormatError::TooLarge {
            what: WHAT,
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    out.clear();
    out.reserve(HEADER_LEN_MAX + NONCE_LEN + plaintext.len() + TAG_LEN + CRC_LEN);
    out.push(ENVELOPE_VERSION);
    out.push(if expiry.is_some() { FLAG_EXPIRY } else { 0 });
    out.extend_from_slice(&key_ref.bucket.to_be_bytes());
    out.extend_from_slice(&key_ref.version.to_be_bytes());
    if let Some(expiry) = expiry {
        out.extend_from_slice(&expiry.to_be_bytes());
    }
    let header_len = out.len();
    let mut nonce = [0u8; NONCE_LEN];
    crate::random::fill(&mut nonce);
    out.extend_from_slice(&nonce);
    let body_start = out.len();
    out.extend_from_slice(plaintext);

    let (head, body) = out.split_at_mut(body_start);
    let header = head.get(..header_len).unwrap_or_default();
    let tag = with_aad(header, aad, |full_aad| {
        cipher
            .aead
            .encrypt_inout_detached(&Nonce::from(nonce), full_aad, body.into())
    })
    .map_err(|_| FormatError::TooLarge {
        what: WHAT,
        len: plaintext.len(),
        max: MAX_PLAINTEXT_LEN,
    })?;
    out.extend_from_slice(&tag);
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Seals `plaintext` into a fresh envelope. See [`seal_into`].
///
/// # Errors
/// [`FormatError::TooLarge`] if the plaintext exceeds [`MAX_PLAINTEXT_LEN`].
pub fn seal(
    cipher: &ValueCipher,
    key_ref: KeyRef,
    expiry: Option<i64>,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    seal_into(cipher, key_ref, expiry, aad, plaintext, &mut out)?;
    Ok(out)
}

/// A parsed envelope: checksum verified, fields located, nothing decrypted.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    header: &'a [u8],
    key_ref: KeyRef,
    expiry: Option<i64>,
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
    tag: [u8; TAG_LEN],
}

impl<'a> Envelope<'a> {
    /// Checks the CRC, the version and the flags, and locates the fields.
    /// Never panics, whatever the input.
    ///
    /// # Errors
    /// [`FormatError`] naming what is wrong with the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let min = HEADER_LEN_NO_EXPIRY + NONCE_LEN + TAG_LEN + CRC_LEN;
        if bytes.len() < min {
            return Err(FormatError::Truncated {
                what: WHAT,
                needed: min,
                got: bytes.len(),
            });
        }
        let (body, crc) = bytes
            .split_last_chunk::<CRC_LEN>()
            .ok_or(FormatError::Truncated {
                what: WHAT,
                needed: min,
                got: bytes.len(),
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
        let [version, flags, rest @ ..] = body else {
            return Err(FormatError::Truncated {
                what: WHAT,
                needed: min,
                got: bytes.len(),
            });
        };
        if *version != ENVELOPE_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                found: *version,
            });
        }
        if flags & !FLAG_EXPIRY != 0 {
            return Err(FormatError::InvalidField {
                what: WHAT,
                detail: "unknown flag bits set",
            });
        }
        let truncated = FormatError::Truncated {
            what: WHAT,
            needed: min + if flags & FLAG_EXPIRY != 0 { 8 } else { 0 },
            got: bytes.len(),
        };
        let (bucket, rest) = rest.split_first_chunk::<4>().ok_or(truncated.clone())?;
        let (version_bytes, rest) = rest.split_first_chunk::<4>().ok_or(truncated.clone())?;
        let (expiry, rest) = if flags & FLAG_EXPIRY != 0 {
            let (expiry, rest) = rest.split_first_chunk::<8>().ok_or(truncated.clone())?;
            (Some(i64::from_be_bytes(*expiry)), rest)
        } else {
            (None, rest)
        };
        let header_len = body.len() - rest.len();
        let (nonce, rest) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(truncated.clone())?;
        let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(truncated)?;
        Ok(Self {
            header: body.get(..header_len).unwrap_or_default(),
            key_ref: KeyRef {
                bucket: u32::from_be_bytes(*bucket),
                version: u32::from_be_bytes(*version_bytes),
            },
            expiry,
            nonce: *nonce,
            ciphertext,
            tag: *tag,
        })
    }

    /// The data key version that sealed this envelope.
    pub fn key_ref(&self) -> KeyRef {
        self.key_ref
    }

    /// The expiry sealed with the value, in unix seconds, if any.
    pub fn expiry(&self) -> Option<i64> {
        self.expiry
    }

    /// Length of the plaintext inside.
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len()
    }

    /// Decrypts into `out` (cleared first). On failure `out` is left empty:
    /// unauthenticated plaintext is never handed out.
    ///
    /// # Errors
    /// [`AuthError`] if the tag does not verify (altered bytes, wrong key, or
    /// associated data naming another record).
    pub fn open_into(
        &self,
        cipher: &ValueCipher,
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthError> {
        out.clear();
        out.extend_from_slice(self.ciphertext);
        let result = with_aad(self.header, aad, |full_aad| {
            cipher.aead.decrypt_inout_detached(
                &Nonce::from(self.nonce),
                full_aad,
                out.as_mut_slice().into(),
                &self.tag.into(),
            )
        });
        if result.is_err() {
            out.clear();
            return Err(AuthError);
        }
        Ok(())
    }

    /// Decrypts into a new buffer. See [`Envelope::open_into`].
    ///
    /// # Errors
    /// [`AuthError`] if the tag does not verify.
    pub fn open(&self, cipher: &ValueCipher, aad: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut out = Vec::with_capacity(self.ciphertext.len());
        self.open_into(cipher, aad, &mut out)?;
        Ok(out)
    }
}

/// Runs `f` with `header ‖ aad` as one slice, assembled on the stack when short.
fn with_aad<T>(header: &[u8], aad: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    let len = header.len() + aad.len();
    if len <= STACK_AAD_LEN {
        let mut buf = [0u8; STACK_AAD_LEN];
        let (head, tail) = buf.split_at_mut(header.len());
        head.copy_from_slice(header);
        if let Some(tail) = tail.get_mut(..aad.len()) {
            tail.copy_from_slice(aad);
        }
        f(buf.get(..len).unwrap_or_default())
    } else {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(header);
        buf.extend_from_slice(aad);
        f(&buf)
    }
}

const _: () = assert!(NONCE_LEN == 12 && TAG_LEN == 16);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cipher(byte: u8) -> ValueCipher {
        ValueCipher::new(&DataKey::from_bytes([byte; 32]))
    }

    const REF: KeyRef = KeyRef {
        bucket: 7,
        version: 2,
    };

    #[test]
    fn round_trip_with_and_without_expiry() {
        let c = cipher(1);
        for expiry in [None, Some(1_700_000_000), Some(-1)] {
            let sealed = seal(&c, REF, expiry, b"aad", b"hello").expect("seal");
            let env = Envelope::parse(&sealed).expect("parse");
            assert_eq!(env.key_ref(), REF);
            assert_eq!(env.expiry(), expiry);
            assert_eq!(env.open(&c, b"aad").expect("open"), b"hello");
        }
    }

    #[test]
    fn layout_matches_the_documented_diagram() {
        let c = cipher(1);
        let sealed = seal(&c, REF, Some(0x0102_0304_0506_0708), b"", b"abc").expect("seal");
        assert_eq!(sealed.len(), 18 + 12 + 3 + 16 + 4);
        assert_eq!(sealed[0], 1);
        assert_eq!(sealed[1], 1);
        assert_eq!(&sealed[2..6], &7u32.to_be_bytes());
        assert_eq!(&sealed[6..10], &2u32.to_be_bytes());
        assert_eq!(&sealed[10..18], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let crc = crc32fast::hash(&sealed[..sealed.len() - 4]);
        assert_eq!(&sealed[sealed.len() - 4..], &crc.to_be_bytes());
    }

    #[test]
    fn wrong_key_or_aad_fails_authentication() {
        let sealed = seal(&cipher(1), REF, None, b"record-a", b"secret").expect("seal");
        let env = Envelope::parse(&sealed).expect("parse");
        assert_eq!(env.open(&cipher(2), b"record-a"), Err(AuthError));
        assert_eq!(env.open(&cipher(1), b"record-b"), Err(AuthError));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let c = cipher(3);
        let sealed = seal(&c, REF, Some(42), b"aad", b"a value of some length").expect("seal");
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = sealed.clone();
                damaged[i] ^= bit;
                // A flip without a fixed-up CRC is corruption.
                assert!(
                    matches!(
                        Envelope::parse(&damaged),
                        Err(FormatError::ChecksumMismatch { .. })
                    ),
                    "flip at {i} not reported as corruption"
                );
                // A flip with a recomputed CRC (a tamperer) must fail later, never open.
                let body = damaged.len() - 4;
                let crc = crc32fast::hash(&damaged[..body]);
                damaged[body..].copy_from_slice(&crc.to_be_bytes());
                if i >= body {
                    continue;
                }
                match Envelope::parse(&damaged) {
                    Err(_) => {}
                    Ok(env) => {
                        assert_eq!(env.open(&c, b"aad"), Err(AuthError), "flip at {i} opened")
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_is_reported_not_panicked() {
        let sealed = seal(&cipher(1), REF, Some(1), b"", b"xyz").expect("seal");
        for len in 0..sealed.len() {
            assert!(Envelope::parse(&sealed[..len]).is_err());
        }
        assert!(matches!(
            Envelope::parse(&[]),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_version_and_flags_are_format_errors() {
        let mut sealed = seal(&cipher(1), REF, None, b"", b"xyz").expect("seal");
        sealed[0] = 9;
        let body = sealed.len() - 4;
        let crc = crc32fast::hash(&sealed[..body]);
        sealed[body..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            Envelope::parse(&sealed).err(),
            Some(FormatError::UnsupportedVersion {
                what: WHAT,
                found: 9
            })
        );
        sealed[0] = 1;
        sealed[1] = 0x80;
        let crc = crc32fast::hash(&sealed[..body]);
        sealed[body..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            Envelope::parse(&sealed),
            Err(FormatError::InvalidField { .. })
        ));
    }

    #[test]
    fn long_associated_data_uses_the_heap_path() {
        let c = cipher(1);
        let aad = vec![7u8; STACK_AAD_LEN * 2];
        let sealed = seal(&c, REF, None, &aad, b"v").expect("seal");
        let env = Envelope::parse(&sealed).expect("parse");
        assert_eq!(env.open(&c, &aad).expect("open"), b"v");
        assert!(env.open(&c, &aad[1..]).is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let c = cipher(1);
        let a = seal(&c, REF, None, b"", b"same").expect("seal");
        let b = seal(&c, REF, None, b"", b"same").expect("seal");
        assert_ne!(a[10..22], b[10..22]);
    }

    proptest! {
        #[test]
        fn any_value_round_trips(
            value in proptest::collection::vec(any::<u8>(), 0..2048),
            aad in proptest::collection::vec(any::<u8>(), 0..700),
            expiry in proptest::option::of(any::<i64>()),
            bucket in any::<u32>(),
            version in any::<u32>(),
        ) {
            let c = cipher(9);
            let key_ref = KeyRef { bucket, version };
            let sealed = seal(&c, key_ref, expiry, &aad, &value).expect("seal");
            let env = Envelope::parse(&sealed).expect("parse");
            prop_assert_eq!(env.key_ref(), key_ref);
            prop_assert_eq!(env.expiry(), expiry);
            prop_assert_eq!(env.open(&c, &aad).expect("open"), value);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::parse(&bytes).map(|env| env.open(&cipher(1), b""));
        }
    }
}
