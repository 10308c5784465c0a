//! Secret key types and the public identifiers that name them.
//!
//! Secret types own 32 key bytes, zeroize them on drop, and have no `Clone`,
//! `PartialEq` or derived `Debug`: a copy of a key is a key that cannot be
//! destroyed, and a printed key is a leaked key.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length in bytes of every symmetric key in shredkv (AES-256, HMAC-SHA256).
pub const KEY_LEN: usize = 32;

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// A fresh key from the operating system's generator.
            pub fn generate() -> Self {
                let mut bytes = [0u8; KEY_LEN];
                crate::random::fill(&mut bytes);
                Self(bytes)
            }

            /// Takes ownership of key bytes read from storage or a provider.
            /// The caller should zeroize its own copy.
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// The key bytes, for handing to a cipher. Never log or persist them
            /// unwrapped.
            pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

secret_key!(
    /// A data key (DEK): encrypts the values of one scope-bucket at one version.
    /// Random, never derived, so destroying every wrapped copy destroys it.
    DataKey
);
secret_key!(
    /// An epoch key (KEK): wraps data keys. Held by a [`KeyProvider`](crate::KeyProvider),
    /// destroyed once no purge window depends on it.
    EpochKey
);
secret_key!(
    /// The store secret: the root of the keyed tags that stand in for subject ids.
    /// Random, wrapped like a data key.
    StoreSecret
);
secret_key!(
    /// A node key of the key tree: wraps data keys or child node keys.
    /// Random, never derived.
    NodeKey
);

impl StoreSecret {
    /// The store secret a key provider unwrapped (as a [`DataKey`]), moved
    /// over without a copy of its bytes outside the two zeroizing owners
    /// (`StoreSecret::from_bytes(*key.expose_secret())` leaves one on the
    /// stack).
    pub fn from_unwrapped(key: DataKey) -> Self {
        let mut secret = Self([0; KEY_LEN]);
        secret.0.copy_from_slice(key.expose_secret());
        secret
    }
}

impl NodeKey {
    /// The root node key a key provider unwrapped (as a [`DataKey`]: the
    /// provider's API speaks data keys), moved over like
    /// [`StoreSecret::from_unwrapped`] without a copy of its bytes outside the
    /// two zeroizing owners.
    pub fn from_unwrapped(key: DataKey) -> Self {
        let mut node = Self([0; KEY_LEN]);
        node.0.copy_from_slice(key.expose_secret());
        node
    }

    /// A zeroizing copy of the key as a [`DataKey`], for handing the root's
    /// key to a key provider to wrap. Drop it as soon as it is wrapped.
    pub fn to_wrappable(&self) -> DataKey {
        let mut key = DataKey([0; KEY_LEN]);
        key.0.copy_from_slice(&self.0);
        key
    }
}

/// Names an epoch of a key provider. Epoch ids increase and are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochId(pub u32);

impl fmt::Display for EpochId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// Length in bytes of a [`SubjectTag`].
pub const SUBJECT_TAG_LEN: usize = 16;

/// The keyed tag (truncated HMAC-SHA256) that stands in for a subject id on disk.
///
/// Public: it reveals nothing about the id without the store secret, and it is
/// what logs, errors and audit entries print.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubjectTag(pub [u8; SUBJECT_TAG_LEN]);

impl SubjectTag {
    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

impl fmt::Display for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectTag({})", self.to_hex())
    }
}

/// A tag serializes as its lower-case hex (what messages and reports print),
/// in every format, so a tag reads the same in JSON as in a log line.
#[cfg(feature = "serde")]
impl serde::Serialize for SubjectTag {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

/// Reads the hex [`SubjectTag::to_hex`] writes (either case); anything else
/// is refused naming what was expected.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for SubjectTag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexTag;

        impl serde::de::Visitor<'_> for HexTag {
            type Value = SubjectTag;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a subject tag: {} hex digits", SUBJECT_TAG_LEN * 2)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SubjectTag, E> {
                crate::hex::decode(text)
                    .and_then(|bytes| <[u8; SUBJECT_TAG_LEN]>::try_from(bytes).ok())
                    .map(SubjectTag)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }

        deserializer.deserialize_str(HexTag)
    }
}

/// Names one data key version: the scope (subject tag and class number), the
/// bucket within the scope, and the key version within the bucket.
///
/// ```text
/// byte  0..16  subject tag
///      16..18  class number      u16 big-endian
///      18..22  bucket            u32 big-endian
///      22..26  version           u32 big-endian
/// ```
///
/// The encoding sorts by scope, then bucket, then version, so one prefix scan
/// finds every key of a subject or of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId {
    /// The subject the key belongs to.
    pub subject: SubjectTag,
    /// The retention class number within the store.
    pub class: u16,
    /// The bucket within the scope (records whose retention ends together).
    pub bucket: u32,
    /// The key version within the bucket; a re-key creates the next version.
    pub version: u32,
}

impl KeyId {
    /// Encoded length in bytes.
    pub const LEN: usize = SUBJECT_TAG_LEN + 2 + 4 + 4;

    /// The big-endian encoding described on the type.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.subject.0);
        out[16..18].copy_from_slice(&self.class.to_be_bytes());
        out[18..22].copy_from_slice(&self.bucket.to_be_bytes());
        out[22..26].copy_from_slice(&self.version.to_be_bytes());
        out
    }

    /// Decodes [`KeyId::to_bytes`]; `None` unless `bytes` is exactly
    /// [`KeyId::LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let (subject, rest) = bytes.split_first_chunk::<16>()?;
        let (class, rest) = rest.split_first_chunk::<2>()?;
        let (bucket, version) = rest.split_first_chunk::<4>()?;
        let version: &[u8; 4] = version.try_into().ok()?;
        Some(Self {
            subject: SubjectTag(*subject),
            class: u16::from_be_bytes(*class),
            bucket: u32::from_be_bytes(*bucket),
            version: u32::from_be_bytes(*version),
        })
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {}/{}/{}/v{}",
            self.subject, self.class, self.bucket, self.version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = DataKey::from_bytes([0xAB; KEY_LEN]);
        let epoch = EpochKey::from_bytes([0xAB; KEY_LEN]);
        let secret = StoreSecret::from_bytes([0xAB; KEY_LEN]);
        let node = NodeKey::from_bytes([0xAB; KEY_LEN]);
        for printed in [
            format!("{key:?}"),
            format!("{epoch:?}"),
            format!("{secret:?}"),
            format!("{node:?}"),
            format!("{key:#?}"),
        ] {
            assert!(!printed.to_lowercase().contains("ab"), "{printed}");
            assert!(!printed.contains("171"), "{printed}");
        }
        assert_eq!(format!("{key:?}"), "DataKey { .. }");
    }

    #[test]
    fn node_key_moves_to_and_from_a_wrappable_data_key() {
        let node = NodeKey::from_unwrapped(DataKey::from_bytes([0x3c; KEY_LEN]));
        assert_eq!(node.expose_secret(), &[0x3c; KEY_LEN]);
        let wrappable = node.to_wrappable();
        assert_eq!(wrappable.expose_secret(), node.expose_secret());
        let back = NodeKey::from_unwrapped(wrappable);
        assert_eq!(back.expose_secret(), &[0x3c; KEY_LEN]);
    }

    #[test]
    fn generated_keys_differ() {
        let a = DataKey::generate();
        let b = DataKey::generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn key_id_round_trips_and_sorts_like_its_fields() {
        let a = KeyId {
            subject: SubjectTag([1; 16]),
            class: 2,
            bucket: 3,
            version: 4,
        };
        let b = KeyId {
            subject: SubjectTag([1; 16]),
            class: 2,
            bucket: 3,
            version: 256,
        };
        assert_eq!(KeyId::from_bytes(&a.to_bytes()), Some(a));
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(a < b, a.to_bytes() < b.to_bytes());
        assert_eq!(KeyId::from_bytes(&a.to_bytes()[1..]), None);
    }
}
