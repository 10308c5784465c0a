//! Cryptography for shredkv: the value envelope, key types, key wrapping
//! (under an epoch key, or under a node key of the key tree), derived
//! sub-keys and keyed tags, seal counting, and key providers.
//!
//! This crate knows nothing of storage backends, subjects or policy. It turns
//! keys and bytes into sealed bytes and back, and reports damaged bytes
//! ([`FormatError`]) apart from failed authentication ([`AuthError`]).
//!
//! ```
//! use shredkv_crypto::{DataKey, Envelope, KeyRef, ValueCipher, seal};
//!
//! let cipher = ValueCipher::new(&DataKey::generate());
//! let key_ref = KeyRef { bucket: 0, version: 1 };
//! let sealed = seal(&cipher, key_ref, None, b"where it is stored", b"hello")?;
//! let envelope = Envelope::parse(&sealed)?;
//! assert_eq!(envelope.open(&cipher, b"where it is stored")?, b"hello");
//! assert!(envelope.open(&cipher, b"somewhere else").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod envelope;
mod error;
pub mod hex;
mod kdf;
mod keys;
mod limits;
mod node;
mod provider;
mod random;
mod wrap;

pub use envelope::{
    ENVELOPE_VERSION, Envelope, KeyRef, MAX_PLAINTEXT_LEN, NONCE_LEN, TAG_LEN, ValueCipher, seal,
    seal_into,
};
pub use error::{AuthError, FormatError};
pub use kdf::{BLINDED_KEY_LEN, HKDF_SHA256_MAX_OUTPUT, Label, TagKey, hkdf_sha256, hmac_sha256};
pub use keys::{
    DataKey, EpochId, EpochKey, KEY_LEN, KeyId, NodeKey, SUBJECT_TAG_LEN, StoreSecret, SubjectTag,
};
pub use limits::{RETIRE_AFTER_SEALS, SEAL_LIMIT, SealBudget, SealCounter};
pub use node::{NODE_WRAPPED_VERSION, NodeChild, NodeCipher, NodeId, NodeWrapped};
pub use provider::{Anchor, FileKeyProvider, KeyProvider, ProviderError};
pub use wrap::{EpochCipher, WRAPPED_KEY_VERSION, WrapContext, WrappedKey};

/// Entry points for fuzz targets and tools. Not a stable API.
#[doc(hidden)]
pub mod internal {
    /// Checks a key file's bytes the way [`crate::FileKeyProvider::open`]
    /// does, returning the number of live epochs.
    ///
    /// # Errors
    /// A sentence saying what is wrong with the bytes.
    pub fn check_key_file_bytes(bytes: &[u8]) -> Result<usize, String> {
        crate::provider::check_key_file_bytes(bytes)
    }

    pub use crate::provider::conformance;
}
