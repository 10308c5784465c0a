//! Key wrapping: a 32-byte secret sealed under an epoch key with AES-256-GCM.
//!
//! ```text
//! offset  size  field
//!      0     1  format version (1)
//!      1     4  epoch id            u32 big-endian
//!      5    12  nonce (random)
//!     17    32  wrapped key bytes
//!     49    16  GCM tag
//!     65     4  CRC32 (IEEE) of bytes 0..65, u32 big-endian
//! ```
//!
//! The associated data is `"shredkv/v1/wrap" ‖ epoch id (u32 BE) ‖ kind ‖ id`
//! (46 bytes), where the kind byte and the 26-byte id name what is wrapped
//! (the [`WrapContext`]), so a wrapped key copied to another vault entry, or
//! presented to another epoch, does not unwrap:
//!
//! | kind | wrapped                                       | id (26 bytes)                         |
//! |------|-----------------------------------------------|---------------------------------------|
//! | 1    | a data key                                    | its [`KeyId`]                         |
//! | 2    | the store secret                              | zero                                  |
//! | 3    | a key tree root node key at a generation      | generation u32 BE, forest u32 BE, then 18 zero bytes |
//!
//! Node keys below the root, and the data keys under them, are wrapped by
//! their parent node key instead ([`crate::NodeCipher`]).

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroize;

use crate::error::{AuthError, FormatError};
use crate::keys::{DataKey, EpochId, EpochKey, KEY_LEN, KeyId};

/// Version byte of the wrapped-key format.
pub const WRAPPED_KEY_VERSION: u8 = 1;
const WHAT: &str = "wrapped key";
const AAD_PREFIX: &[u8] = b"shredkv/v1/wrap";

/// What a wrapped key is, bound into the wrap's associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapContext {
    /// A data key, named by its id.
    DataKey(KeyId),
    /// The store secret (there is one per store).
    StoreSecret,
    /// The root node key of key tree forest `forest` at `generation`,
    /// wrapped by the provider under an epoch (every other node key is
    /// wrapped by its parent).
    TreeRoot {
        /// The forest whose root this is.
        forest: u32,
        /// The root's generation: a new root key gets the next one.
        generation: u32,
    },
}

impl WrapContext {
    /// Length of [`WrapContext::associated_data`].
    pub const AAD_LEN: usize = AAD_PREFIX.len() + 4 + 1 + KeyId::LEN;

    /// The associated data a key wrapped under `epoch` for this context is
    /// sealed with (see the module docs), for a provider whose AES-GCM runs
    /// elsewhere (in an HSM) and must produce the same [`WrappedKey`].
    pub fn associated_data(&self, epoch: EpochId) -> [u8; Self::AAD_LEN] {
        self.aad(epoch)
    }

    fn aad(&self, epoch: EpochId) -> [u8; Self::AAD_LEN] {
        let mut out = [0u8; Self::AAD_LEN];
        let (prefix, rest) = out.split_at_mut(AAD_PREFIX.len());
        prefix.copy_from_slice(AAD_PREFIX);
        let (epoch_bytes, rest) = rest.split_at_mut(4);
        epoch_bytes.copy_from_slice(&epoch.0.to_be_bytes());
        let (kind, id) = rest.split_at_mut(1);
        match self {
            Self::DataKey(key_id) => {
                kind.copy_from_slice(&[1]);
                id.copy_from_slice(&key_id.to_bytes());
            }
            Self::StoreSecret => kind.copy_from_slice(&[2]),
            Self::TreeRoot { forest, generation } => {
                kind.copy_from_slice(&[3]);
                let (first, rest) = id.split_at_mut(4);
                first.copy_from_slice(&generation.to_be_bytes());
                if let Some(second) = rest.first_chunk_mut::<4>() {
                    *second = forest.to_be_bytes();
                }
            }
        }
        out
    }
}

/// A key wrapped under an epoch key: safe to store anywhere. Useless once the
/// epoch key is destroyed.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey([u8; WrappedKey::LEN]);

impl WrappedKey {
    /// Encoded length in bytes.
    pub const LEN: usize = 1 + 4 + 12 + KEY_LEN + 16 + 4;

    /// The epoch whose key wrapped this key.
    pub fn epoch(&self) -> EpochId {
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(self.0.get(1..5).unwrap_or(&[0; 4]));
        EpochId(u32::from_be_bytes(epoch))
    }

    /// The encoded bytes (see the module docs).
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Assembles a wrapped key from the parts of an AES-256-GCM seal made
    /// elsewhere (an HSM): `sealed_key` and `tag` are the ciphertext and
    /// tag of the 32-byte key under `nonce`, with
    /// [`WrapContext::associated_data`] for `epoch` as associated data.
    /// Adds the version byte and the CRC.
    pub fn from_parts(
        epoch: EpochId,
        nonce: [u8; 12],
        sealed_key: [u8; KEY_LEN],
        tag: [u8; 16],
    ) -> Self {
        let mut out = [0u8; Self::LEN];
        out[0] = WRAPPED_KEY_VERSION;
        out[1..5].copy_from_slice(&epoch.0.to_be_bytes());
        out[5..17].copy_from_slice(&nonce);
        out[17..49].copy_from_slice(&sealed_key);
        out[49..65].copy_from_slice(&tag);
        let crc = crc32fast::hash(&out[..65]);
        out[65..69].copy_from_slice(&crc.to_be_bytes());
        Self(out)
    }

    /// The GCM nonce.
    pub fn nonce(&self) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&self.0[5..17]);
        nonce
    }

    /// The sealed key bytes followed by the GCM tag: the ciphertext as
    /// PKCS#11's `CKM_AES_GCM` decryption takes it.
    pub fn sealed_key_and_tag(&self) -> [u8; KEY_LEN + 16] {
        let mut out = [0u8; KEY_LEN + 16];
        out.copy_from_slice(&self.0[17..65]);
        out
    }

    /// Decodes and checks length, version and CRC. Never panics.
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
                    detail: "longer than a wrapped key",
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
        if array[0] != WRAPPED_KEY_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                found: array[0],
            });
        }
        Ok(Self(array))
    }
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

/// An epoch key made ready to wrap and unwrap. Zeroized on drop.
pub struct EpochCipher {
    epoch: EpochId,
    aead: Aes256Gcm,
}

impl EpochCipher {
    /// Expands an epoch key.
    pub fn new(epoch: EpochId, key: &EpochKey) -> Self {
        Self {
            epoch,
            aead: Aes256Gcm::new(key.expose_secret().into()),
        }
    }

    /// The epoch this cipher belongs to.
    pub fn epoch(&self) -> EpochId {
        self.epoch
    }

    /// Wraps `key` for `context`.
    pub fn wrap(&self, context: &WrapContext, key: &DataKey) -> WrappedKey {
        let mut out = [0u8; WrappedKey::LEN];
        let mut nonce = [0u8; 12];
        crate::random::fill(&mut nonce);
        out[0] = WRAPPED_KEY_VERSION;
        out[1..5].copy_from_slice(&self.epoch.0.to_be_bytes());
        out[5..17].copy_from_slice(&nonce);
        out[17..49].copy_from_slice(key.expose_secret());
        let aad = context.aad(self.epoch);
        let tag = match self.aead.encrypt_inout_detached(
            &Nonce::from(nonce),
            &aad,
            (&mut out[17..49]).into(),
        ) {
            Ok(tag) => tag,
            // 32 bytes of plaintext and ~50 of AAD are far inside GCM's limits.
            Err(_) => unreachable_wrap(),
        };
        out[49..65].copy_from_slice(&tag);
        let crc = crc32fast::hash(&out[..65]);
        out[65..69].copy_from_slice(&crc.to_be_bytes());
        WrappedKey(out)
    }

    /// Unwraps a key wrapped by this epoch for `context`.
    ///
    /// # Errors
    /// [`AuthError`] if the wrapped key was altered, belongs to another
    /// context, or was wrapped by another epoch.
    pub fn unwrap(
        &self,
        context: &WrapContext,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, AuthError> {
        if wrapped.epoch() != self.epoch {
            return Err(AuthError);
        }
        let bytes = &wrapped.0;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[5..17]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&bytes[49..65]);
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&bytes[17..49]);
        let aad = context.aad(self.epoch);
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
        let unwrapped = DataKey::from_bytes(key);
        key.zeroize();
        Ok(unwrapped)
    }
}

impl std::fmt::Debug for EpochCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochCipher")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

#[cold]
pub(crate) fn unreachable_wrap() -> ! {
    panic!("AES-GCM refused to seal a 32-byte key; its limits are gigabytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SubjectTag;

    fn id(version: u32) -> KeyId {
        KeyId {
            subject: SubjectTag([3; 16]),
            class: 1,
            bucket: 0,
            version,
        }
    }

    #[test]
    fn wrap_round_trips_and_binds_context_and_epoch() {
        let epoch = EpochCipher::new(EpochId(4), &EpochKey::from_bytes([8; 32]));
        let other_epoch = EpochCipher::new(EpochId(5), &EpochKey::from_bytes([8; 32]));
        let key = DataKey::from_bytes([0x5a; 32]);
        let ctx = WrapContext::DataKey(id(1));
        let wrapped = epoch.wrap(&ctx, &key);
        assert_eq!(wrapped.epoch(), EpochId(4));
        let back = epoch.unwrap(&ctx, &wrapped).expect("unwrap");
        assert_eq!(back.expose_secret(), key.expose_secret());
        assert!(
            epoch
                .unwrap(&WrapContext::DataKey(id(2)), &wrapped)
                .is_err()
        );
        assert!(epoch.unwrap(&WrapContext::StoreSecret, &wrapped).is_err());
        assert!(other_epoch.unwrap(&ctx, &wrapped).is_err());
        // The key bytes never appear in the wrapped form.
        assert!(!wrapped.as_bytes().windows(8).any(|w| w == [0x5a; 8]));
    }

    /// A key sealed by plain AES-256-GCM with the published associated
    /// data and assembled from its parts is the format `EpochCipher` writes
    /// (what an HSM provider relies on).
    #[test]
    fn parts_sealed_elsewhere_make_the_same_wrapped_key() {
        let epoch_key = [9u8; 32];
        let epoch = EpochCipher::new(EpochId(7), &EpochKey::from_bytes(epoch_key));
        let ctx = WrapContext::DataKey(id(3));
        let key = DataKey::from_bytes([0x42; 32]);
        let nonce = [5u8; 12];
        let mut sealed = *key.expose_secret();
        let aead = Aes256Gcm::new((&epoch_key).into());
        let tag = aead
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &ctx.associated_data(EpochId(7)),
                (&mut sealed[..]).into(),
            )
            .expect("seal");
        let wrapped = WrappedKey::from_parts(EpochId(7), nonce, sealed, tag.into());
        assert_eq!(wrapped.epoch(), EpochId(7));
        assert_eq!(wrapped.nonce(), nonce);
        assert_eq!(&wrapped.sealed_key_and_tag()[..32], &sealed);
        assert_eq!(&wrapped.sealed_key_and_tag()[32..], tag.as_slice());
        let parsed = WrappedKey::from_bytes(wrapped.as_bytes()).expect("valid format");
        let back = epoch.unwrap(&ctx, &parsed).expect("EpochCipher unwraps it");
        assert_eq!(back.expose_secret(), key.expose_secret());
        // And the other way: EpochCipher's output splits into the same parts.
        let native = epoch.wrap(&ctx, &key);
        let mut body = native.sealed_key_and_tag();
        let (sealed, tag) = body.split_at_mut(32);
        let reassembled = WrappedKey::from_parts(
            native.epoch(),
            native.nonce(),
            sealed.try_into().expect("32"),
            (&*tag).try_into().expect("16"),
        );
        assert_eq!(reassembled, native);
        assert!(
            epoch.unwrap(&WrapContext::StoreSecret, &parsed).is_err(),
            "the context is bound"
        );
    }

    #[test]
    fn tree_root_binds_its_generation() {
        let epoch = EpochCipher::new(EpochId(3), &EpochKey::from_bytes([6; 32]));
        let root = DataKey::from_bytes([0x71; 32]);
        let first = WrapContext::TreeRoot {
            forest: 0,
            generation: 1,
        };
        let wrapped = epoch.wrap(&first, &root);
        let back = epoch.unwrap(&first, &wrapped).expect("unwrap");
        assert_eq!(back.expose_secret(), root.expose_secret());
        assert!(
            epoch
                .unwrap(
                    &WrapContext::TreeRoot {
                        forest: 0,
                        generation: 2
                    },
                    &wrapped
                )
                .is_err()
        );
        assert!(
            epoch
                .unwrap(
                    &WrapContext::TreeRoot {
                        forest: 1,
                        generation: 1
                    },
                    &wrapped
                )
                .is_err(),
            "the forest is bound"
        );
        assert!(epoch.unwrap(&WrapContext::StoreSecret, &wrapped).is_err());
    }

    #[test]
    fn tree_root_associated_data_layout() {
        let aad = WrapContext::TreeRoot {
            forest: 0x0A0B_0C0D,
            generation: 0x0102_0304,
        }
        .associated_data(EpochId(9));
        let mut expected = Vec::from(&b"shredkv/v1/wrap"[..]);
        expected.extend_from_slice(&[0, 0, 0, 9, 3, 1, 2, 3, 4, 0xA, 0xB, 0xC, 0xD]);
        expected.extend_from_slice(&[0; 18]);
        assert_eq!(aad.as_slice(), expected.as_slice());
    }

    #[test]
    fn every_byte_flip_is_rejected() {
        let epoch = EpochCipher::new(EpochId(1), &EpochKey::from_bytes([1; 32]));
        let ctx = WrapContext::StoreSecret;
        let wrapped = epoch.wrap(&ctx, &DataKey::from_bytes([2; 32]));
        for i in 0..WrappedKey::LEN {
            let mut bytes = *wrapped.as_bytes();
            bytes[i] ^= 0x10;
            assert!(matches!(
                WrappedKey::from_bytes(&bytes),
                Err(FormatError::ChecksumMismatch { .. })
            ));
            // With the CRC fixed up, authentication must still fail.
            let crc = crc32fast::hash(&bytes[..65]);
            bytes[65..].copy_from_slice(&crc.to_be_bytes());
            if i < 65
                && let Ok(tampered) = WrappedKey::from_bytes(&bytes)
            {
                assert!(
                    epoch.unwrap(&ctx, &tampered).is_err(),
                    "flip at {i} unwrapped"
                );
            }
        }
        assert!(WrappedKey::from_bytes(&wrapped.as_bytes()[..10]).is_err());
    }
}
