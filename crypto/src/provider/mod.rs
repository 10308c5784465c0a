//! Key providers: where epoch keys live and how they are destroyed.
//!
//! The engine never sees an epoch key. It asks its provider to wrap and unwrap
//! data keys under an epoch, to start a new epoch, and to destroy an old one.
//! The [`FileKeyProvider`] keeps epoch keys in a small file of fixed slots; an
//! HSM or cloud KMS provider implements the same trait where destruction is
//! enforced by hardware.

pub mod conformance;
pub(crate) mod file;
pub(crate) use file::check_key_file_bytes;

use std::fmt;
use std::path::PathBuf;

use crate::error::FormatError;
use crate::keys::{DataKey, EpochId};
use crate::wrap::{WrapContext, WrappedKey};

pub use file::FileKeyProvider;

/// Holds epoch keys and wraps data keys under them.
///
/// Implementations must make [`KeyProvider::destroy_epoch`] durable before it
/// returns, and must report a destroyed epoch as [`ProviderError::EpochDestroyed`],
/// never as unavailable: "the key is gone" and "the key cannot be reached now"
/// lead to opposite decisions.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Creates a new epoch key, durably, and returns its id (greater than every
    /// earlier epoch's).
    ///
    /// # Errors
    /// Storage failures, or no room for another live epoch.
    fn create_epoch(&self) -> Result<EpochId, ProviderError>;

    /// The epochs whose keys exist, ascending.
    ///
    /// # Errors
    /// Storage failures.
    fn live_epochs(&self) -> Result<Vec<EpochId>, ProviderError>;

    /// Wraps `key` under `epoch` for `context`.
    ///
    /// # Errors
    /// The epoch is destroyed or unknown, or the provider is unavailable.
    fn wrap(
        &self,
        epoch: EpochId,
        context: &WrapContext,
        key: &DataKey,
    ) -> Result<WrappedKey, ProviderError>;

    /// Unwraps a key wrapped under the epoch named in `wrapped`.
    ///
    /// # Errors
    /// [`ProviderError::EpochDestroyed`] if that epoch is gone (the key is
    /// unrecoverable by design), [`ProviderError::Authentication`] if the
    /// wrapped key was altered or belongs to another context.
    fn unwrap(&self, context: &WrapContext, wrapped: &WrappedKey)
    -> Result<DataKey, ProviderError>;

    /// Destroys an epoch key durably. Destroying an already destroyed epoch
    /// succeeds.
    ///
    /// # Errors
    /// Unknown epoch, or storage failures (then nothing is assumed destroyed).
    fn destroy_epoch(&self, epoch: EpochId) -> Result<(), ProviderError>;

    /// A short description for reports and certificates (kind and location),
    /// free of secrets.
    fn describe(&self) -> String;

    /// Whether this provider keeps an [`Anchor`]. One that does not (the
    /// default) gives the store no protection against being rolled back.
    fn keeps_anchor(&self) -> bool {
        false
    }

    /// The store's anchor as last advanced, or `None` if it never was (or
    /// the provider keeps none).
    ///
    /// # Errors
    /// The provider failing.
    fn anchor(&self) -> Result<Option<Anchor>, ProviderError> {
        Ok(None)
    }

    /// Moves the anchor forward to `anchor`, durably; the same position
    /// again changes nothing. A provider without an anchor ignores it.
    ///
    /// # Errors
    /// [`ProviderError::AnchorRegression`] if `anchor` is behind the one
    /// kept (another store took over the key file: a restore); the
    /// provider failing.
    fn advance_anchor(&self, anchor: &Anchor) -> Result<(), ProviderError> {
        let _ = anchor;
        Ok(())
    }
}

/// What went wrong in a key provider.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProviderError {
    /// The epoch key was destroyed: everything it wrapped is unrecoverable.
    EpochDestroyed {
        /// The destroyed epoch.
        epoch: EpochId,
    },
    /// The provider has never had this epoch.
    UnknownEpoch {
        /// The epoch asked for.
        epoch: EpochId,
    },
    /// The provider could not be reached or its storage failed; nothing was
    /// changed and the operation may be retried.
    Unavailable {
        /// What the provider was doing.
        action: &'static str,
        /// Where (a path or endpoint).
        location: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// The key file is damaged or is not a key file. Nothing was destroyed.
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The key file can be read by users other than its owner.
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Every slot of the key file holds a live epoch.
    NoFreeSlot {
        /// The key file.
        path: PathBuf,
        /// Its number of slots.
        slots: u16,
    },
    /// A wrapped key failed authentication: altered, moved, or not wrapped for
    /// this context.
    Authentication,
    /// A wrapped key's bytes are malformed.
    WrappedKeyFormat(FormatError),
    /// An anchor behind the one the provider keeps: the key file has moved
    /// on with another store (a restore took over), or this store is an
    /// older copy.
    AnchorRegression {
        /// The position kept.
        kept: Anchor,
        /// The position refused.
        offered: Anchor,
    },
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EpochDestroyed { epoch } => write!(
                f,
                "{epoch} has been destroyed: keys wrapped under it are unrecoverable by design"
            ),
            Self::UnknownEpoch { epoch } => write!(
                f,
                "{epoch} is unknown to the key provider: the vault and the key file do not belong together"
            ),
            Self::Unavailable { action, location, source } => write!(
                f,
                "key provider unavailable while trying to {action} at {}: {source}; nothing was changed, retry once it is reachable",
                location.display()
            ),
            Self::Corrupt { path, detail } => write!(
                f,
                "key file {} is corrupt: {detail}; nothing was destroyed, restore the file from its owner's secure copy",
                path.display()
            ),
            Self::InsecurePermissions { path, mode } => write!(
                f,
                "key file {} is readable by others (mode {mode:o}); run `chmod 600 {}` and retry",
                path.display(),
                path.display()
            ),
            Self::NoFreeSlot { path, slots } => write!(
                f,
                "key file {} has no free slot: all {slots} hold live epochs; run compaction to destroy expired epochs",
                path.display()
            ),
            Self::Authentication => f.write_str(
                "a wrapped key failed authentication: it was altered or does not belong to this entry",
            ),
            Self::WrappedKeyFormat(err) => write!(f, "{err}"),
            Self::AnchorRegression { kept, offered } => write!(
                f,
                "the key provider's anchor is at {kept}, ahead of this store's {offered}: another \
                 store (a restore) has taken over this key file, or this store is an older copy; \
                 serve the store that took over"
            ),
        }
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable { source, .. } => Some(source),
            Self::WrappedKeyFormat(err) => Some(err),
            _ => None,
        }
    }
}

/// The latest state of a store the key provider vouches for: the position
/// of the last durable entry of the store's audit chain. A store found
/// behind it (rolled back, or an older copy) is refused; one ahead of it
/// (a crash between the store's commit and the anchor's) is brought level.
///
/// Positions order by `generation` (raised by every restore, which starts
/// a store over from a backup), then `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Restores since the store was created.
    pub generation: u64,
    /// The sequence number of the last anchored audit entry.
    pub seq: u64,
    /// That entry's hash.
    pub head: [u8; 32],
}

impl Anchor {
    /// The position, for ordering: (generation, seq).
    pub fn position(&self) -> (u64, u64) {
        (self.generation, self.seq)
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "generation {} audit entry {} ({})",
            self.generation,
            self.seq,
            crate::hex::encode(&self.head[..6])
        )
    }
}
